"""Checkpoint tests: SIGKILL + resume equality, corrupt checkpoints, keep_last, HF export
(against transformers), ZeRO-3 export, universal checkpoint with a world-size change."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from _pretrain_fixtures import REPO, build_data, cpu_env, metrics, overrides, spawn_train


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_data(tmp_path_factory.mktemp("ckpt_data"))


def _kill_resume_args(data: Path, out: Path) -> list[str]:
    # dropout on: equality after resume needs the restored RNG state too
    return overrides(data, out, "train.max_steps=24", "train.checkpoint_every=4", "train.keep_last=2",
                     "train.eval_every=8", dropout=0.1)


def _popen(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / "pretrain.py"), *args], cwd=REPO,
                            env=cpu_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory) -> Path:
    """An uninterrupted 24-step run (checkpoints every 4 steps, keep_last 2)."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    p = _popen(_kill_resume_args(data, out))
    _, err = p.communicate(timeout=400)
    assert p.returncode == 0, err[-3000:]
    return out


@pytest.mark.slow
def test_sigkill_and_resume_logs_the_same_losses(data, finished_run, tmp_path):
    out = tmp_path / "killed"
    args = _kill_resume_args(data, out)
    p = _popen([*args, "wandb.mode=offline"])
    first = out / "checkpoints" / "step_4" / "meta.json"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if first.exists() and json.loads(first.read_text()).get("complete"):
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = max(r["step"] for r in metrics(out))
    assert 4 <= killed_at < 24
    run_id = (out / "wandb_run_id").read_text().strip()

    r = subprocess.run([sys.executable, str(REPO / "scripts" / "pretrain.py"), *args, "wandb.mode=offline"],
                       cwd=REPO, env=cpu_env(), capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    # the resumed run continues the killed run's wandb run (same id) instead of starting a new one
    assert (out / "wandb_run_id").read_text().strip() == run_id
    assert [d.name.endswith(run_id) for d in (out / "wandb").glob("offline-run-*")] == [True, True]
    resumed, ref = metrics(out), metrics(finished_run)
    assert [x["step"] for x in resumed] == list(range(1, 25))  # no duplicates, nothing missing
    for a, b in zip(resumed, ref):
        for key in ("loss", "mlm_loss", "nsp_loss", "mlm_acc", "nsp_acc", "lr", "samples", "tokens",
                    "eval/mlm_loss", "eval/nsp_acc"):
            assert a.get(key) == b.get(key), (a["step"], key, a.get(key), b.get(key))
    assert abs(resumed[-1]["grad_norm"] - ref[-1]["grad_norm"]) <= 1e-6 * ref[-1]["grad_norm"]
    # keep_last 2 (step dirs only; no leftovers of the killed save)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step_20", "step_24"], names


def test_checkpoint_layout_and_meta(finished_run):
    from zhbert.train import checkpoint as ck

    step = finished_run / "checkpoints" / "step_24"
    assert ck.check_complete(step) is None
    meta = ck.read_meta(step)
    assert list(meta)[-1] == "complete" and meta["complete"] is True
    assert meta["step"] == 24 and meta["world_size"] == 1 and meta["samples_seen"] == 48
    pos = meta["data_position"]
    assert pos["epoch"] * meta["batches_per_epoch"] + pos["batch_index"] == 24  # 24 global micro-batches read
    assert set(meta["versions"]) >= {"zhbert", "torch", "deepspeed", "transformers"}
    assert meta["config"]["train"]["max_steps"] == 24 and meta["tokens_seen"] > 0
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        assert (step / "hf" / name).is_file()
    # the corpus normalisation of the training data travels with the export (for fine-tuning)
    from zhbert.prep.tokenizer import ChineseTokenizer

    assert ChineseTokenizer.from_dir(step / "hf").normalization == {"fullwidth": True, "t2s": False}
    assert (step / "ds" / meta["ds_tag"]).is_dir() and (step / "rng" / "rank_0.pt").is_file()


def test_corrupt_newest_checkpoint_falls_back_with_warning(finished_run, tmp_path):
    from zhbert.train import checkpoint as ck

    root = tmp_path / "checkpoints"
    shutil.copytree(finished_run / "checkpoints", root)
    assert ck.find_latest(root).name == "step_24"
    # a truncated DeepSpeed file in the newest
    model_file = next((root / "step_24" / "ds" / "global_step24").glob("*model_states.pt"))
    model_file.write_bytes(model_file.read_bytes()[:100])
    with pytest.warns(UserWarning, match="step_24.*truncated"):
        assert ck.find_latest(root).name == "step_20"
    # a save killed before meta.json was marked complete
    meta = json.loads((root / "step_20" / "meta.json").read_text())
    meta["complete"] = False
    (root / "step_20" / "meta.json").write_text(json.dumps(meta))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ck.find_latest(root) is None
    assert any("step_20" in str(w.message) and "not marked complete" in str(w.message) for w in caught)
    shutil.rmtree(root / "step_20" / "hf")
    with pytest.warns(UserWarning):
        assert ck.resolve_resume("auto", tmp_path) is None
    assert ck.resolve_resume("never", finished_run) is None
    assert ck.resolve_resume("auto", finished_run).name == "step_24"


def test_export_loads_in_transformers_with_same_logits(finished_run, tmp_path):
    import torch
    import transformers

    from zhbert.train import checkpoint as ck
    from zhbert.cli import main
    from zhbert.model.modeling import BertForPreTraining

    out = tmp_path / "export"
    assert main(["export", str(finished_run / "checkpoints" / "step_24"), str(out)]) == 0
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file()
    ours = BertForPreTraining.from_pretrained(out).eval()
    hf = transformers.BertForPreTraining.from_pretrained(out).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    enc = tok(["今天天气很好。", "长江是中国第一长河"], ["我们去公园。", "全长约6300公里"], padding=True,
              return_tensors="pt")
    with torch.no_grad():
        a = ours(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        b = hf(**enc)
    mask = enc["attention_mask"].bool()
    assert torch.allclose(a.prediction_logits[mask], b.prediction_logits[mask], atol=1e-4)
    assert torch.allclose(a.seq_relationship_logits, b.seq_relationship_logits, atol=1e-5)
    # export from the DeepSpeed state alone (no hf/) gives the same weights
    bare = tmp_path / "bare"
    shutil.copytree(finished_run / "checkpoints" / "step_24", bare)
    shutil.rmtree(bare / "hf")
    out2 = ck.export(bare, tmp_path / "export2")
    _assert_same_weights(out, out2)
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "x")]) == 2


def _assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    from safetensors.torch import load_file

    sa, sb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert set(sa) == set(sb)
    for k in sa:
        assert (sa[k] - sb[k]).abs().max().item() <= atol, k


@pytest.mark.slow
def test_zero3_export_and_universal_checkpoint_world_size_change(data, tmp_path):
    """2 ranks: ZeRO-3 (HF export via gathered params == zero_to_fp32 consolidation); ZeRO-1 and
    ZeRO-2 saved at step 3 -> universal checkpoint -> resumed on 1 rank."""
    import torch

    from zhbert.train import checkpoint as ck
    from zhbert.cli import main
    from zhbert.train.collator import PretrainingCollator
    from zhbert.config import MaskingConfig
    from zhbert.train.order import ShardedBatches
    from zhbert.train.masking import VocabInfo
    from zhbert.model.modeling import BertForPreTraining
    from zhbert.prep.prepare import load_prepared
    from zhbert.prep.tokenizer import ChineseTokenizer

    z3 = tmp_path / "zero3"
    zs = {stage: tmp_path / f"zero{stage}" for stage in (1, 2)}
    spawn_train(2, [overrides(data, z3, "deepspeed.zero_stage=3", "train.max_steps=2"),
                    *[overrides(data, out, f"deepspeed.zero_stage={stage}", "train.max_steps=3")
                      for stage, out in zs.items()]])
    step = z3 / "checkpoints" / "step_2"
    assert ck.check_complete(step) is None
    assert list((step / "ds" / "global_step2").glob("zero_pp_rank_1_*"))  # sharded state
    bare = tmp_path / "z3bare"
    shutil.copytree(step, bare)
    shutil.rmtree(bare / "hf")
    _assert_same_weights(step / "hf", ck.export(bare, tmp_path / "z3export"))
    # a bare DeepSpeed folder (no meta.json, no hf/): the model config comes from the model states
    _assert_same_weights(step / "hf", ck.export(bare / "ds", tmp_path / "z3export_bare",
                                                tokenizer_dir=step / "hf"))
    assert (tmp_path / "z3export_bare" / "vocab.txt").exists()

    # universal checkpoint: convert, then resume with 1 rank (same ZeRO stage)
    jobs = []
    for stage, out in zs.items():
        saved = out / "checkpoints" / "step_3"
        if stage == 1:
            uni = ck.to_universal(saved)
        else:  # the CLI
            assert main(["universal", str(saved)]) == 0
            uni = saved / "ds" / "global_step3_universal"
        assert uni.is_dir() and ck.read_meta(saved)["ds_universal_tag"] == uni.name
        jobs.append(overrides(data, out, f"deepspeed.zero_stage={stage}", "train.max_steps=5",
                              f"train.resume={saved}", "train.resume_universal=true"))
    spawn_train(1, jobs)
    tok = ChineseTokenizer.from_dir(data)
    sb = ShardedBatches(load_prepared(data)["train"],
                        PretrainingCollator(VocabInfo.from_tokenizer(tok), MaskingConfig(strategy="wwm"), 64),
                        seed=42, rank=0, world_size=1, micro_batch_size=2)
    for stage, out in zs.items():
        recs = metrics(out)
        assert [r["step"] for r in recs] == [1, 2, 3, 4, 5]
        assert recs[3]["samples"] == recs[2]["samples"] + 2  # 1 rank x micro 2 from here on
        # the step-4 loss (before its update) is the saved weights' loss on that batch: weights loaded exactly
        meta = ck.read_meta(out / "checkpoints" / "step_5")  # its data position is 2 batches past step 4's
        pos = sb.position(sb.linear(type(sb.position(0)).from_dict(meta["data_position"])) - 2)
        assert (pos.epoch, pos.batch_index) == (0, 3 * 4 // 2)  # 3 steps x 4 instances, rescaled to G=2
        model = BertForPreTraining.from_pretrained(out / "checkpoints" / "step_3" / "hf").eval()
        with torch.no_grad():
            loss = model(**sb.batch(pos.epoch, pos.batch_index)).loss.item()
        assert recs[3]["loss"] == pytest.approx(loss, rel=1e-5), stage
        assert recs[4]["loss"] < recs[0]["loss"] + 0.5  # continues sensibly
    # without the conversion flag a different world size is refused with instructions
    with pytest.raises(Exception, match="was saved by 2 ranks, this run has 1"):
        spawn_train(1, [overrides(data, tmp_path / "zero1", "deepspeed.zero_stage=1", "train.max_steps=6",
                                  f"train.resume={zs[1] / 'checkpoints' / 'step_3'}")])


@pytest.mark.slow
def test_init_from_hf_checkpoint_continues_from_its_weights(data, finished_run, tmp_path):
    import torch

    from zhbert.train.collator import PretrainingCollator
    from zhbert.config import MaskingConfig
    from zhbert.train.order import ShardedBatches
    from zhbert.train.masking import VocabInfo
    from zhbert.model.modeling import BertForPreTraining
    from zhbert.prep.prepare import load_prepared
    from zhbert.prep.tokenizer import ChineseTokenizer

    hf = finished_run / "checkpoints" / "step_24" / "hf"
    out = tmp_path / "phase2"
    again = tmp_path / "again"  # train.resume=never in a used output_dir
    shutil.copytree(finished_run, again, ignore=shutil.ignore_patterns("wandb"))
    # a step_<N> dir stands for its hf/ export
    spawn_train(1, [overrides(data, out, f"model.init_from={hf.parent}", "train.max_steps=2"),
                    overrides(data, again, "train.resume=never", "train.max_steps=2", "train.keep_last=2")])
    assert [r["step"] for r in metrics(again)] == [1, 2]
    assert sorted(p.name for p in (again / "checkpoints").iterdir()) == ["step_2"]
    (prev,) = again.glob("checkpoints.prev-*")
    assert sorted(p.name for p in prev.iterdir()) == ["step_20", "step_24"]  # kept, not pruned
    assert len(list(again.glob("metrics.prev-*.jsonl"))) == 1
    tok = ChineseTokenizer.from_dir(data)
    sb = ShardedBatches(load_prepared(data)["train"],
                        PretrainingCollator(VocabInfo.from_tokenizer(tok), MaskingConfig(strategy="wwm"), 64),
                        seed=42, rank=0, world_size=1, micro_batch_size=2)
    model = BertForPreTraining.from_pretrained(hf).eval()
    with torch.no_grad():
        loss = model(**sb.batch(0, 0)).loss.item()
    first = metrics(out)[0]
    assert first["step"] == 1 and first["loss"] == pytest.approx(loss, rel=1e-5)
    assert first["loss"] < metrics(finished_run)[0]["loss"] - 0.5  # starts from trained weights


def test_plot_writes_pngs(finished_run, tmp_path):
    from zhbert.cli import main

    assert main(["plot", str(finished_run), "--out", str(tmp_path / "plots")]) == 0
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["accuracy.png", "loss.png", "lr.png"]
    for p in (tmp_path / "plots").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert main(["plot", str(tmp_path / "empty")]) == 2  # no metrics.jsonl: clear error


def test_truncate_metrics_drops_later_and_cut_lines(tmp_path):
    from zhbert.train.metrics import truncate_metrics

    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "loss": 3}\n{"step": 2, "loss": 2}\n{"step": 3, "loss": 1}\n{"step": 4, "lo')
    truncate_metrics(p, 2)
    assert p.read_text() == '{"step": 1, "loss": 3}\n{"step": 2, "loss": 2}\n'


@pytest.mark.slow
def test_resume_on_two_ranks_zero2_and_zero3_continues_identically(data, tmp_path):
    """Resume from step 2 of a 2-rank run (ZeRO-2, ZeRO-3, fp32): steps 3-4 log the same as the
    uninterrupted run (optimizer shards, LR schedule and data position restored)."""
    jobs, pairs = [], []
    for stage in (2, 3):
        full, resumed = tmp_path / f"full{stage}", tmp_path / f"resumed{stage}"
        common = (f"deepspeed.zero_stage={stage}", "train.checkpoint_every=2", "train.keep_last=5")
        jobs += [overrides(data, full, *common, "train.max_steps=4"),
                 overrides(data, resumed, *common, "train.max_steps=4",
                           f"train.resume={full / 'checkpoints' / 'step_2'}")]
        pairs.append((full, resumed))
    spawn_train(2, jobs)
    for full, resumed in pairs:
        a, b = metrics(full)[2:], metrics(resumed)
        assert [r["step"] for r in b] == [3, 4]
        for x, y in zip(a, b):
            for key in ("loss", "mlm_loss", "nsp_loss", "lr", "samples", "mlm_acc"):
                assert x[key] == y[key], (full.name, x["step"], key, x[key], y[key])
