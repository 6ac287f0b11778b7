"""scripts/clue_experiment.py: the bootstrap interval of the pretrained - random
delta, the recomputed accuracy check, the selected lr of a grid (hand-worked expectations), and
the reuse of a --baseline experiment's random-init results."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exp():
    spec = importlib.util.spec_from_file_location("clue_experiment", REPO / "scripts" / "clue_experiment.py")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return mod


def test_bootstrap_delta_hand_worked(exp):
    # 2 seeds x 4 dev rows. Mean over seeds per row: A = [1, .5, 1, 0], B = [0, .5, 1, 0];
    # per-row differences [1, 0, 0, 0] -> delta 25 points. Every resample's mean lies in
    # {0, .25, .5, .75, 1} and the interval must hold 25 with 0 <= lo <= 25 <= hi <= 100.
    a = {"1": np.array([1, 1, 1, 0], bool), "2": np.array([1, 0, 1, 0], bool)}
    b = {"1": np.array([0, 1, 1, 0], bool), "2": np.array([0, 0, 1, 0], bool)}
    r = exp.bootstrap_delta(a, b, 4000, seed=0)
    assert r["delta"] == 25.0
    lo, hi = r["ci95"]
    assert lo == 0.0 and hi == 75.0  # P(k <= 2 of 4 draws hit row 0) = .949 < .975 <= P(k <= 3)
    # P(resampled mean <= 0) = P(row 0 never drawn in 4 draws) = (3/4)^4 = 0.316
    assert abs(r["p_delta_le_0"] - 0.75 ** 4) < 0.03


def test_bootstrap_delta_degenerate_cases(exp):
    ones, zeros = {"1": np.ones(50, bool)}, {"1": np.zeros(50, bool)}
    assert exp.bootstrap_delta(ones, zeros, 200) == {"delta": 100.0, "ci95": [100.0, 100.0], "resamples": 200,
                                                     "p_delta_le_0": 0.0}
    same = exp.bootstrap_delta(ones, ones, 200)
    assert same["delta"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["p_delta_le_0"] == 1.0


def _fake_run(root: Path, preds: list[str], reported: float, lr: float = 3e-4) -> dict:
    d = root / "ocnli" / "lr3e-04_bs32_ep2" / "seed1"
    d.mkdir(parents=True)
    (d / "dev_predictions.jsonl").write_text("".join(json.dumps({"id": i, "label": p}) + "\n"
                                                     for i, p in enumerate(preds)))
    (d / "result.json").write_text(json.dumps({"dev": {"accuracy": reported}}))
    return {"_dir": str(root), "tasks": {"ocnli": {"seeds": [1], "selected": "lr3e-04_bs32_ep2",
                                                   "protocol": {"selected": {"lr": lr}}}}}


def test_correctness_recomputes_and_checks_the_reported_accuracy(exp, tmp_path):
    gold = ["entailment", "-", "neutral", "contradiction"]  # "-": no gold label, not scored
    preds = ["entailment", "neutral", "neutral", "neutral"]
    res = _fake_run(tmp_path / "ok", preds, reported=2 / 3)
    c = exp.correctness(res, "ocnli", gold)
    assert c["1"].tolist() == [True, True, False]
    bad = _fake_run(tmp_path / "bad", preds, reported=0.5)
    with pytest.raises(SystemExit, match="recomputed accuracy 0.666667 != reported 0.500000"):
        exp.correctness(bad, "ocnli", gold)


def test_selected_lr(exp, tmp_path):
    assert exp._lr(_fake_run(tmp_path, ["x"], 1.0, lr=1e-3)["tasks"]["ocnli"]) == 1e-3


def test_pretraining_inputs_all_or_task_text(exp, tmp_path):
    for name in ["00_sample.txt", "clue_ocnli_train_text.txt", "clue_tnews_train_text.txt", "zhwiki_00"]:
        (tmp_path / name).write_text("一\n", encoding="utf-8")
    assert exp.pretraining_inputs(tmp_path, "all") == [tmp_path]
    assert exp.pretraining_inputs(tmp_path, "tasks") == [tmp_path / "clue_ocnli_train_text.txt",
                                                         tmp_path / "clue_tnews_train_text.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no clue_"):
        exp.pretraining_inputs(empty, "tasks")


def test_baseline_twin_results_reused_only_for_the_same_twin_and_flags(exp, tmp_path):
    """--baseline: the baseline's random-init results are copied when the twin rebuilt for this
    run has the same weights (hashed here independently) and the fine-tuning flags match."""
    import hashlib
    import shutil

    import torch
    from test_clue import _tiny_model

    from zhbert.model.modeling import BertConfig, BertForPreTraining

    run = _tiny_model(tmp_path / "run")  # the variant's pretrained model (an HF dir resolves to itself)
    # the twin is BertForPreTraining's init under torch.manual_seed(42) with the run's config
    ref = tmp_path / "ref"
    shutil.copytree(run, ref)
    torch.manual_seed(42)
    BertForPreTraining(BertConfig.from_pretrained(run)).save_pretrained(ref)
    twin_sha = hashlib.sha256((ref / "model.safetensors").read_bytes()).hexdigest()
    flags = {"tasks": "ocnli", "seeds": "1", "epochs": "1", "lr": "3e-4", "train_rows": "0", "cmrc_dev": "300",
             "clue_dir": "x"}

    def baseline(name, sha):
        d = tmp_path / name / "clue" / "random-init"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({"label": "random-init", "protocol": {"weights_sha256": sha}}))
        (d / "marker").write_text(name)
        return d.parent

    out = tmp_path / "out1" / "clue"
    msg = exp.reuse_baseline_twin(run, baseline("same", twin_sha), out, flags, dict(flags))
    assert "copied" in msg and (out / "random-init" / "marker").read_text() == "same"
    assert "exists, kept" in exp.reuse_baseline_twin(run, tmp_path / "same" / "clue", out, flags, dict(flags))

    out = tmp_path / "out2" / "clue"
    msg = exp.reuse_baseline_twin(run, baseline("other", "0" * 64), out, flags, dict(flags))
    assert "another twin" in msg and not (out / "random-init").exists()

    out = tmp_path / "out3" / "clue"
    msg = exp.reuse_baseline_twin(run, tmp_path / "same" / "clue", out, flags, {**flags, "epochs": "2"})
    assert "other fine-tuning flags" in msg and not (out / "random-init").exists()
    msg = exp.reuse_baseline_twin(run, tmp_path / "same" / "clue", out, flags, None)  # an old baseline
    assert "flags are not recorded" in msg and not (out / "random-init").exists()
    msg = exp.reuse_baseline_twin(run, tmp_path / "none" / "clue", out, flags, dict(flags))
    assert "no finished results" in msg


def test_clue_data_checked_before_any_stage(exp, tmp_path):
    """A wrong --clue-dir or a missing task fails at once (one line naming the directory), not
    after the pretraining: ocnli's dev file is there, tnews's is not."""
    (tmp_path / "ocnli_public").mkdir()
    (tmp_path / "ocnli_public" / "dev.json").write_text("{}\n")
    exp.check_clue_data(tmp_path, ["ocnli"])  # found: no error
    with pytest.raises(SystemExit) as e:
        exp.check_clue_data(tmp_path, ["ocnli", "tnews"])
    msg = str(e.value)
    assert msg.startswith(f"--clue-dir {tmp_path}:") and "tnews_public" in msg and "\n" not in msg
    with pytest.raises(SystemExit, match="not found"):
        exp.check_clue_data(tmp_path / "missing", ["ocnli"])
    with pytest.raises(SystemExit, match="unknown task 'ocnlii'"):
        exp.check_clue_data(tmp_path, ["ocnlii"])


def test_missing_pretrain_corpus_fails_before_any_stage(exp, tmp_path):
    """Without the shared pretrain_corpus (a checkout whose ../shared is elsewhere) the experiment
    once built its corpus from corpora/sample and the CLUE train text alone (3.1M instead of 8.0M
    characters) and said nothing. Now: one line naming the directory, before any stage, and
    nothing written; a directory with a file passes."""
    import experiment_corpus  # the module clue_experiment.py imports (scripts/ on sys.path)

    missing, empty, ok = tmp_path / "missing", tmp_path / "empty", tmp_path / "ok"
    (empty / "sub").mkdir(parents=True)
    (ok / "novels").mkdir(parents=True)
    (ok / "novels" / "a.txt").write_text("第一句。\n", encoding="utf-8")
    for bad, why in ((missing, "not a directory"), (empty, "no files in it")):
        with pytest.raises(SystemExit) as e:
            experiment_corpus.check_pretrain_corpus(bad)
        assert str(e.value).startswith(f"--pretrain-corpus {bad}: {why}") and "\n" not in str(e.value)
        with pytest.raises(SystemExit):
            experiment_corpus.build(tmp_path / "out", tmp_path / "clue", bad)
        assert not (tmp_path / "out").exists()
    experiment_corpus.check_pretrain_corpus(ok)
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "clue_experiment.py"), "--output", str(out),
                        "--clue-dir", str(tmp_path / "clue"), "--cmrc-dev", "0", "--tasks", "ocnli",
                        "--pretrain-corpus", str(missing)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and r.stderr.strip().startswith("--clue-dir")  # CLUE checked first
    (tmp_path / "clue" / "ocnli_public").mkdir(parents=True)
    (tmp_path / "clue" / "ocnli_public" / "dev.json").write_text("{}\n")
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "clue_experiment.py"), "--output", str(out),
                        "--clue-dir", str(tmp_path / "clue"), "--cmrc-dev", "0", "--tasks", "ocnli",
                        "--pretrain-corpus", str(missing)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and r.stderr.strip().startswith(f"--pretrain-corpus {missing}: not a directory")
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (out / "corpus").exists() and not (out / "times.json").exists()
