"""The time budget (train.max_minutes) and the budget-based LR schedule (train.schedule: time).

The runs use real DeepSpeed (CPU, gloo, one rank) with a fake clock injected into the trainer
(``train(cfg, clock=...)``): every optimizer step takes exactly 1 s of it, and every evaluation
pass and checkpoint write 100 s, which must not count. No sleeps. All runs of the module go
through ``scripts/pretrain.py``'s ``main`` in one child process (DeepSpeed's start-up is paid
once), and the tests read what they left behind.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _pretrain_fixtures import REPO, build_data, cpu_env, metrics, overrides, run_script

PEAK, MIN_RATIO, WARMUP = 2e-3, 0.1, 0.1
BUDGET_MIN = 0.5  # 30 s of fake training time = 30 steps
STEP_S, PAUSE_S = 1.0, 100.0


# ------------------------------------------------------------------------------ the schedule alone


def test_time_schedule_lr_at_budget_fractions():
    from types import SimpleNamespace

    from zhbert.train.schedule import TimeBudgetLR

    T = 600.0
    # hand-computed: warmup 0 -> 60 s from 0.1 x peak to peak, then decay to 0.1 x peak at 600 s
    # linear at 300 s: p = (0.5 - 0.1) / 0.9 = 4/9, ratio = 0.1 + 0.9 * 5/9 = 0.6
    # cosine at 300 s: ratio = 0.1 + 0.9 * (1 + cos(80 deg)) / 2 = 0.1 + 0.45 * 1.1736482 = 0.6281417
    expected = {
        "linear": {0.0: 2e-4, 30.0: 1.1e-3, 60.0: 2e-3, 300.0: 1.2e-3, 600.0: 2e-4, 900.0: 2e-4},
        "cosine": {0.0: 2e-4, 30.0: 1.1e-3, 60.0: 2e-3, 300.0: 2e-3 * 0.62814169, 600.0: 2e-4, 900.0: 2e-4},
        "constant": {0.0: 2e-4, 30.0: 1.1e-3, 60.0: 2e-3, 300.0: 2e-3, 600.0: 2e-3},
    }
    for decay, points in expected.items():
        opt = SimpleNamespace(param_groups=[{"lr": 9.0}, {"lr": 9.0}])
        s = TimeBudgetLR(PEAK, T, WARMUP, decay, MIN_RATIO)
        s.bind(opt)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([2e-4, 2e-4], rel=1e-12)
        for t, lr in points.items():
            s.set_elapsed(t)
            assert s.get_last_lr() == pytest.approx([lr, lr], rel=1e-7), (decay, t)
            assert [g["lr"] for g in opt.param_groups] == s.get_last_lr()
        s.step()  # DeepSpeed's call after an optimizer step: counts, the lr follows time only
        assert s.get_last_lr() == pytest.approx([points[600.0]] * 2, rel=1e-7)

    # state round trip: the step count and elapsed time come back, the lr with them
    s = TimeBudgetLR(PEAK, T, WARMUP, "linear", MIN_RATIO, optimizer=SimpleNamespace(param_groups=[{"lr": 0}]))
    s.set_elapsed(300.0)
    s.step()
    s.step()
    sd = s.state_dict()
    assert sd["last_batch_iteration"] == 2 and sd["elapsed_s"] == 300.0
    assert all(isinstance(v, (int, float, str, list)) for v in sd.values())  # weights-only loadable
    r = TimeBudgetLR(PEAK, T, WARMUP, "linear", MIN_RATIO, optimizer=SimpleNamespace(param_groups=[{"lr": 0}]))
    r.load_state_dict(sd)
    assert r.get_last_lr() == pytest.approx([1.2e-3]) and r.last_batch_iteration == 2
    r.load_state_dict({"last_batch_iteration": 7})  # a DeepSpeed step scheduler's state
    assert r.last_batch_iteration == 7 and r.elapsed_s == 300.0
    # no warmup: the peak at t = 0
    assert TimeBudgetLR(PEAK, T, 0.0, "linear", 0.0).get_last_lr() == [PEAK]


def test_training_clock_pauses_and_continues():
    from zhbert.train.schedule import TrainingClock

    now = [1000.0]
    c = TrainingClock(lambda: now[0], elapsed=12.0)
    assert c.elapsed() == 12.0 and not c.running  # not counting before start()
    now[0] += 5
    c.start()
    now[0] += 3
    assert c.elapsed() == 15.0
    with c.paused():
        now[0] += 50
    now[0] += 1
    assert c.elapsed() == 16.0


def test_ds_config_has_no_scheduler_for_schedule_time():
    from zhbert.config import load_config
    from zhbert.errors import ConfigError
    from zhbert.train.ds_config import build_ds_config

    cfg = load_config(None, ["train.schedule=time", "train.max_minutes=10"])
    assert "scheduler" not in build_ds_config(cfg, 1, "cpu")
    assert build_ds_config(load_config(None, []), 1, "cpu")["scheduler"]["type"] == "WarmupDecayLR"
    cfg = load_config(None, ["train.schedule=time", "train.max_minutes=10", "deepspeed.extra={scheduler: auto}"])
    assert "scheduler" not in build_ds_config(cfg, 1, "cpu")
    cfg = load_config(None, ["train.schedule=time", "train.max_minutes=10",
                             "deepspeed.extra={scheduler: {type: WarmupLR}}"])
    with pytest.raises(ConfigError, match="scheduler .*train.schedule"):
        build_ds_config(cfg, 1, "cpu")


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("ov, message", [
    (["train.schedule=time"], "train.schedule time needs train.max_minutes"),
    (["train.max_minutes=-1"], "train.max_minutes must be > 0"),
    (["train.max_minutes=0"], "train.max_minutes must be > 0"),
    (["train.schedule=time", "train.max_minutes=-5"], "train.max_minutes must be > 0"),
    (["train.schedule=hours", "train.max_minutes=5"], "train.schedule must be one of steps, time"),
    (["train.schedule=time", "train.max_minutes=5", "train.warmup_fraction=1"], "train.warmup_fraction must be in"),
    (["train.warmup_fraction=-0.1"], "train.warmup_fraction must be in"),
])
def test_budget_settings_are_validated_in_one_line(ov, message):
    from zhbert.config import load_config
    from zhbert.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config(None, ov)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_schedule_time_without_budget_exits_2_in_one_line():
    r = run_script(["train.schedule=time"], timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "train.schedule" in lines[0] and "train.max_minutes" in lines[0], r.stderr


# ------------------------------------------------------------------------------ real runs, fake clock


class FakeClock:
    def __init__(self, start: float):
        self.now = start

    def __call__(self) -> float:
        return self.now


def _drive(jobs_file: str, results_file: str) -> None:
    """Child process: every job through scripts/pretrain.py's main, one gloo process group."""
    import contextlib
    import functools
    import importlib.util
    import io
    import os
    import warnings

    from _pretrain_fixtures import free_port

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(free_port()))
    warnings.filterwarnings("ignore")
    import deepspeed
    import torch

    torch.set_num_threads(1)
    deepspeed.init_distributed(dist_backend="gloo")
    import zhbert.train.trainer as tr

    spec = importlib.util.spec_from_file_location("pretrain_script", REPO / "scripts" / "pretrain.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    real = {"train": tr.train, "train_step": tr.train_step, "save": tr.save, "evaluate": tr.evaluate}
    results = []
    for job in json.loads(Path(jobs_file).read_text()):
        clock = FakeClock(job["clock_start"])

        def timed(fn, seconds, clock=clock):
            def wrapper(*args, **kwargs):
                clock.now += seconds
                return fn(*args, **kwargs)
            return wrapper

        tr.train_step = timed(real["train_step"], STEP_S)
        tr.save = timed(real["save"], PAUSE_S)  # must not count: checkpoint writes
        tr.evaluate = timed(real["evaluate"], PAUSE_S)  # nor evaluation
        tr.train = functools.partial(real["train"], clock=clock)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = script.main(job["argv"])
        results.append({"rc": rc, "stdout": out.getvalue()})
    Path(results_file).write_text(json.dumps(results))


def drive(jobs: list[dict], root: Path) -> list[dict]:
    """Run ``jobs`` ({"argv", "clock_start"} each) through :func:`_drive` in one child process;
    their results ({"rc", "stdout"}) in order."""
    (root / "jobs.json").write_text(json.dumps(jobs))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import test_time_budget as t; "
            "t._drive(sys.argv[2], sys.argv[3])")
    r = subprocess.run([sys.executable, "-c", code, str(REPO / "tests"), str(root / "jobs.json"),
                        str(root / "results.json")], env=cpu_env(), cwd=REPO, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads((root / "results.json").read_text())


def _budget_run(data: Path, out: Path, *extra: str) -> list[str]:
    return overrides(data, out, "train.schedule=time", f"train.max_minutes={BUDGET_MIN}",
                     f"train.warmup_fraction={WARMUP}", f"train.min_lr_ratio={MIN_RATIO}", f"train.lr={PEAK}",
                     "train.decay=linear", "train.max_steps=1000", "train.checkpoint_every=10",
                     "train.eval_every=10", "train.eval_batches=1", "train.keep_last=5", *extra)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """full: 30 s budget in one go; half + resumed: stopped by max_steps=12, then resumed with
    the same budget (the fake clock restarts at another value: the count must come from the
    checkpoint)."""
    root = tmp_path_factory.mktemp("time_budget")
    data = build_data(root)
    dirs = {"full": root / "full", "split": root / "split", "snap": root / "snap"}
    snap = "train.snapshot_minutes=[0.2,0.4]"  # 12 s and 24 s of training: steps 12 and 24
    jobs = [
        {"argv": _budget_run(data, dirs["full"]), "clock_start": 1000.0},
        {"argv": _budget_run(data, dirs["split"], "train.max_steps=12"), "clock_start": 5000.0},
        {"argv": _budget_run(data, dirs["split"]), "clock_start": 123456.0},
        {"argv": _budget_run(data, dirs["snap"], snap, "train.max_steps=15"), "clock_start": 42.0},
        {"argv": _budget_run(data, dirs["snap"], snap), "clock_start": 9.0},
    ]
    results = drive(jobs, root)
    return {"dirs": dirs, "full": results[0], "half": results[1], "resumed": results[2], "snap": results[3:]}


def hand_lr(step: int) -> float:
    """The lr step s applies: the schedule at the training time elapsed when it starts, s - 1 s."""
    u = (step - 1) * STEP_S / (BUDGET_MIN * 60)
    if u < WARMUP:
        return PEAK * (MIN_RATIO + (1 - MIN_RATIO) * u / WARMUP)
    return PEAK * (MIN_RATIO + (1 - MIN_RATIO) * (1 - (u - WARMUP) / (1 - WARMUP)))


def _scheduler_state(step_dir: Path) -> dict:
    from zhbert.train.checkpoint import read_meta, safe_torch_load

    tag = read_meta(step_dir)["ds_tag"]
    state = safe_torch_load(step_dir / "ds" / tag / "mp_rank_00_model_states.pt")
    return state["lr_scheduler"]


@pytest.mark.slow
def test_run_stops_at_the_budget_with_lr_fully_decayed(runs):
    from zhbert.train.checkpoint import check_complete, read_meta

    full, out = runs["full"], runs["dirs"]["full"]
    assert full["rc"] == 0, full["stdout"][-3000:]
    assert "stopped at the time budget at step 30 after 0.50 training minutes (train.max_minutes=0.5)" \
        in full["stdout"], full["stdout"][-3000:]
    recs = metrics(out)
    # 1 s per step; the 100 s of every eval (steps 10, 20, 30) and checkpoint are not counted
    assert [r["step"] for r in recs] == list(range(1, 31))
    assert [r["train_s"] for r in recs] == [float(s) for s in range(1, 31)]
    assert [r["step"] for r in recs if "eval/mlm_loss" in r] == [10, 20, 30]
    assert [r["lr"] for r in recs] == pytest.approx([hand_lr(s) for s in range(1, 31)], rel=1e-6, abs=1e-12)
    assert recs[0]["lr"] == pytest.approx(PEAK * MIN_RATIO) and recs[3]["lr"] == pytest.approx(PEAK)
    # the final checkpoint: complete and verified, the count and the fully decayed lr in it
    final = out / "checkpoints" / "step_30"
    assert check_complete(final, verify=True) is None
    assert read_meta(final)["train_seconds"] == 30.0
    sched = _scheduler_state(final)
    assert sched["elapsed_s"] == 30.0 and sched["last_lr"] == pytest.approx([PEAK * MIN_RATIO] * 2, rel=1e-9)
    assert sched["last_batch_iteration"] == 30
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_10", "step_20", "step_30"]
    assert "scheduler" not in json.loads((out / "ds_config.json").read_text())


@pytest.mark.slow
def test_resume_continues_the_elapsed_time(runs):
    from zhbert.train.checkpoint import read_meta

    half, resumed, out = runs["half"], runs["resumed"], runs["dirs"]["split"]
    assert half["rc"] == 0 and "done at step 12" in half["stdout"], half["stdout"][-3000:]
    assert read_meta(out / "checkpoints" / "step_12")["train_seconds"] == 12.0
    assert _scheduler_state(out / "checkpoints" / "step_12")["last_lr"][0] == pytest.approx(hand_lr(13))
    assert resumed["rc"] == 0, resumed["stdout"][-3000:]
    assert "resumed from" in resumed["stdout"] and "0.20 of 0.5 training minutes used" in resumed["stdout"]
    # stops at the same total training time and step as the uninterrupted run ...
    assert "stopped at the time budget at step 30 after 0.50 training minutes" in resumed["stdout"]
    recs, full = metrics(out), metrics(runs["dirs"]["full"])
    assert [r["step"] for r in recs] == list(range(1, 31))
    assert [r["train_s"] for r in recs] == [float(s) for s in range(1, 31)]
    # ... with the lr continuing from the stored elapsed time (step 13 applies the schedule at 12 s)
    assert [r["lr"] for r in recs] == [r["lr"] for r in full]
    assert [r["loss"] for r in recs] == pytest.approx([r["loss"] for r in full], rel=1e-5)
    assert read_meta(out / "checkpoints" / "step_30")["train_seconds"] == 30.0
    assert _scheduler_state(out / "checkpoints" / "step_30")["last_lr"][0] == pytest.approx(PEAK * MIN_RATIO)


@pytest.mark.slow
def test_snapshots_at_training_minutes_survive_pruning_and_resume(runs):
    """train.snapshot_minutes=[0.2, 0.4] at 1 s per step: snapshots of steps 12 and 24, the first
    written before a stop at step 15, the second after the resume (which must not redo the first)."""
    first, second = runs["snap"]
    out = runs["dirs"]["snap"]
    assert first["rc"] == 0 and second["rc"] == 0, (first["stdout"] + second["stdout"])[-3000:]
    assert "snapshot at 0.2 training minutes (step 12)" in first["stdout"]
    assert "snapshot at" not in second["stdout"].split("snapshot at 0.4")[0]  # 0.2 not redone
    assert "snapshot at 0.4 training minutes (step 24)" in second["stdout"]
    snaps = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snaps == ["min0_2", "min0_4"]
    # evaluated at the marks (besides eval_every=10 and the end)
    assert [r["step"] for r in metrics(out) if "eval/mlm_loss" in r] == [10, 12, 15, 20, 24, 30]
    # keep_last=5 pruned step_10 from checkpoints/, not the snapshots
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == \
        ["step_12", "step_15", "step_20", "step_24", "step_30"]
    for name, step in (("min0_2", 12), ("min0_4", 24)):
        info = json.loads((out / "snapshots" / name / "snapshot.json").read_text())
        assert (info["step"], info["train_s"]) == (step, float(step))
        assert info["record"]["step"] == step and "eval/mlm_acc" in info["record"]
        hf = out / "checkpoints" / f"step_{step}" / "hf"
        assert (out / "snapshots" / name / "model.safetensors").read_bytes() == (hf / "model.safetensors").read_bytes()
        assert (out / "snapshots" / name / "config.json").is_file() and (out / "snapshots" / name / "vocab.txt").is_file()


def _rank_worker(rank: int, world: int, port: int, argv: list[str], out: str) -> None:
    """Spawned rank with its own fake clock: rank 0's steps take 1 s, rank 1's 2.5 s."""
    from _pretrain_fixtures import init_cpu_rank

    init_cpu_rank(rank, world, port)
    import zhbert.train.trainer as tr
    from zhbert.config import load_config

    clock, real_step = FakeClock(100.0 * (rank + 1)), tr.train_step

    def step(*args, **kwargs):
        clock.now += STEP_S if rank == 0 else 2.5
        return real_step(*args, **kwargs)

    tr.train_step = step
    summary = tr.train(load_config(None, argv), clock=clock)
    Path(out, f"rank_{rank}.json").write_text(json.dumps({k: summary[k] for k in
                                                          ("step", "train_seconds", "stopped_at_budget")}))
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_stop_together_on_rank0s_clock(tmp_path):
    """Each rank reads its own clock; rank 0's count is broadcast, so both apply the same
    (cosine) lr and stop after the same step although rank 1's clock runs 2.5x faster."""
    import torch.multiprocessing as mp

    from _pretrain_fixtures import free_port
    from zhbert.train.checkpoint import check_complete

    data = build_data(tmp_path)
    out = tmp_path / "run"
    argv = _budget_run(data, out, "train.decay=cosine", "train.checkpoint_every=1000", "train.eval_every=1000")
    # ranks that disagreed about the budget would wait for each other forever: bounded here
    ctx = mp.spawn(_rank_worker, args=(2, free_port(), argv, str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 600
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the ranks did not finish within 600 s (disagreeing about the budget?)")
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank_{rank}.json").read_text()) == \
            {"step": 30, "train_seconds": 30.0, "stopped_at_budget": True}
    recs = metrics(out)
    assert [r["step"] for r in recs] == list(range(1, 31))

    def cosine(step: int) -> float:
        u = (step - 1) / 30
        if u < WARMUP:
            return PEAK * (MIN_RATIO + (1 - MIN_RATIO) * u / WARMUP)
        return PEAK * (MIN_RATIO + (1 - MIN_RATIO) * (1 + math.cos(math.pi * (u - WARMUP) / (1 - WARMUP))) / 2)

    assert [r["lr"] for r in recs] == pytest.approx([cosine(s) for s in range(1, 31)], rel=1e-6, abs=1e-12)
    assert check_complete(out / "checkpoints" / "step_30", verify=True) is None
    assert _scheduler_state(out / "checkpoints" / "step_30")["last_lr"][0] == pytest.approx(PEAK * MIN_RATIO)
