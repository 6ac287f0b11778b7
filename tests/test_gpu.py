"""GPU checks: what CPU CI cannot test (``pytest -m gpu tests/test_gpu.py``).

Every test here is marked ``gpu`` and skipped without CUDA, so the CPU suite collects them and
skips them in a second. ``benchmarks/gpu_check.sh`` runs them on a GPU machine together with
the BERT-base MFU benchmark and writes one JSON report (docs/benchmarks.md, "GPU checks").
Written without a GPU to run on (none has been lent to this project's sessions yet): untested.

1. bf16 under DeepSpeed (the trainer's derived config): weights in bf16, finite losses that
   fall over a few steps.
2. fp16 with dynamic loss scaling: a forced fp16 gradient overflow is skipped (weights
   unchanged, ``skipped_steps`` counted) and the loss scale halves; the next normal step applies.
3. The fused optimizer (DeepSpeed FusedAdam: ``torch_adam: false``, the CUDA default) gives the
   losses and updates of torch's AdamW.
4. The SDPA flash path: the model's attention in bf16 under the FLASH_ATTENTION kernel only (no
   padding) and the memory-efficient kernel (padding mask) equals the MATH kernel within bf16
   tolerance, values and gradients; the whole model with PyTorch's own kernel choice too.
5. The real entry point (``scripts/pretrain.py``'s ``main``) on one GPU: NCCL process group of
   world size 1 created by zhbert's launcher code, bf16 and fp16 (the logged loss scale), a few
   steps, metrics, a checkpoint.

The in-process tests share one NCCL process group (world size 1, module fixture); test 5 runs
in a fresh subprocess so that the entry point creates its own.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from _pretrain_fixtures import REPO, build_data, cpu_env, metrics, overrides  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run by benchmarks/gpu_check.sh)"),
]

VOCAB = 1000
# L2 H128 A2 (head dim 64, as BERT-base's: every SDPA kernel takes it) I512, no dropout: runs
# with the same weights and batches are then comparable step by step.
SMALL = dict(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=512, max_position_embeddings=128, hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0)
CLS, SEP, MASK = 2, 3, 4  # any ids < 5 (the random tokens are drawn from [5, VOCAB))


# ------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def nccl():
    """One NCCL process group (world size 1) made by zhbert's launcher code, on GPU 0. The
    environment and DeepSpeed's accelerator are restored afterwards, for tests that follow in
    the same session (the rest of the suite runs DeepSpeed on CPU: tests/conftest.py)."""
    keys = ("DS_ACCELERATOR", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    saved_env = {k: os.environ.get(k) for k in keys}
    import deepspeed.accelerator.real_accelerator as real
    from deepspeed.accelerator import set_accelerator

    saved_accel = getattr(real, "ds_accelerator", None)  # None: not resolved yet
    os.environ["DS_ACCELERATOR"] = "cuda"  # tests/conftest.py defaults it to cpu
    if saved_accel is not None and saved_accel.device_name() != "cuda":  # resolved to CPU earlier
        from deepspeed.accelerator.cuda_accelerator import CUDA_Accelerator

        set_accelerator(CUDA_Accelerator())
    from zhbert.train.launch import setup_env, start_distributed

    setup_env()
    dist_ = start_distributed()
    import torch.distributed as dist

    assert dist_.device_type == "cuda" and dist.get_backend() == "nccl" and dist_.world == 1
    yield dist_
    dist_.close()
    for k, v in saved_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if saved_accel is not None:
        set_accelerator(saved_accel)
    elif hasattr(real, "ds_accelerator"):
        real.ds_accelerator = None  # resolved afresh (from DS_ACCELERATOR) by the next user


def _batches(n: int, device, batch_size: int = 8, seq_len: int = 64, seed: int = 0,
             padded: bool = True) -> list[dict]:
    """``n`` MLM batches in the collator's layout (right padding, [CLS] first, 15% labels, the
    labelled tokens replaced by [MASK]); row 0 is full length, the others shorter when ``padded``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lengths = torch.randint(seq_len // 2, seq_len + 1, (batch_size,), generator=g) if padded \
            else torch.full((batch_size,), seq_len)
        lengths[0] = seq_len
        pos = torch.arange(seq_len)
        mask = (pos[None, :] < lengths[:, None]).long()
        ids = torch.randint(5, VOCAB, (batch_size, seq_len), generator=g) * mask
        ids[:, 0] = CLS
        ids[torch.arange(batch_size), lengths - 1] = SEP
        pick = (torch.rand(batch_size, seq_len, generator=g) < 0.15) & mask.bool() & (ids >= 5)
        pick[:, 1] = True  # at least one label per row
        labels = torch.where(pick, ids, torch.full_like(ids, -100))
        ids = torch.where(pick, torch.full_like(ids, MASK), ids)
        out.append({"input_ids": ids.to(device), "attention_mask": mask.to(device),
                    "token_type_ids": torch.zeros_like(ids).to(device), "labels": labels.to(device),
                    "next_sentence_label": torch.randint(0, 2, (batch_size,), generator=g).to(device)})
    return out


def _model(seed: int = 0, **shape):
    from zhbert.model.modeling import BertConfig, BertForPreTraining

    torch.manual_seed(seed)
    return BertForPreTraining(BertConfig(**{**SMALL, **shape}))


def _engine(*overrides_: str, seed: int = 0, device_type: str = "cuda"):
    """A DeepSpeed engine over ``_model(seed)`` with the DeepSpeed JSON the trainer derives from
    these config overrides (constant lr: the derived LR scheduler is left out)."""
    import deepspeed

    from zhbert.config import load_config
    from zhbert.train.ds_config import build_ds_config
    from zhbert.train.trainer import _param_groups

    cfg = load_config(None, ["train.micro_batch_size=8", "train.lr=1e-3", "train.clip_grad_norm=1.0",
                             *overrides_])
    ds = build_ds_config(cfg, 1, device_type, hidden_size=SMALL["hidden_size"])
    ds.pop("scheduler", None)
    model = _model(seed)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=_param_groups(model, cfg.train.weight_decay),
                                      config=ds)
    return engine


def _step(engine, batch, loss_factor: float = 1.0) -> float:
    out = engine(**batch)
    engine.backward(out.loss.float() * loss_factor if loss_factor != 1.0 else out.loss)
    engine.step()
    return float(out.loss.detach().float())


def _params(engine) -> list:
    return [p.detach().float().clone() for p in engine.module.parameters()]


def _loss_scale(engine) -> float:
    """The dynamic loss scale of DeepSpeed's fp16 optimizer (attribute names vary by version)."""
    opt = engine.optimizer
    for get in (lambda: opt.loss_scale_config.cur_scale, lambda: opt.cur_scale, lambda: opt.loss_scale):
        try:
            value = get()
        except AttributeError:
            continue
        if value is not None:
            return float(value)
    raise AssertionError(f"no loss scale on {type(opt).__name__}")


def _rel(a, b) -> float:
    """||a - b|| / ||b|| over tensors or lists of tensors (float64)."""
    a = a if isinstance(a, (list, tuple)) else [a]
    b = b if isinstance(b, (list, tuple)) else [b]
    num = math.sqrt(sum(float((x.double() - y.double()).pow(2).sum()) for x, y in zip(a, b)))
    den = math.sqrt(sum(float(y.double().pow(2).sum()) for y in b))
    return num / max(den, 1e-30)


def _falls(losses: list[float], by: float) -> bool:
    k = max(1, len(losses) // 4)
    return sum(losses[-k:]) / k < sum(losses[:k]) / k - by


# ------------------------------------------------------------------------------ 1. bf16


def test_bf16_training_under_deepspeed(nccl):
    engine = _engine("deepspeed.precision=bf16", "deepspeed.torch_adam=true")
    assert engine.bfloat16_enabled() and not engine.fp16_enabled()
    assert {p.dtype for p in engine.module.parameters()} == {torch.bfloat16}
    assert next(engine.module.parameters()).device.type == "cuda"
    batches = _batches(2, nccl.device)
    losses = [_step(engine, batches[i % 2]) for i in range(24)]
    assert all(math.isfinite(x) for x in losses), losses
    assert _falls(losses, by=0.5), f"bf16 loss does not fall: {losses}"
    assert losses[0] == pytest.approx(math.log(VOCAB) + math.log(2), abs=0.5)  # MLM + NSP ~uniform at init
    assert engine.skipped_steps == 0


# ------------------------------------------------------------------------------ 2. fp16


@pytest.mark.parametrize("torch_adam", [True, False], ids=["torch_adam", "fused_adam"])
def test_fp16_dynamic_loss_scaling_skips_an_overflow_and_halves_the_scale(nccl, torch_adam):
    # torch_adam -> DeepSpeed's FP16_UnfusedOptimizer, FusedAdam -> FP16_Optimizer: both wrappers
    engine = _engine("deepspeed.precision=fp16", f"deepspeed.torch_adam={str(torch_adam).lower()}")
    assert engine.fp16_enabled() and engine.dynamic_loss_scale()
    assert {p.dtype for p in engine.module.parameters()} == {torch.float16}
    batches = _batches(2, nccl.device)
    losses = []
    for i in range(16):  # the initial scale (2^16) may overflow a few times: those steps are skipped
        loss = _step(engine, batches[i % 2])
        if engine.was_step_applied():
            losses.append(loss)
    assert len(losses) >= 10, f"{16 - len(losses)} of 16 fp16 steps overflowed (scale now {_loss_scale(engine)})"
    assert all(math.isfinite(x) for x in losses) and _falls(losses, by=0.5), losses

    # A forced overflow: the loss times 1e20, taken in fp32, is finite, but its gradients are not
    # once they flow back into the fp16 model.
    scale, skipped, before = _loss_scale(engine), engine.skipped_steps, _params(engine)
    # DeepSpeed's ZeRO loss scaler waits `fp16.hysteresis` overflows (2 in the derived config)
    # before it halves; its plain fp16 optimizers halve at the first.
    hysteresis = 2
    for k in range(1, hysteresis + 1):
        _step(engine, batches[0], loss_factor=1e20)
        assert not engine.was_step_applied(), "an fp16 overflow step was applied"
        assert engine.skipped_steps == skipped + k
        assert all(torch.equal(a, b) for a, b in zip(before, _params(engine))), "skipped step changed weights"
        if _loss_scale(engine) != scale:
            break
    assert _loss_scale(engine) == scale / 2, f"loss scale {scale} -> {_loss_scale(engine)}, expected halved"

    loss = _step(engine, batches[1])
    assert engine.was_step_applied() and math.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(engine))), "normal step after overflow did nothing"


# ------------------------------------------------------------------------------ 3. fused optimizer


def test_fused_adam_matches_torch_adamw(nccl):
    from deepspeed.ops.adam import FusedAdam

    # fp32 so that only the optimizers differ; weight decay 0.1 so that Adam-with-L2 instead of
    # decoupled AdamW (adam_w_mode) would show in the updates.
    common = ("deepspeed.precision=fp32", "train.weight_decay=0.1")
    runs = {}
    for name, torch_adam in (("torch", "true"), ("fused", "false")):
        engine = _engine(*common, f"deepspeed.torch_adam={torch_adam}")
        inner = getattr(engine.optimizer, "optimizer", engine.optimizer)
        if name == "fused":
            assert isinstance(engine.optimizer, FusedAdam) or isinstance(inner, FusedAdam), type(engine.optimizer)
        else:
            assert isinstance(inner, torch.optim.AdamW) or isinstance(engine.optimizer, torch.optim.AdamW)
        init = _params(engine)
        losses = [_step(engine, b) for b in _batches(10, nccl.device, seed=1)]
        runs[name] = (losses, [p - q for p, q in zip(_params(engine), init)])
    (lt, dt), (lf, df) = runs["torch"], runs["fused"]
    assert all(math.isfinite(x) for x in lt + lf)
    assert lf == pytest.approx(lt, rel=1e-4), f"fused {lf} vs torch {lt}"
    assert _rel(df, dt) < 1e-3, f"FusedAdam's total update differs from AdamW's by {_rel(df, dt):.2e} (relative)"


# ------------------------------------------------------------------------------ 4. SDPA kernels


def _attention_run(attn, x, layout, backend):
    from torch.nn.attention import sdpa_kernel

    x = x.detach().clone().requires_grad_(True)
    attn.zero_grad(set_to_none=True)
    with sdpa_kernel([backend]):
        y = attn(x, layout)
        y.float().pow(2).sum().backward()  # any scalar that reaches every output
    grads = [x.grad] + [p.grad for p in (attn.query.weight, attn.key.weight, attn.value.weight)]
    return y.detach(), [g.detach() for g in grads]


@pytest.mark.parametrize("padded", [False, True], ids=["no_padding_flash", "padding_mem_efficient"])
def test_attention_bf16_kernels_match_the_math_path(nccl, padded):
    """Without padding the layout has no mask and SDPA may take FlashAttention, which we force
    (it raises when it cannot run, so passing proves the flash path ran); with padding the
    boolean mask rules FlashAttention out and the memory-efficient kernel runs (forced too)."""
    from torch.nn.attention import SDPBackend

    from zhbert.model.modeling import BertConfig, BertSelfAttention
    from zhbert.model.padding import unpad, unpad_mask

    assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=768, num_attention_heads=12, num_hidden_layers=1,
                     intermediate_size=3072, attention_probs_dropout_prob=0.0)  # BERT-base's attention
    torch.manual_seed(0)
    attn = BertSelfAttention(cfg).to(nccl.device, torch.bfloat16).eval()
    b = _batches(1, nccl.device, batch_size=16, seq_len=128, padded=padded)[0]
    bsz, t = b["input_ids"].shape
    layout = unpad_mask(b["attention_mask"], bsz, t, device=nccl.device)
    assert (layout.attn_mask is None) == (not padded)
    x = unpad(torch.randn(bsz, t, cfg.hidden_size, device=nccl.device, dtype=torch.bfloat16), layout)  # (N, H)

    fast = SDPBackend.EFFICIENT_ATTENTION if padded else SDPBackend.FLASH_ATTENTION
    y_fast, g_fast = _attention_run(attn, x, layout, fast)
    y_math, g_math = _attention_run(attn, x, layout, SDPBackend.MATH)
    assert torch.isfinite(y_fast).all() and all(torch.isfinite(g).all() for g in g_fast)
    # bf16 keeps 8 bits of mantissa (relative rounding 2^-9 = 0.2%): 1% / 3% leave room for
    # different summation orders but not for a wrong mask, scale or layout (those are O(1)).
    assert _rel(y_fast, y_math) < 1e-2, f"{fast.name} output vs MATH: {_rel(y_fast, y_math):.2e}"
    for name, gf, gm in zip(("x", "query", "key", "value"), g_fast, g_math):
        assert _rel(gf, gm) < 3e-2, f"{fast.name} grad of {name} vs MATH: {_rel(gf, gm):.2e}"


def test_model_bf16_default_kernels_match_the_math_path(nccl):
    """The whole model in bf16 (as DeepSpeed's bf16 mode holds it) with PyTorch's own kernel
    choice, as training runs it, against MATH: loss and every parameter's gradient."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = _model(0, hidden_size=768, num_attention_heads=12, intermediate_size=3072).to(nccl.device, torch.bfloat16)
    batches = _batches(1, nccl.device, batch_size=16, seq_len=128, seed=2, padded=True) + \
        _batches(1, nccl.device, batch_size=16, seq_len=128, seed=3, padded=False)

    def run(b):
        model.zero_grad(set_to_none=True)
        out = model(**b)
        out.loss.backward()
        return float(out.loss.detach().float()), [p.grad.detach().clone() for p in model.parameters()
                                                  if p.grad is not None]

    for b in batches:  # with padding (mask: memory-efficient or math) and without (flash may run)
        l_def, g_def = run(b)
        with sdpa_kernel([SDPBackend.MATH]):
            l_math, g_math = run(b)
        assert math.isfinite(l_def) and l_def == pytest.approx(l_math, rel=1e-2)
        assert _rel(g_def, g_math) < 5e-2, f"default kernels' gradients vs MATH: {_rel(g_def, g_math):.2e}"


# ------------------------------------------------------------------------------ 5. entry point, NCCL


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_data(tmp_path_factory.mktemp("gpu_data"))


_DRIVER = r"""
import json, sys
from pathlib import Path
import importlib.util

from zhbert.train.launch import setup_env
setup_env()
import torch.distributed as dist
import zhbert.train.trainer as trainer

seen = {}
real = trainer.start_distributed
def spy():  # record the process group the entry point creates
    d = real()
    seen.update(backend=dist.get_backend(), world=dist.get_world_size(), device=str(d.device),
                device_type=d.device_type, owns_pg=d.owns_pg)
    return d
trainer.start_distributed = spy

spec = importlib.util.spec_from_file_location("pretrain_script", Path("scripts/pretrain.py"))
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)
rc = script.main(sys.argv[1:])
print("GPU_CHECK " + json.dumps({"rc": rc, **seen}), flush=True)
sys.exit(rc)
"""


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_pretrain_entry_point_on_one_gpu_nccl(data, tmp_path, precision):
    out = tmp_path / "run"
    args = ["--config", "configs/pretrain/tiny.yaml",
            *overrides(data, out, "train.max_steps=8", "train.micro_batch_size=16", "train.eval_every=4",
                       "train.checkpoint_every=4", f"deepspeed.precision={precision}",
                       # torch's AdamW: FusedAdam (the CUDA default) has its own test above, so a
                       # failing build of its kernel does not hide the result of this one
                       "deepspeed.torch_adam=true")]
    env = cpu_env(DS_ACCELERATOR="cuda", CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", "0"))
    env.pop("OMP_NUM_THREADS", None)
    r = subprocess.run([sys.executable, "-c", _DRIVER, *args], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    tail = (r.stdout + r.stderr)[-4000:]
    assert r.returncode == 0, tail
    line = [x for x in r.stdout.splitlines() if x.startswith("GPU_CHECK ")]
    assert line, tail
    seen = json.loads(line[-1][len("GPU_CHECK "):])
    assert seen["backend"] == "nccl" and seen["world"] == 1 and seen["device_type"] == "cuda", seen
    assert seen["owns_pg"] is True  # the entry point created (and closed) the group itself

    ds = json.loads((out / "ds_config.json").read_text())
    assert ds[precision]["enabled"] is True and ds["train_batch_size"] == 16
    recs = [x for x in metrics(out) if "loss" in x]
    if precision == "fp16":  # the trainer records DeepSpeed's dynamic loss scale with every step
        scales = [x.get("loss_scale") for x in recs]
        assert all(isinstance(v, float) and math.isfinite(v) and v >= 1 for v in scales), scales
    assert [x["step"] for x in recs][-1] == 8
    assert all(x["loss"] is not None and math.isfinite(x["loss"]) for x in recs), recs
    assert not any(x.get("nonfinite") for x in recs)
    assert any(x.get("eval/mlm_acc") is not None for x in recs)
    last = [x for x in recs if x.get("tokens_per_s")][-1]
    assert last["tokens_per_s"] > 0
    from zhbert.train.metrics import _PEAK_TFLOPS

    if any(k in torch.cuda.get_device_name() for k in _PEAK_TFLOPS):  # a known GPU: MFU is reported
        assert 0 < last["mfu"] < 1, last
    assert (out / "checkpoints" / "step_8" / "hf" / "model.safetensors").is_file()
