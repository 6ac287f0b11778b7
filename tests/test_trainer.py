"""Trainer tests: DeepSpeed (gloo, CPU) against a plain single-process torch loop.

The reference loop below is written from the definitions, not from DeepSpeed: the gradient of
one optimizer step is the mean over ranks and accumulation steps of each micro-batch's loss
gradient, clipped to norm 1, applied by torch's AdamW (no decay on biases / LayerNorm) with the
lr the run logged for that step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zhbert.train.ds_config import AUTOCAST_MIN_DEEPSPEED, _deepspeed_version
from _pretrain_fixtures import REPO, build_data, metrics, overrides, run_script, spawn_train


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_data(tmp_path_factory.mktemp("pretrain_data"))


# ------------------------------------------------------------------------------ reference


def reference_losses(data: Path, run: Path, *, world: int, gas: int, micro: int, seed: int = 42,
                     autocast: bool = False) -> list[float]:
    """The run's per-step losses recomputed by a plain torch loop (same init, data, masks and
    lrs); ``autocast``: its forward under ``torch.autocast("cpu", torch.bfloat16)``."""
    import torch

    from zhbert.train.collator import PretrainingCollator
    from zhbert.config import MaskingConfig
    from zhbert.train.order import ShardedBatches
    from zhbert.train.masking import VocabInfo
    from zhbert.model.modeling import BertConfig, BertForPreTraining
    from zhbert.prep.prepare import load_prepared
    from zhbert.prep.tokenizer import ChineseTokenizer

    recs = metrics(run)
    lrs = [r["lr"] for r in recs]
    config = BertConfig.from_pretrained(run / "checkpoints" / f"step_{len(recs)}" / "hf")
    torch.manual_seed(seed)
    model = BertForPreTraining(config)
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lrs[0], betas=(0.9, 0.999), eps=1e-6)
    tok = ChineseTokenizer.from_dir(data)
    collator = PretrainingCollator(VocabInfo.from_tokenizer(tok), MaskingConfig(strategy="wwm"), 64)
    train = load_prepared(data)["train"]
    shards = [ShardedBatches(train, collator, seed=seed, rank=r, world_size=world, micro_batch_size=micro)
              for r in range(world)]
    losses, g = [], 0
    for lr in lrs:
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        total = 0.0
        for _ in range(gas):
            for r in range(world):
                pos = shards[r].position(g)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    out = model(**shards[r].batch(pos.epoch, pos.batch_index))
                (out.loss / (gas * world)).backward()
                total += out.loss.item()
            g += 1
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(total / (gas * world))
    return losses


def _close(a: list[float], b: list[float], rel: float) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= rel * abs(y) for x, y in zip(a, b))


GOLDEN = Path(__file__).resolve().parent / "golden"


def _check_golden(name: str, losses: list[float], rel: float = 1e-4) -> None:
    """Per-step losses of a fixed tiny run vs tests/golden/<name>.json (torchtitan style).

    The golden file pins the whole upstream pipeline (vocab build, prepare, masking, model
    init). After an intended change there, regenerate with ZHBERT_UPDATE_GOLDEN=1.
    """
    import os

    path = GOLDEN / f"{name}.json"
    if os.environ.get("ZHBERT_UPDATE_GOLDEN") == "1" or not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"losses": losses}, indent=1) + "\n")
        return
    golden = json.loads(path.read_text())["losses"]
    assert _close(losses, golden, rel), (f"losses {losses} differ from {path} {golden}; if the change upstream "
                                         "is intended, rerun with ZHBERT_UPDATE_GOLDEN=1")


# ------------------------------------------------------------------------------ ds_config


def _cfg(*ov: str):
    from zhbert.config import load_config

    return load_config(None, list(ov))


def test_ds_config_mapping():
    from zhbert.train.ds_config import build_ds_config
    from zhbert.errors import ConfigError

    ds = build_ds_config(_cfg("train.micro_batch_size=8", "train.gradient_accumulation_steps=4",
                              "train.clip_grad_norm=0.5", "deepspeed.zero_stage=2"), 4, "cpu")
    assert ds["train_batch_size"] == 8 * 4 * 4 and ds["train_micro_batch_size_per_gpu"] == 8
    assert ds["gradient_accumulation_steps"] == 4 and ds["gradient_clipping"] == 0.5
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["optimizer"]["type"] == "AdamW" and ds["optimizer"]["params"]["torch_adam"] is True
    assert ds["optimizer"]["params"]["weight_decay"] == 0.01
    assert ds["scheduler"]["type"] == "WarmupDecayLR" and ds["scheduler"]["params"]["total_num_steps"] == 300
    assert "bf16" not in ds and "fp16" not in ds and "checkpoint" not in ds
    assert ds["steps_per_print"] >= 10**6 and "wandb" not in ds

    ds = build_ds_config(_cfg("deepspeed.precision=bf16", "train.decay=cosine", "train.min_lr_ratio=0.1",
                              "deepspeed.zero_stage=3", "deepspeed.offload_param=cpu",
                              "deepspeed.offload_optimizer=cpu", "train.resume_universal=true",
                              "deepspeed.extra={zero_optimization: {stage3_max_live_parameters: 1000}, foo: 1}"),
                         8, "cuda")
    assert ds["bf16"] == {"enabled": True}
    assert ds["scheduler"]["type"] == "WarmupCosineLR" and ds["scheduler"]["params"]["cos_min_ratio"] == 0.1
    z = ds["zero_optimization"]
    assert z["stage"] == 3 and z["offload_param"]["device"] == "cpu" and z["offload_optimizer"]["device"] == "cpu"
    assert z["stage3_max_live_parameters"] == 1000 and ds["foo"] == 1  # extra merged last, recursively
    assert ds["checkpoint"] == {"load_universal": True}
    assert ds["optimizer"]["params"]["torch_adam"] is False  # fused Adam on CUDA

    ds = build_ds_config(_cfg("deepspeed.precision=fp16", "train.decay=constant"), 1, "cuda")
    assert ds["fp16"]["enabled"] and ds["fp16"]["loss_scale"] == 0.0 and ds["scheduler"]["type"] == "WarmupLR"
    assert build_ds_config(_cfg("deepspeed.optimizer=lamb"), 1, "cuda")["optimizer"]["type"] == "Lamb"
    with pytest.raises(ConfigError, match="lamb needs CUDA"):
        build_ds_config(_cfg("deepspeed.optimizer=lamb"), 1, "cpu")
    with pytest.raises(ConfigError, match="fp16"):
        build_ds_config(_cfg("deepspeed.precision=fp16"), 1, "cpu")


def test_every_pretrain_config_loads():
    from zhbert.config import load_config
    from zhbert.train.ds_config import build_ds_config

    files = sorted((REPO / "configs" / "pretrain").glob("*.yaml"))
    assert {f.stem for f in files} >= {"tiny", "small", "base_phase1", "base_phase2", "large"}
    for f in files:
        cfg = load_config(f)
        build_ds_config(cfg, 8, "cuda")
    p1, p2 = load_config(REPO / "configs/pretrain/base_phase1.yaml"), load_config(REPO / "configs/pretrain/base_phase2.yaml")
    assert (p1.data.max_seq_length, p2.data.max_seq_length) == (128, 512)
    assert p2.data.dir != p1.data.dir
    assert p2.model.init_from == f"{p1.train.output_dir}/checkpoints/step_{p1.train.max_steps}/hf"
    assert load_config(REPO / "configs/pretrain/tiny.yaml").train.output_dir


def test_data_order_is_disjoint_across_ranks(data):
    from zhbert.train.collator import PretrainingCollator
    from zhbert.config import MaskingConfig
    from zhbert.train.order import ShardedBatches
    from zhbert.train.masking import VocabInfo
    from zhbert.prep.prepare import load_prepared
    from zhbert.prep.tokenizer import ChineseTokenizer

    ds = load_prepared(data)["train"]
    col = PretrainingCollator(VocabInfo.from_tokenizer(ChineseTokenizer.from_dir(data)), MaskingConfig(), 64)
    ranks = [ShardedBatches(ds, col, seed=7, rank=r, world_size=3, micro_batch_size=2) for r in range(3)]
    n = ranks[0].batches_per_epoch
    assert n == len(ds) // 6
    seen = [i for b in range(n) for sb in ranks for i in sb.indices(0, b)]
    assert len(seen) == len(set(seen)) == n * 6  # every rank reads distinct rows
    assert list(ranks[1].indices(1, 0)) != list(ranks[1].indices(0, 0))  # reshuffled per epoch
    # same (seed, epoch, rank, batch) -> same batch, masks included
    a, b = ranks[2].batch(1, 3), ranks[2].batch(1, 3)
    assert all((a[k] == b[k]).all() for k in a)


# ------------------------------------------------------------------------------ DeepSpeed runs


@pytest.mark.slow
def test_zero_stages_match_each_other_and_plain_torch(data, tmp_path):
    """ZeRO 0/1/2/3 on 2 ranks, fp32: the same per-step losses, equal to the plain torch loop."""
    runs = {s: tmp_path / f"zero{s}" for s in (0, 1, 2, 3)}
    spawn_train(2, [overrides(data, runs[s], f"deepspeed.zero_stage={s}") for s in runs])
    losses = {s: [r["loss"] for r in metrics(out)] for s, out in runs.items()}
    assert len(losses[0]) == 4
    ref = reference_losses(data, runs[0], world=2, gas=1, micro=2)
    assert losses[0][0] == pytest.approx(ref[0], rel=1e-6)  # same init, data and masks
    for s in runs:
        assert _close(losses[s], losses[0], 1e-5), (s, losses[s], losses[0])
        assert _close(losses[s], ref, 1e-5), (s, losses[s], ref)
    assert losses[0][-1] < losses[0][0]  # it learns
    _check_golden("zero_2ranks_fp32", losses[0])
    lrs = [r["lr"] for r in metrics(runs[0])]
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(2e-3)  # warmup 2 steps, then peak lr


@pytest.mark.slow
def test_accumulation_bf16_metrics_and_wandb(data, tmp_path):
    gas, big, bf16 = tmp_path / "gas2x2", tmp_path / "micro4", tmp_path / "bf16"
    workers = tmp_path / "workers"
    spawn_train(1, [
        overrides(data, gas, "train.gradient_accumulation_steps=2"),
        overrides(data, workers, "train.gradient_accumulation_steps=2", "train.dataloader_workers=2"),
        overrides(data, big, "train.micro_batch_size=4"),
        overrides(data, bf16, "deepspeed.precision=bf16", "wandb.mode=offline", "train.eval_every=2",
                  "wandb.tags=[test]"),
    ])
    # accumulation 2 x micro 2 is the plain loop with the same accumulation ...
    assert _close([r["loss"] for r in metrics(gas)], reference_losses(data, gas, world=1, gas=2, micro=2), 1e-5)
    # DataLoader worker processes build the same batches in the same order
    assert [r["loss"] for r in metrics(workers)] == [r["loss"] for r in metrics(gas)]
    # ... and reads the same instances per step as micro 4 (masks differ: drawn per micro-batch)
    assert [r["samples"] for r in metrics(gas)] == [r["samples"] for r in metrics(big)] == [4, 8, 12, 16]
    assert _close([r["loss"] for r in metrics(gas)][:2], [r["loss"] for r in metrics(big)][:2], 0.05)

    recs = metrics(bf16)
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    for r in recs:
        for key in ("loss", "mlm_loss", "nsp_loss", "mlm_acc", "nsp_acc", "lr", "grad_norm", "tokens_per_s",
                    "samples_per_s", "tokens", "samples", "epoch"):
            assert key in r, key
        assert r["loss"] == pytest.approx(r["mlm_loss"] + r["nsp_loss"], rel=1e-2)  # bf16 sums
        assert 0 <= r["mlm_acc"] <= 1 and 0 <= r["nsp_acc"] <= 1 and r["grad_norm"] > 0
    assert recs[0]["loss"] == pytest.approx(metrics(big)[0]["loss"], rel=0.05)  # bf16 ~ fp32 at init
    for step in (2, 4):
        ev = recs[step - 1]
        assert {"eval/mlm_loss", "eval/mlm_acc", "eval/nsp_acc", "eval/nsp_loss"} <= set(ev)
    assert "eval/mlm_loss" not in recs[0]
    runs = list((bf16 / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert json.loads((bf16 / "ds_config.json").read_text())["bf16"] == {"enabled": True}
    assert (bf16 / "config.yaml").exists()


@pytest.mark.slow
@pytest.mark.skipif(_deepspeed_version() < AUTOCAST_MIN_DEEPSPEED, reason="DeepSpeed < 0.17.2: no torch_autocast")
@pytest.mark.parametrize("zero", [0, 2])  # 0: zhbert's own fp32 step; 2: DeepSpeed's ZeRO optimizer
def test_bf16_autocast_is_the_plain_autocast_loop_with_fp32_weights(data, tmp_path, zero):
    """deepspeed.autocast=bf16: the losses are the plain torch loop's with its forward under
    torch.autocast (bf16), not the fp32 loop's; weights, optimizer and export stay fp32."""
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "autocast"
    spawn_train(1, [overrides(data, out, "deepspeed.autocast=bf16", f"deepspeed.zero_stage={zero}")])
    got = [r["loss"] for r in metrics(out)]
    auto = reference_losses(data, out, world=1, gas=1, micro=2, autocast=True)
    fp32 = reference_losses(data, out, world=1, gas=1, micro=2)
    # ZeRO 0: the same steps exactly. ZeRO 1/2 reduce the nn.Linear gradients in the autocast
    # dtype (DeepSpeed's comm_dtype buckets), and their flat fp32 step differs slightly anyway
    assert _close(got, auto, 1e-6 if zero == 0 else 2e-5), (got, auto)
    # bf16 rounding shows (~1e-5 of a near-uniform initial loss here): autocast was on ...
    assert max(abs(x - y) / y for x, y in zip(got, fp32)) > 5e-6, (got, fp32)
    assert _close(got, fp32, 1e-3)  # ... and changes nothing else
    assert json.loads((out / "ds_config.json").read_text())["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    weights = load_file(str(out / "checkpoints" / "step_4" / "hf" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}


def test_autocast_settings_are_validated_in_one_line():
    from zhbert.config import load_config
    from zhbert.errors import ConfigError

    for ov, message in [(["deepspeed.autocast=bf16", "deepspeed.precision=bf16"],
                         "deepspeed.autocast autocast runs over fp32 weights: needs deepspeed.precision fp32, not bf16"),
                        (["deepspeed.autocast=fp8"], "deepspeed.autocast")]:
        with pytest.raises(ConfigError) as e:
            load_config(None, ov)
        assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


# ------------------------------------------------------------------------------ errors


def test_bad_config_key_exits_2_without_traceback(tmp_path):
    r = run_script(["train.bogus_key=1"], timeout=120)
    assert r.returncode == 2, r.stderr
    assert "unknown key train.bogus_key" in r.stderr and "Traceback" not in r.stderr


def test_incompatible_vocab_exits_2_naming_both(data, tmp_path):
    from zhbert.model.modeling import BertConfig, BertForPreTraining
    from zhbert.prep.tokenizer import ChineseTokenizer

    tok = ChineseTokenizer.from_dir(data)
    r = run_script(overrides(data, tmp_path / "a", "model.vocab_size=21128"), timeout=180)
    assert r.returncode == 2, r.stderr
    assert "incompatible vocabularies" in r.stderr and "21128" in r.stderr and str(tok.vocab_size) in r.stderr
    assert "Traceback" not in r.stderr

    # init_from a checkpoint whose vocab.txt has the same size but other tokens
    ck = tmp_path / "other"
    BertForPreTraining(BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=128,
                                  max_position_embeddings=128)).save_pretrained(ck)
    tokens = tok.tokens[:104] + list(reversed(tok.tokens[104:]))
    (ck / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    r = run_script(overrides(data, tmp_path / "b", f"model.init_from={ck}"), timeout=180)
    assert r.returncode == 2, r.stderr
    assert "incompatible vocabularies" in r.stderr and str(ck / "vocab.txt") in r.stderr
    assert str(data / "vocab.txt") in r.stderr and "Traceback" not in r.stderr


def test_mfu_flops_count_the_non_embedding_parameters():
    from zhbert.model.modeling import BertConfig, BertForPreTraining
    from zhbert.train.metrics import model_flops_per_token

    config = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=96)
    model = BertForPreTraining(config)
    n = sum(p.numel() for name, p in model.named_parameters()
            if name.startswith(("bert.encoder.", "bert.pooler.")))
    assert model_flops_per_token(config, 0) == 6 * n
    assert model_flops_per_token(config, 128) - model_flops_per_token(config, 0) == 12 * 3 * 64 * 128
