#!/bin/bash
# After the pretrain stage: stop clue_experiment's sequential eval, run the two arms in parallel (1 thread each),
# then rerun clue_experiment (every seed found finished) to write comparison.json.
set -u
cd /tmp/wtA
export DS_ACCELERATOR=cpu WANDB_MODE=offline PYTHONPATH=/tmp/wtA
until grep -q "^\[experiment\] pretrain:" /work/exp/ep2.log; do sleep 5; done
until [ -f /work/exp/ep2/clue/_models/random-init/model.safetensors ] && [ -f /work/exp/ep2/clue/_models/random-init/twin.json ]; do sleep 2; done
sleep 3
pkill -f "scripts/clue_experiment.py --budget-minutes 30 --output /work/exp/ep2 "; pkill -f "zhbert.cli eval clue --model /work/exp/ep2/pretrain"
sleep 3
echo "split at $(date)"
common="--tasks ocnli --seeds 1,2,3 --epochs 2 --data-dir /work/shared/data/clue --device cpu --wandb-mode disabled --lr 3e-4"
OMP_NUM_THREADS=1 nice -n -15 python -m zhbert.cli eval clue --model /work/exp/ep2/pretrain --output /work/exp/ep2/clue/pretrain $common > /work/exp/ep2_armA.log 2>&1 &
a=$!
OMP_NUM_THREADS=1 nice -n -15 python -m zhbert.cli eval clue --model /work/exp/ep2/clue/_models/random-init --output /work/exp/ep2/clue/random-init $common > /work/exp/ep2_armB.log 2>&1 &
b=$!
wait $a; echo "A rc=$? $(date)"; wait $b; echo "B rc=$? $(date)"
nice -n -15 python scripts/clue_experiment.py --budget-minutes 30 --output /work/exp/ep2 --config configs/pretrain/cpu_30min.yaml --snapshots "" --tasks ocnli --seeds 1,2,3 --epochs 2 --lr 3e-4 --cmrc-dev 0 --clue-dir /work/shared/data/clue --pretrain-corpus /work/shared/data/pretrain_corpus >> /work/exp/ep2.log 2>&1
echo "experiment rc=$? $(date)"
