"""`zhbert eval clue`: CLUE file formats, label mapping, errors, outputs, end to end.

Fixtures in tests/fixtures/clue are small hand-written files in each task's official CLUE 1.1
format (one JSON object per line, `<task>_public/` directories). The end-to-end test
fine-tunes a tiny random-init BERT saved with `save_pretrained` on them through
`zhbert.cli.main` and re-derives the reported accuracies from the written prediction files.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from zhbert.clue.data import load_split, load_task, read_jsonl
from zhbert.clue.metrics import accuracy, clue_average, summarize_seeds
from zhbert.clue.tasks import TASKS, TNEWS_LABEL_DESCS, ClueTaskConfig, load_task_config, mark_wsc_spans, parse_tasks
from zhbert.errors import CheckpointError, ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "clue"


# ------------------------------------------------------------------ loading, label mapping


def test_tasks_load_with_official_layout_and_labels():
    tn = load_task(FIX, TASKS["tnews"])
    assert tn.dir == FIX / "tnews_public"
    assert len(tn.train.examples) == 8 and len(tn.dev.examples) == 4 and len(tn.test.examples) == 2
    # TNEWS codes 100..116 without 105 and 111 -> ids 0..14 in order
    assert TASKS["tnews"].labels == ("100", "101", "102", "103", "104", "106", "107", "108", "109", "110",
                                     "112", "113", "114", "115", "116")
    first = tn.train.examples[0]  # {"label": "108", "sentence": "上课时..."}
    assert (first.text_a, first.text_b, first.label) == ("上课时学生手机响个不停，老师一怒之下把手机摔了", None, 7)
    assert [e.id for e in tn.test.examples] == [0, 1]
    assert TASKS["iflytek"].labels[:3] == ("0", "1", "2") and TASKS["iflytek"].num_labels == 119

    oc = load_task(FIX, TASKS["ocnli"])  # train file is train.50k.json; "-" rows dropped and counted
    assert (len(oc.train.examples), oc.train.dropped) == (7, 1)
    assert (len(oc.dev.examples), oc.dev.dropped) == (3, 1)
    assert oc.dev.rows == [0, 1, None, 2]  # one entry per dev-file line
    assert [e.label for e in oc.dev.examples] == [0, 2, 1]  # entailment, contradiction, neutral
    assert (oc.dev.examples[0].text_a, oc.dev.examples[0].text_b) == ("东部地区要加强合作", "东部地区存在合作")


def test_wsc_spans_marked_like_clue_baseline():
    wsc = load_task(FIX, TASKS["wsc"])
    # span1 (noun) in "_", span2 (pronoun) in "[ ]"; label "true" -> 0, "false" -> 1
    assert wsc.train.examples[0].text_a == "裂开的_伤口_涂满尘土，我小心翼翼把[它们]剔除出去。"
    assert wsc.train.examples[0].label == 1
    assert wsc.dev.examples[0].text_a == "老师表扬了_学生_，因为[他]考得很好。"
    assert wsc.dev.examples[0].label == 0
    # the CLUE dev example from tasks.py's docstring (span1 index 6, span2 index 35)
    text = "有些这样的“洋人”就站在大众之间，如同鹤立鸡群，毫不掩饰自己的优越感。他们排在非凡的甲菜盆后面"
    target = {"span1_index": 6, "span1_text": "洋人", "span2_index": 35, "span2_text": "他们"}
    assert mark_wsc_spans(text, target) == (
        "有些这样的“_洋人_”就站在大众之间，如同鹤立鸡群，毫不掩饰自己的优越感。[他们]排在非凡的甲菜盆后面")
    # pronoun before the noun: markers still land around the right characters
    assert mark_wsc_spans("他说小明来了", {"span1_index": 2, "span1_text": "小明", "span2_index": 0,
                                     "span2_text": "他"}) == "[他]说_小明_来了"


def test_csl_keywords_joined_with_space_as_first_segment():
    csl = load_task(FIX, TASKS["csl"])
    e = csl.dev.examples[0]
    assert (e.text_a, e.text_b, e.label) == ("卷积神经网络 图像分割", "利用卷积神经网络进行图像分割。", 1)
    assert csl.test.examples[0].label is None and csl.test.examples[0].id == 6


def test_task_without_train_file_loads_dev_only():
    af = load_task(FIX, TASKS["afqmc"])
    assert af.train is None and len(af.dev.examples) == 3


# ------------------------------------------------------------------ errors name file:line


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_malformed_json_line_names_file_and_line(tmp_path):
    p = _write(tmp_path / "tnews_public" / "dev.json",
               ['{"label": "103", "sentence": "好"}', '{"label": "103", "sentence": 坏}'])
    with pytest.raises(DataError, match=r"dev\.json:2: malformed JSON"):
        read_jsonl(p)


def test_unknown_label_names_file_line_and_label(tmp_path):
    p = _write(tmp_path / "dev.json", ['{"label": "103", "sentence": "好"}', '{"label": "105", "sentence": "坏"}'])
    with pytest.raises(DataError, match=r"dev\.json:2: unknown TNEWS label '105'"):
        load_split(TASKS["tnews"], p, labeled=True)
    p = _write(tmp_path / "nli.json", ['{"sentence1": "a", "sentence2": "b", "label": "maybe"}'])
    with pytest.raises(DataError, match=r"nli\.json:1: unknown OCNLI label 'maybe'"):
        load_split(TASKS["ocnli"], p, labeled=True)


def test_missing_field_and_bad_wsc_span(tmp_path):
    p = _write(tmp_path / "dev.json", ['{"label": "0", "sentence1": "a"}'])
    with pytest.raises(DataError, match=r"dev\.json:1: missing field 'sentence2'"):
        load_split(TASKS["afqmc"], p, labeled=True)
    row = {"target": {"span1_index": 0, "span1_text": "小红", "span2_index": 3, "span2_text": "他"},
           "label": "true", "text": "小明说他来了"}
    p = _write(tmp_path / "wsc.json", [json.dumps(row, ensure_ascii=False)])
    with pytest.raises(DataError, match=r"wsc\.json:1: span1_text '小红' is not at span1_index 0"):
        load_split(TASKS["wsc"], p, labeled=True)


def test_missing_data_lists_what_was_looked_for(tmp_path):
    with pytest.raises(DataError, match="data directory not found"):
        load_task(tmp_path / "nope", TASKS["tnews"])
    with pytest.raises(DataError) as e:
        load_task(tmp_path, TASKS["ocnli"])
    msg = str(e.value)
    assert str(tmp_path / "ocnli_public" / "dev.json") in msg and str(tmp_path / "ocnli" / "dev.json") in msg


def test_task_names_and_configs():
    assert [t.name for t in parse_tasks("tnews, cluewsc2020,tnews")] == ["tnews", "wsc"]
    assert [t.name for t in parse_tasks("all")] == ["afqmc", "tnews", "iflytek", "cmnli", "ocnli", "wsc", "csl",
                                                   "cmrc2018", "chid", "c3"]  # CLUE 1.1 order
    with pytest.raises(ConfigError, match="unknown CLUE task 'xnli'"):
        parse_tasks("xnli")
    for name in TASKS:
        cfg = load_task_config(REPO / "configs" / "clue" / f"{name}.yaml")
        assert isinstance(cfg, ClueTaskConfig)
    wsc = load_task_config(REPO / "configs" / "clue" / "wsc.yaml", ["lr=1e-5"])
    assert (wsc.epochs, wsc.batch_size, wsc.lr) == (50, 8, 1e-5)  # CLUE baseline WSC + override
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        load_task_config(None, ["batch_size=0"])


def test_configs_match_the_clue_baseline_rows_they_cite():
    """configs/clue/*.yaml cite the CLUE README's BERT-base rows; the values of those rows
    (github.com/CLUEbenchmark/CLUE README, per-task tables: batch, length, epoch, lr)."""
    clue_bert_base = {  # task: (batch_size, max_seq_length, epochs, lr)
        "afqmc": (16, 128, 3, 2e-5), "tnews": (16, 128, 3, 2e-5), "iflytek": (32, 128, 3, 2e-5),
        "cmnli": (64, 128, 2, 3e-5), "wsc": (8, 128, 50, 2e-5), "csl": (4, 256, 5, 1e-5),
    }
    for name, row in clue_bert_base.items():
        path = REPO / "configs" / "clue" / f"{name}.yaml"
        cfg = load_task_config(path)
        assert (cfg.batch_size, cfg.max_seq_length, cfg.epochs, cfg.lr) == row, name
        assert "BERT-base row" in path.read_text(encoding="utf-8")


def test_metrics():
    assert accuracy([1, 0, 2, 2], [1, 1, 2, 0]) == 0.5
    assert summarize_seeds([0.5, 0.7, 0.6]) == pytest.approx({"max": 0.7, "mean": 0.6, "n": 3})
    avg = clue_average({"tnews": {"max": 0.5, "mean": 0.4}, "wsc": {"max": 0.7, "mean": 0.6}})
    assert avg["max"] == pytest.approx(0.6) and avg["mean"] == pytest.approx(0.5)


# ------------------------------------------------------------------ models


def _tiny_model(out: Path, extra_vocab: int = 0) -> Path:
    """Random-init tiny BERT (zhbert pretraining export layout) + a vocab of the fixture chars."""
    import torch

    from zhbert.model.modeling import BertConfig, BertForPreTraining
    from zhbert.prep.tokenizer import special_layout

    chars = set()
    for f in FIX.rglob("*.json"):
        chars.update(c for c in f.read_text(encoding="utf-8") if not c.isspace())
    tokens = special_layout() + sorted(chars - set(special_layout()))
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=256)
    BertForPreTraining(cfg).save_pretrained(out)
    tokens += [f"extra{i}" for i in range(extra_vocab)]
    (out / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_model_dir_resolution(tiny_model, tmp_path):
    from zhbert.hub import resolve_model_dir

    run = tmp_path / "run"
    for step in (10, 200, 30):
        shutil.copytree(tiny_model, run / "checkpoints" / f"step_{step}" / "hf")
    (run / "checkpoints" / "step_300").mkdir()  # incomplete: no hf/ export
    shutil.copytree(tiny_model, run / "checkpoints" / "step_400" / "hf")  # killed before meta.json said complete
    (run / "checkpoints" / "step_400" / "meta.json").write_text('{"step": 400, "complete": false}')
    assert resolve_model_dir(str(run)) == run / "checkpoints" / "step_200" / "hf"
    assert resolve_model_dir(str(run / "checkpoints" / "step_30")) == run / "checkpoints" / "step_30" / "hf"
    assert resolve_model_dir(str(tiny_model)) == tiny_model
    with pytest.raises(CheckpointError, match="no model found; looked for config.json"):
        resolve_model_dir(str(run / "checkpoints" / "step_300"))
    with pytest.raises(CheckpointError, match="model not found|not a local directory"):
        resolve_model_dir(str(tmp_path / "nope"))


def test_vocab_not_matching_embeddings_is_a_clear_error(tmp_path):
    from zhbert.cli import main

    bad = _tiny_model(tmp_path / "bad", extra_vocab=3)
    with pytest.raises(CheckpointError, match=r"vocab\.txt has \d+ tokens but the model's embeddings have \d+ rows"):
        from zhbert.clue.run import load_model_tokenizer

        load_model_tokenizer(bad)
    rc = main(["eval", "clue", "--model", str(bad), "--tasks", "wsc", "--data-dir", str(FIX),
               "--output", str(tmp_path / "o"), "--wandb-mode", "disabled"])
    assert rc == 2


# ------------------------------------------------------------------ end to end


def _gold(path: Path, spec) -> list:
    """Independent reading of a dev file: gold label strings, None for "-" rows."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            lab = json.loads(line)["label"]
            out.append(None if lab == "-" else str(lab))
    return out


def test_eval_clue_end_to_end(tiny_model, tmp_path, capsys):
    from zhbert.cli import main

    out = tmp_path / "out"
    argv = ["eval", "clue", "--model", str(tiny_model), "--tasks", "tnews,ocnli,wsc,afqmc",
            "--data-dir", str(FIX), "--output", str(out), "--seeds", "1,2", "--epochs", "2",
            "--batch-size", "4", "--eval-every", "1", "--lr", "1e-3", "--device", "cpu", "--wandb-mode", "offline"]
    assert main(argv) == 0
    # no terminal here: a plain line per dev evaluation instead of a progress bar
    printed = capsys.readouterr().out
    assert "[zhbert] clue tnews seed 1: step 1/" in printed and "| dev acc " in printed
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert set(res["tasks"]) == {"tnews", "ocnli", "wsc"}
    assert "no train file" in res["skipped"]["afqmc"] and "afqmc_public/train.json" in res["skipped"]["afqmc"]
    for name, r in res["tasks"].items():
        spec = TASKS[name]
        assert set(r["seeds"]) == {"1", "2"} and r["hyperparameters"]["lr"] == 1e-3
        assert r["hyperparameters"]["batch_size"] == 4 and r["wall_time_s"] > 0
        gold = _gold(FIX / spec.dir_name / spec.dev_file, spec)
        accs = []
        for seed in ("1", "2"):
            seed_dir = out / name / "lr1e-03_bs4_ep2" / f"seed{seed}"
            preds = [json.loads(x)["label"] for x in (seed_dir / "dev_predictions.jsonl").read_text().splitlines()]
            assert len(preds) == len(gold)  # one line per dev-file line, in order
            assert all((p is None) == (g is None) for p, g in zip(preds, gold))
            assert all(p in spec.labels for p in preds if p is not None)
            scored = [(p, g) for p, g in zip(preds, gold) if g is not None]
            acc = sum(p == g for p, g in scored) / len(scored)
            assert acc == pytest.approx(r["seeds"][seed]["dev"]["accuracy"])
            accs.append(acc)
            seed_res = json.loads((seed_dir / "result.json").read_text())
            # eval every step + epoch ends: 2 epochs of ceil(train/4) steps
            assert seed_res["total_steps"] == 2 * -(-r["train_size"] // 4) == len(seed_res["history"])
        assert r["max"] == pytest.approx(max(accs)) and r["mean"] == pytest.approx(sum(accs) / 2)
        labelled = [g for g in gold if g is not None]
        assert r["majority_rate"] == pytest.approx(max(labelled.count(x) for x in set(labelled)) / len(labelled))
    assert res["tasks"]["ocnli"]["dropped"] == {"train": 1, "dev": 1}
    avg = sum(r["mean"] for r in res["tasks"].values()) / 3
    assert res["clue_average"]["mean"] == pytest.approx(avg)

    # submission: CLUE 1.1 names, one {"id", "label"} per test line, from the best seed
    names = {"tnews11_predict.json", "ocnli_50k_predict.json", "cluewsc11_predict.json"}
    assert {p.name for p in (out / "submission").iterdir()} == names
    with zipfile.ZipFile(out / "submission.zip") as z:
        assert set(z.namelist()) == names
        tn = [json.loads(x) for x in z.read("tnews11_predict.json").decode().splitlines()]
    assert [r["id"] for r in tn] == [0, 1]
    assert all(TNEWS_LABEL_DESCS[r["label"]] == r["label_desc"] for r in tn)
    best = res["tasks"]["wsc"]["best_seed"]
    assert (out / "submission" / "cluewsc11_predict.json").read_bytes() == \
        (out / "wsc" / "lr1e-03_bs4_ep2" / f"seed{best}" / "cluewsc11_predict.json").read_bytes()
    wsc_sub = [json.loads(x) for x in (out / "submission" / "cluewsc11_predict.json").read_text().splitlines()]
    assert len(wsc_sub) == 1 and wsc_sub[0]["id"] == 1 and wsc_sub[0]["label"] in ("true", "false")

    md = (out / "results.md").read_text()
    assert "| Model | TNEWS | OCNLI | WSC | Avg |" in md and "AFQMC: no train file" in md
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((out / "wandb").glob("offline-run-*"))) == 7  # 3 tasks x 2 seeds + summary

    # rerun: every (task, seed) is finished, nothing is retrained
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*/*/seed*/result.json")}
    assert len(stamp) == 6
    assert main(argv[:-1] + ["disabled"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*/seed*/result.json")} == stamp
    assert json.loads((out / "results.json").read_text())["tasks"]["wsc"]["max"] == res["tasks"]["wsc"]["max"]


def test_same_seed_same_result_and_all_tasks_skip_cleanly(tiny_model, tmp_path):
    from zhbert.clue.run import run_clue

    kw = dict(seeds=[3], overrides=["epochs=3", "batch_size=2", "lr=1e-3", "eval_every=1"], wandb_mode="disabled")
    a = run_clue(str(tiny_model), parse_tasks("csl"), FIX, tmp_path / "a", **kw)
    b = run_clue(str(tiny_model), parse_tasks("csl"), FIX, tmp_path / "b", **kw)
    ha = json.loads((tmp_path / "a" / "csl" / "lr1e-03_bs2_ep3" / "seed3" / "result.json").read_text())["history"]
    hb = json.loads((tmp_path / "b" / "csl" / "lr1e-03_bs2_ep3" / "seed3" / "result.json").read_text())["history"]
    assert ha == hb and a["tasks"]["csl"]["max"] == b["tasks"]["csl"]["max"]
    # --tasks all: tasks absent from the data dir are skipped with the paths looked at ...
    data = tmp_path / "data"
    shutil.copytree(FIX / "afqmc_public", data / "afqmc_public")
    c = run_clue(str(tiny_model), parse_tasks("all"), data, tmp_path / "c", seeds=[1], wandb_mode="disabled",
                 explicit_tasks=False)
    assert c["tasks"] == {} and "no train file" in c["skipped"]["afqmc"]
    assert "looked for" in c["skipped"]["tnews"] and str(data / "tnews_public" / "dev.json") in c["skipped"]["tnews"]
    assert not (tmp_path / "c" / "submission.zip").exists()
    # ... but a data dir holding no task at all is an error
    with pytest.raises(DataError, match="no CLUE task found"):
        run_clue(str(tiny_model), parse_tasks("all"), tmp_path / "c", tmp_path / "d", seeds=[1],
                 wandb_mode="disabled", explicit_tasks=False)


def test_deepspeed_path_matches_plain_loop(tiny_model, tmp_path):
    """--deepspeed (single-process engine, ZeRO 0, gloo on CPU) follows the same trajectory.
    Run in a subprocess: DeepSpeed initialises torch.distributed for the whole process."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    hist = {}
    for name, extra in (("plain", []), ("ds", ["--deepspeed"])):
        cmd = [sys.executable, "-m", "zhbert.cli", "eval", "clue", "--model", str(tiny_model), "--tasks", "wsc",
               "--data-dir", str(FIX), "--output", str(tmp_path / name), "--epochs", "2", "--batch-size", "4",
               "--lr", "1e-3", "--eval-every", "1", "--device", "cpu", "--wandb-mode", "disabled", *extra]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        hist[name] = json.loads((tmp_path / name / "wsc" / "lr1e-03_bs4_ep2" / "seed1" / "result.json").read_text())["history"]
    assert [h["dev_accuracy"] for h in hist["ds"]] == [h["dev_accuracy"] for h in hist["plain"]]
    assert [h["train_loss"] for h in hist["ds"]] == pytest.approx([h["train_loss"] for h in hist["plain"]], rel=1e-4)


# ------------------------------------------------------------------ the real CLUE files


def test_real_clue_files_load(shared_data):
    clue = shared_data / "clue"
    oc = load_task(clue, TASKS["ocnli"])
    assert (len(oc.dev.examples), oc.dev.dropped, len(oc.dev.rows)) == (2950, 50, 3000)
    assert oc.train.dropped == 49
    labels = [json.loads(x) for x in (clue / "tnews_public" / "labels.json").read_text().splitlines()]
    assert {r["label"]: r["label_desc"] for r in labels} == TNEWS_LABEL_DESCS
    ifl = [json.loads(x)["label"] for x in (clue / "iflytek_public" / "labels.json").read_text().splitlines()]
    assert tuple(ifl) == TASKS["iflytek"].labels
    wsc = load_task(clue, TASKS["wsc"])  # every span is where its index says
    assert (len(wsc.train.examples), len(wsc.dev.examples), len(wsc.test.examples)) == (1244, 304, 290)


def test_finetuning_text_gets_the_pretraining_normalisation(tmp_path):
    """A checkpoint pretrained on full-width-normalised text (，→,) is fine-tuned on the same
    normalisation; a checkpoint that recorded none (released HF models) sees raw text."""
    from zhbert.clue.data import Example
    from zhbert.clue.finetune import encode
    from zhbert.prep.tokenizer import ChineseTokenizer, special_layout

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(t + "\n" for t in special_layout() + ["你", "好", "，", ",", "a"]), encoding="utf-8")
    tok = ChineseTokenizer.from_vocab(vocab)
    ex = [Example("你好，", "ａ", 0)]
    assert tok.tokenize("你好，") == ["你", "好", "，"]
    raw = encode(tok, ex, 16)[0]["input_ids"]
    tok.normalization = {"fullwidth": True, "t2s": False}
    tok.save(tmp_path / "tok")
    again = ChineseTokenizer.from_dir(tmp_path / "tok")
    normed = encode(again, ex, 16)[0]["input_ids"]
    v = again.vocab
    assert raw == [v["[CLS]"], v["你"], v["好"], v["，"], v["[SEP]"], v["[UNK]"], v["[SEP]"]]
    assert normed == [v["[CLS]"], v["你"], v["好"], v[","], v["[SEP]"], v["a"], v["[SEP]"]]


def test_task_without_test_file_is_left_out_of_the_submission(tiny_model, tmp_path):
    """CSL without test.json: fine-tuned and reported, but its (empty) predictions are not
    zipped for upload, and the run says so."""
    from zhbert.clue.run import run_clue

    data = tmp_path / "data"
    shutil.copytree(FIX / "csl_public", data / "csl_public", ignore=shutil.ignore_patterns("test.json"))
    shutil.copytree(FIX / "cluewsc2020_public", data / "cluewsc2020_public")
    out = tmp_path / "out"
    (out / "submission").mkdir(parents=True)
    (out / "submission" / "csl_predict.json").write_text('{"id": 0, "label": "1"}\n')  # stale, earlier run
    with pytest.warns(UserWarning, match=r"CSL: no test predictions .*csl_public/test\.json.*left out of submission\.zip"):
        res = run_clue(str(tiny_model), parse_tasks("csl,wsc"), data, out, seeds=[1], wandb_mode="disabled",
                       overrides=["epochs=1", "batch_size=4", "lr=1e-3"])
    assert set(res["tasks"]) == {"csl", "wsc"} and res["tasks"]["csl"]["test_size"] == 0
    assert not (out / "csl" / "lr1e-03_bs4_ep1" / "seed1" / "csl_predict.json").exists()
    with zipfile.ZipFile(out / "submission.zip") as z:
        assert z.namelist() == ["cluewsc11_predict.json"]
        assert z.read("cluewsc11_predict.json").strip()
    assert sorted(p.name for p in (out / "submission").iterdir()) == ["cluewsc11_predict.json"]


def test_write_submission_without_any_test_predictions(tmp_path):
    from zhbert.clue.report import write_submission

    seed_dir = tmp_path / "tnews" / "seed1"
    seed_dir.mkdir(parents=True)
    (seed_dir / "tnews11_predict.json").write_text("")
    (tmp_path / "submission.zip").write_bytes(b"stale")
    with pytest.warns(UserWarning, match="TNEWS: no test predictions"):
        assert write_submission(tmp_path, {"tnews": seed_dir}) is None
    assert not (tmp_path / "submission.zip").exists()


def test_tables_show_the_majority_class_rate_and_flag_scores_at_it():
    from zhbert.clue.report import results_markdown

    def task(mean, majority):
        return {"max": mean, "mean": mean, "majority_rate": majority, "seeds": {"1": {"dev_accuracy": mean}},
                "train_size": 100, "dev_size": 50, "dropped": {"train": 0, "dev": 0},
                "hyperparameters": {"lr": 2e-5, "epochs": 3, "batch_size": 16, "max_seq_length": 128}}

    results = {"model": "m", "seeds": [1], "skipped": {}, "clue_average": {"max": 0.4, "mean": 0.4},
               "tasks": {"tnews": task(0.153, 0.109), "ocnli": task(0.3695, 0.374)}}
    md = results_markdown(results)
    assert "| majority class | 10.90 | 37.40 | 24.15 |" in md
    assert "OCNLI: 36.95 is at the majority-class rate (37.40)" in md and "TNEWS:" not in md.split("| Task |")[0].split("majority class")[1]
