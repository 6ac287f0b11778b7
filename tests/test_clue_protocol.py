"""The CLUE protocol: grid search selection, size-aware defaults, several models in one table,
the recorded protocol and the warning when two results were not made alike.

Every expectation is recomputed here from the per-seed result files (or hashlib/statistics),
not read back from the summary the code under test wrote.
"""

import hashlib
import json
import shutil
import statistics

import pytest
from test_clue import FIX, _tiny_model

from zhbert.clue.protocol import differences, grid_points, size_class, size_overrides
from zhbert.clue.tasks import parse_tasks
from zhbert.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny models of the same shape and vocab (different random init)."""
    import torch

    from zhbert.model.modeling import BertConfig, BertForPreTraining

    root = tmp_path_factory.mktemp("models")
    a = _tiny_model(root / "a")
    b = root / "b"
    shutil.copytree(a, b)
    torch.manual_seed(7)
    BertForPreTraining(BertConfig.from_pretrained(a)).save_pretrained(b)
    return a, b


def test_size_classes_and_grid_points(tmp_path):
    assert size_class({"hidden_size": 256, "num_hidden_layers": 4}) == "tiny"
    assert size_class({"hidden_size": 512}) == "small"
    assert size_class({"hidden_size": 768}) == "base" and size_class({"hidden_size": 1024}) == "base"
    assert grid_points({"lr": [1e-4, 3e-4], "batch_size": [16, 32]}) == [
        {"lr": 1e-4, "batch_size": 16}, {"lr": 1e-4, "batch_size": 32},
        {"lr": 3e-4, "batch_size": 16}, {"lr": 3e-4, "batch_size": 32}]
    assert grid_points({}) == [{}]
    (tmp_path / "sizes.yaml").write_text("tiny:\n  all: {lr: 5.0e-4, epochs: 4}\n  tnews: {epochs: 2}\nbase: {}\n")
    assert size_overrides("tiny", "tnews", tmp_path) == ({"lr": 5e-4, "epochs": 2}, "sizes.yaml[tiny]")
    assert size_overrides("tiny", "ocnli", tmp_path) == ({"lr": 5e-4, "epochs": 4}, "sizes.yaml[tiny]")
    assert size_overrides("base", "tnews", tmp_path) == ({}, "")


def test_size_class_settings_sit_between_the_task_yaml_and_the_flags(tmp_path):
    from zhbert.clue.run import task_config
    from zhbert.clue.tasks import TASKS

    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "tnews.yaml").write_text("lr: 2.0e-5\nepochs: 3\nbatch_size: 16\n")
    (cfg_dir / "sizes.yaml").write_text("tiny:\n  all: {lr: 5.0e-4, batch_size: 32}\n")
    cfg, defaults, sizes = task_config(TASKS["tnews"], [], cfg_dir, "tiny")
    assert (cfg.lr, cfg.batch_size, cfg.epochs) == (5e-4, 32, 3)
    assert defaults == ["configs/clue/tnews.yaml", "sizes.yaml[tiny]"] and sizes == {"lr": 5e-4, "batch_size": 32}
    cfg, _, _ = task_config(TASKS["tnews"], ["lr=1e-3"], cfg_dir, "tiny")
    assert (cfg.lr, cfg.batch_size) == (1e-3, 32)
    cfg, defaults, _ = task_config(TASKS["tnews"], [], cfg_dir, "base")
    assert (cfg.lr, cfg.batch_size) == (2e-5, 16) and defaults == ["configs/clue/tnews.yaml"]


def test_shipped_size_table_is_valid():
    """configs/clue/sizes.yaml: every entry is a valid override of every task it applies to."""
    from zhbert.clue.run import task_config
    from zhbert.clue.tasks import TASKS

    for size in ("tiny", "small", "base"):
        for spec in TASKS.values():
            task_config(spec, [], None, size)  # raises ConfigError on a bad key or value


def _seed_scores(out, task, metric="accuracy"):
    """{point: {seed: score}} read from the per-seed result files."""
    res = {}
    for f in sorted((out / task).glob("*/seed*/result.json")):
        r = json.loads(f.read_text())
        res.setdefault(f.parent.parent.name, {})[f.parent.name[4:]] = r["dev"][metric]
    return res


def test_grid_selects_the_best_mean_and_keeps_the_whole_grid(models, tmp_path):
    from zhbert.clue.run import run_clue

    out = tmp_path / "out"
    res = run_clue(str(models[0]), parse_tasks("wsc"), FIX, out, seeds=[1, 2], grid={"lr": [1e-4, 3e-3]},
                   overrides=["epochs=2", "batch_size=2", "eval_every=1"], wandb_mode="disabled")
    t = res["tasks"]["wsc"]
    scores = _seed_scores(out, "wsc")
    assert set(scores) == {"lr1e-04_bs2_ep2", "lr3e-03_bs2_ep2"} == set(t["grid"])
    means = {p: sum(v.values()) / len(v) for p, v in scores.items()}
    best = max(["lr1e-04_bs2_ep2", "lr3e-03_bs2_ep2"], key=lambda p: means[p])  # first listed wins ties
    assert t["selected"] == best and t["hyperparameters"]["lr"] == (1e-4 if best.startswith("lr1e-04") else 3e-3)
    vals = list(scores[best].values())
    assert t["mean"] == pytest.approx(statistics.mean(vals)) and t["max"] == pytest.approx(max(vals))
    assert t["std"] == pytest.approx(statistics.stdev(vals))
    for p, v in scores.items():
        assert t["grid"][p]["scores"]["accuracy"]["mean"] == pytest.approx(means[p])
    prot = t["protocol"]
    assert prot["grid"] == {"lr": [1e-4, 3e-3]} and prot["seeds"] == [1, 2]
    assert prot["selected"]["point"] == best and prot["max_seq_length"] == 128
    dev = FIX / "cluewsc2020_public" / "dev.json"
    assert prot["data_files"]["dev"] == [{"name": "dev.json", "sha256": hashlib.sha256(dev.read_bytes()).hexdigest()}]
    assert prot["train_rows"] == t["train_size"] and prot["dev_rows"] == t["dev_size"]
    run = res["protocol"]
    weights = (models[0] / "model.safetensors").read_bytes()
    assert run["weights_sha256"] == hashlib.sha256(weights).hexdigest() and run["size_class"] == "tiny"
    assert run["model_config"]["hidden_size"] == 32 and run["zhbert_version"]
    md = (out / "results.md").read_text()
    assert "lr 0.0001,0.003" in md and "Protocol: zhbert" in md
    # resuming with other settings never reuses finished results made under them
    with pytest.raises(ConfigError, match=r"result\.json: made with other settings or data than this run \(warmup_ratio"):
        run_clue(str(models[0]), parse_tasks("wsc"), FIX, out, seeds=[1], grid={"lr": [1e-4]},
                 overrides=["epochs=2", "batch_size=2", "eval_every=1", "warmup_ratio=0.2"], wandb_mode="disabled")


def test_several_models_one_table_and_compare_warns_on_other_protocols(models, tmp_path, capsys):
    from zhbert.cli import main

    out = tmp_path / "cmp"
    argv = ["eval", "clue", "--model", str(models[0]), "--model", str(models[1]), "--tasks", "wsc,tnews",
            "--data-dir", str(FIX), "--output", str(out), "--seeds", "1,2", "--epochs", "1", "--batch-size", "4",
            "--lr", "1e-3", "--wandb-mode", "disabled"]
    assert main(argv) == 0
    for label in ("a", "b"):
        assert (out / label / "results.json").is_file() and (out / label / "wsc").is_dir()
    md = (out / "results.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert [r.split("|")[1].strip() for r in rows] == ["`a`", "`b`"]
    res_a = json.loads((out / "a" / "results.json").read_text())
    wsc = res_a["tasks"]["wsc"]
    assert f"{100 * wsc['max']:.2f} ({100 * wsc['mean']:.2f}" in rows[0]
    gold = [json.loads(x)["label"] for x in (FIX / "cluewsc2020_public" / "dev.json").read_text().splitlines() if x]
    maj = max(gold.count(x) for x in set(gold)) / len(gold)
    majority_row = next(line for line in md.splitlines() if line.startswith("| majority class |"))
    assert majority_row.split("|")[2:4] == [f" {100 * res_a['tasks']['tnews']['floor']['value']:.2f} ",
                                           f" {100 * maj:.2f} "]  # columns in CLUE order: TNEWS, WSC
    assert json.loads((out / "comparison.json").read_text())["warnings"] == []
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"

    # another protocol (fewer dev rows): compare says the scores are not comparable
    other = tmp_path / "other"
    assert main(["eval", "clue", "--model", str(models[1]), "--tasks", "wsc", "--data-dir", str(FIX), "--output",
                 str(other), "--seeds", "1", "--epochs", "1", "--batch-size", "4", "--lr", "1e-3",
                 "--max-eval-samples", "2", "--wandb-mode", "disabled"]) == 0
    capsys.readouterr()
    assert main(["eval", "compare", str(out / "a"), str(other), "--output", str(tmp_path / "both")]) == 0
    printed = capsys.readouterr().out
    assert "warning: wsc: b vs a used different protocols (dev_rows: 3 vs 2; seeds: [1, 2] vs [1]" in printed
    assert "not comparable" in (tmp_path / "both" / "results.md").read_text()
    # a dir that holds no results: one line naming the file
    with pytest.raises(DataError, match=r"nothing/results\.json: not found"):
        from zhbert.clue.run import load_results

        load_results([tmp_path / "nothing"])


def test_protocol_differences_name_the_keys():
    a = {"train_rows": 100, "dev_rows": 50, "seeds": [1, 2], "grid": {}, "max_seq_length": 128, "epochs": 3,
         "data_files": {"dev": [{"name": "dev.json", "sha256": "x"}]}, "notes": []}
    assert differences(a, dict(a)) == []
    b = {**a, "max_seq_length": 64, "data_files": {"dev": [{"name": "dev.json", "sha256": "y"}]}}
    assert differences(a, b) == ["data files differ (sha256)", "max_seq_length: 128 vs 64"]


def test_list_flags_are_checked(tmp_path):
    from zhbert.cli import main

    rc = main(["eval", "clue", "--model", str(tmp_path), "--tasks", "wsc", "--data-dir", str(FIX), "--output",
               str(tmp_path / "o"), "--lr", "1e-4,fast"])
    assert rc == 2
    rc = main(["eval", "clue", "--model", str(tmp_path), "--tasks", "wsc", "--data-dir", str(FIX), "--output",
               str(tmp_path / "o"), "--train-file", "wsc"])
    assert rc == 2


def test_random_twin_row_and_merging_per_task_runs(models, tmp_path, capsys):
    """--random-twin: same config/vocab/tokenizer files, new weights, reused on rerun; results
    of one model made by separate per-task runs merge into one row in `eval compare`."""
    from zhbert.cli import main
    from zhbert.clue.run import load_results
    from zhbert.clue.twin import random_twin

    out = tmp_path / "twin"
    base = ["eval", "clue", "--model", str(models[0]), "--random-twin", "--data-dir", str(FIX), "--seeds", "1",
            "--epochs", "1", "--batch-size", "4", "--lr", "1e-3", "--wandb-mode", "disabled"]
    assert main([*base, "--tasks", "wsc", "--output", str(out / "wsc")]) == 0
    twin = out / "wsc" / "_models" / "random-init"
    assert (twin / "config.json").read_bytes() == (models[0] / "config.json").read_bytes()
    assert (twin / "vocab.txt").read_bytes() == (models[0] / "vocab.txt").read_bytes()
    assert (twin / "model.safetensors").read_bytes() != (models[0] / "model.safetensors").read_bytes()
    stamp = (twin / "model.safetensors").stat().st_mtime_ns
    assert random_twin(models[0], twin) == twin and (twin / "model.safetensors").stat().st_mtime_ns == stamp
    rows = [line.split("|")[1].strip() for line in (out / "wsc" / "results.md").read_text().splitlines()
            if line.startswith("| `")]
    assert rows == ["`a`", "`random-init`"]
    assert main([*base, "--tasks", "tnews", "--output", str(out / "tnews")]) == 0
    capsys.readouterr()
    merged = load_results([out / "wsc" / "a", out / "wsc" / "random-init", out / "tnews" / "a",
                           out / "tnews" / "random-init"])
    assert [r["label"] for r in merged] == ["a", "random-init"]
    assert all(set(r["tasks"]) == {"wsc", "tnews"} for r in merged)
    with pytest.raises(DataError, match="wsc of a already read from another directory"):
        load_results([out / "wsc" / "a", out / "wsc" / "a"])


@pytest.mark.parametrize("text, msg", [
    ("huge: {all: {lr: 1.0e-3}}\n", "unknown size class 'huge'"),
    ("tiny: {xnli: {lr: 1.0e-3}}\n", r"tiny\.xnli: expected 'all' or a task name"),
    ("tiny: {all: {lr: -1}}\n", r"tiny\.all: lr must be > 0"),
    ("tiny: {all: {learning_rate: 1}}\n", r"tiny\.all: .*learning_rate"),
])
def test_bad_size_table_is_one_line_naming_the_key(tmp_path, text, msg):
    from zhbert.clue.protocol import load_size_table

    (tmp_path / "sizes.yaml").write_text(text)
    with pytest.raises(ConfigError, match=msg) as e:
        load_size_table(tmp_path / "sizes.yaml")
    assert str(e.value).startswith(str(tmp_path / "sizes.yaml")) and "\n" not in str(e.value)


def test_a_rerun_never_reuses_results_of_other_weights_under_the_same_output(models, tmp_path):
    """The same model path (so the same label and output dir) with other weights -- e.g. a
    checkpoint trained further -- must not be scored with the old weights' finished seeds."""
    from zhbert.clue.run import run_clue

    model, out = tmp_path / "model", tmp_path / "out"
    shutil.copytree(models[0], model)
    kw = dict(seeds=[1], overrides=["epochs=1", "batch_size=4", "eval_every=1"], wandb_mode="disabled")
    run_clue(str(model), parse_tasks("wsc"), FIX, out, **kw)
    (done,) = (out / "wsc").glob("*/seed1/result.json")
    first = json.loads(done.read_text())
    sha_a = hashlib.sha256((models[0] / "model.safetensors").read_bytes()).hexdigest()
    assert first["model_weights_sha256"] == sha_a
    # same weights: reused as is (the file is not rewritten)
    mtime = done.stat().st_mtime_ns
    assert run_clue(str(model), parse_tasks("wsc"), FIX, out, **kw)["tasks"]["wsc"]["mean"] == first["dev"]["accuracy"]
    assert done.stat().st_mtime_ns == mtime
    # other weights under the same path: refused, naming the file and both hashes
    shutil.copy(models[1] / "model.safetensors", model / "model.safetensors")
    sha_b = hashlib.sha256((models[1] / "model.safetensors").read_bytes()).hexdigest()
    with pytest.raises(ConfigError, match=rf"{done}: made with another model \(weights sha256 {sha_a[:12]}, "
                                          rf".* has {sha_b[:12]}\)"):
        run_clue(str(model), parse_tasks("wsc"), FIX, out, **kw)
    # a result written before the field existed: checked against the finished results.json beside it
    old = {k: v for k, v in first.items() if k != "model_weights_sha256"}
    done.write_text(json.dumps(old))
    with pytest.raises(ConfigError, match=r"made with another model"):
        run_clue(str(model), parse_tasks("wsc"), FIX, out, **kw)
    shutil.copy(models[0] / "model.safetensors", model / "model.safetensors")
    run_clue(str(model), parse_tasks("wsc"), FIX, out, **kw)  # a's weights again: reused
    assert json.loads(done.read_text()) == old
    (out / "results.json").unlink()
    done.write_text(json.dumps(old))
    with pytest.raises(ConfigError, match=r"does not record which model made it"):
        run_clue(str(model), parse_tasks("wsc"), FIX, out, **kw)
