#!/usr/bin/env bash
# GPU checks (docs/benchmarks.md, "GPU checks"): the gpu-marked tests and the BERT-base T128
# bf16 MFU benchmark, summed up in ONE JSON report. Written without a GPU to run on: untested.
#
#   bash benchmarks/gpu_check.sh [--out runs/gpu_check.json]
#
# 1. pytest -m gpu tests/test_gpu.py   bf16 and fp16 (loss scaling) under DeepSpeed, FusedAdam vs
#                                      torch AdamW, SDPA flash / mem-efficient vs math, the real
#                                      entry point on one GPU with NCCL
# 2. benchmarks/pretrain_throughput.py --device cuda: tokens/s and MFU of BERT-base (B256) and
#    tiny (B1024), T128, bf16, FusedAdam (rerun with torch's AdamW if FusedAdam cannot be built)
# 3. benchmarks/gpu_report.py: versions, GPU, every test's outcome, tokens/s, MFU -> --out
#
# Exit status: 0 all passed; 1 a test failed, errored or was skipped (or none ran); 2 the
# benchmark failed. Time: a few minutes on an H100/H200 (DeepSpeed builds FusedAdam at first
# use, ~1 min); hard limits 330 s for the tests and 100 + 80 s for the benchmark.
set -u -o pipefail

OUT=runs/gpu_check.json
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --out=*) OUT="${1#--out=}"; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (usage: bash benchmarks/gpu_check.sh [--out FILE])" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python}
STARTED=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/zhbert_gpu_check.XXXXXX")
# tests/conftest.py defaults DS_ACCELERATOR to cpu; here DeepSpeed must take the GPU
export DS_ACCELERATOR=cuda WANDB_MODE=disabled WANDB_SILENT=true TOKENIZERS_PARALLELISM=false

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: torch sees no CUDA device; the gpu tests would all be skipped" >&2
fi

echo "== gpu_check 1/3: pytest -m gpu tests/test_gpu.py"
timeout 330 "$PY" -m pytest -m gpu tests/test_gpu.py -v -rA -p no:cacheprovider \
    --junitxml "$WORK/junit.xml" 2>&1 | tee "$WORK/pytest.log"
PYTEST_RC=${PIPESTATUS[0]}

echo "== gpu_check 2/3: MFU benchmark (BERT-base and tiny, T128, bf16)"
BENCH=(benchmarks/pretrain_throughput.py --device cuda --precision bf16 --shapes base,tiny
       --batch 256,1024 --steps 50 --warmup 10)
timeout 100 "$PY" "${BENCH[@]}" --optimizer fused --json "$WORK/bench.json" 2>&1 | tee "$WORK/bench.log"
BENCH_RC=${PIPESTATUS[0]}
FALLBACK_ARGS=()
if [ "$BENCH_RC" -ne 0 ]; then
    echo "gpu_check: benchmark with FusedAdam failed (exit $BENCH_RC); again with torch's AdamW" >&2
    timeout 80 "$PY" "${BENCH[@]}" --optimizer torch --json "$WORK/bench_torch.json" 2>&1 | tee "$WORK/bench_torch.log"
    FALLBACK_ARGS=(--fallback "$WORK/bench_torch.json" --fallback-rc "${PIPESTATUS[0]}")
fi

echo "== gpu_check 3/3: report"
"$PY" benchmarks/gpu_report.py --junit "$WORK/junit.xml" --pytest-rc "$PYTEST_RC" \
    --bench "$WORK/bench.json" --bench-rc "$BENCH_RC" ${FALLBACK_ARGS[@]+"${FALLBACK_ARGS[@]}"} \
    --started "$STARTED" --out "$OUT"
RC=$?
echo "gpu_check: logs in $WORK"
exit "$RC"
