"""The one JSON report of ``benchmarks/gpu_check.sh`` (docs/benchmarks.md, "GPU checks").

Reads pytest's JUnit XML of ``tests/test_gpu.py`` and the JSON of ``pretrain_throughput.py
--device cuda``, adds the software and GPU versions, writes ``--out`` and exits non-zero when
anything failed:

    0  every gpu test passed (none skipped: on a GPU machine a skip is a fault) and the
       BERT-base T128 bf16 benchmark ran with finite losses
    1  a test failed, errored or was skipped, or pytest found none
    2  the tests passed but the benchmark failed

    python benchmarks/gpu_report.py --junit J.xml --pytest-rc 0 --bench B.json --bench-rc 0 --out runs/gpu_check.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]


def read_junit(path: Optional[str]) -> list[dict[str, Any]]:
    """One record per test case: name, outcome (passed / failed / error / skipped), time_s, message."""
    if not path or not Path(path).is_file():
        return []
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                text = "\n".join(x for x in (node.get("message"), node.text) if x)
                message = text[-2000:] if text else None
                break
        name = case.get("name", "?")
        cls = case.get("classname", "")
        cases.append({"name": name, "id": f"{cls}::{name}" if cls else name, "outcome": outcome,
                      "time_s": float(case.get("time") or 0.0), "message": message})
    return cases


def _run(cmd: list[str]) -> Optional[str]:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def environment() -> dict[str, Any]:
    """Versions and the GPU, each None where it cannot be found (never raises)."""
    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "hostname": platform.node()}
    try:
        import torch

        env.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                   cuda_available=torch.cuda.is_available())
        try:
            env["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:  # noqa: BLE001 - a CPU build has no NCCL
            env["nccl"] = None
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            env.update(gpu_name=p.name, gpu_count=torch.cuda.device_count(),
                       gpu_capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1))
    except ImportError:
        env["torch"] = None
    for mod in ("deepspeed", "transformers", "numpy"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - missing or broken: record None
            env[mod] = None
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    env["nvidia_smi"] = smi.splitlines() if smi else None
    # DeepSpeed builds FusedAdam with nvcc + ninja at first use (its test fails without them)
    env["nvcc"] = shutil.which("nvcc")
    version = _run(["nvcc", "--version"]) if env["nvcc"] else None
    env["nvcc_version"] = version.splitlines()[-1] if version else None
    env["ninja"] = shutil.which("ninja")
    env["cuda_home"] = os.environ.get("CUDA_HOME")
    env["zhbert_git_commit"] = _run(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    status = _run(["git", "-C", str(REPO), "status", "--porcelain"])
    env["zhbert_git_dirty"] = bool(status) if status is not None else None
    return env


def base_result(bench: dict) -> Optional[dict]:
    """The BERT-base, T128, bf16 row of the benchmark JSON."""
    for r in bench.get("results", []):
        if r.get("shape") == "base" and r.get("seq_len") == 128 and r.get("precision") == "bf16":
            return r
    return None


def build_report(junit: Optional[str], pytest_rc: Optional[int], bench_path: Optional[str], bench_rc: Optional[int],
                 fallback_path: Optional[str] = None, fallback_rc: Optional[int] = None,
                 started: Optional[float] = None) -> tuple[dict[str, Any], int]:
    cases = read_junit(junit)
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    tests_ok = pytest_rc == 0 and bool(cases) and counts["passed"] == len(cases)

    bench, used = {}, None
    for path, rc, name in ((bench_path, bench_rc, "fused"), (fallback_path, fallback_rc, "torch")):
        if rc == 0 and path and Path(path).is_file():
            bench, used = json.loads(Path(path).read_text()), name
            break
    base = base_result(bench) if bench else None
    bench_ok = base is not None and bool(base.get("losses_finite"))
    by_shape = {r["shape"]: r for r in bench.get("results", []) if r.get("precision") == "bf16"} if bench else {}
    now = dt.datetime.now(dt.timezone.utc)
    report = {
        "report": "zhbert gpu_check", "schema": 1,
        "status": "pass" if tests_ok and bench_ok else "fail",
        "finished_at": now.isoformat(timespec="seconds"),
        "duration_s": round(now.timestamp() - started, 1) if started else None,
        "environment": environment(),
        "tests": {"pytest_exit_code": pytest_rc, "total": len(cases), **counts, "ok": tests_ok, "cases": cases},
        "benchmark": {
            "exit_code": bench_rc, "ok": bench_ok,
            # FusedAdam is the CUDA default; when it cannot be built the benchmark is rerun with torch's AdamW
            "optimizer_used": used, "fused_exit_code": bench_rc, "torch_fallback_exit_code": fallback_rc,
            "results": bench.get("results", []) if bench else [],
        },
        # the headline figures: BERT-base L12 H768, T128, bf16, one GPU
        "bert_base_t128_bf16": {k: base.get(k) for k in ("tokens_per_s", "mfu", "model_tflops_per_s", "peak_tflops",
                                                         "step_s", "batch", "max_memory_gib", "optimizer_class")}
        if base else None,
        "tiny_t128_bf16_tokens_per_s": by_shape.get("tiny", {}).get("tokens_per_s"),
    }
    code = 0 if report["status"] == "pass" else (1 if not tests_ok else 2)
    return report, code


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--junit", help="pytest --junitxml output of tests/test_gpu.py")
    ap.add_argument("--pytest-rc", type=int)
    ap.add_argument("--bench", help="pretrain_throughput.py --json output (FusedAdam)")
    ap.add_argument("--bench-rc", type=int)
    ap.add_argument("--fallback", help="the same with --optimizer torch, when the first failed")
    ap.add_argument("--fallback-rc", type=int)
    ap.add_argument("--started", type=float, help="start time (seconds since the epoch)")
    ap.add_argument("--out", default="runs/gpu_check.json")
    args = ap.parse_args(argv)
    report, code = build_report(args.junit, args.pytest_rc, args.bench, args.bench_rc, args.fallback,
                                args.fallback_rc, args.started)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    t, b = report["tests"], report["bert_base_t128_bf16"]
    print(f"gpu_check: {report['status']}: tests {t['passed']}/{t['total']} passed ({t['failed']} failed, "
          f"{t['error']} errors, {t['skipped']} skipped)", end="")
    if b:
        mfu = f"{100 * b['mfu']:.1f}%" if b.get("mfu") is not None else "n/a (unknown GPU peak)"
        print(f"; BERT-base T128 bf16 {b['tokens_per_s']:,.0f} tokens/s, MFU {mfu}", end="")
    else:
        print("; BERT-base benchmark failed", end="")
    print(f"; report {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
