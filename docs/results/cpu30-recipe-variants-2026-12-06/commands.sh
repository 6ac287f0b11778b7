# The recipe variants of 2026-12-06 (evening), each against the full-protocol experiment
# (docs/results/cpu30-vs-random-fulltrain-2026-12-06/): its corpus, vocab, prepared data and the
# random-init twin's fine-tuning results were reused (copied by hand then; `--baseline` does it now),
# so only the variant was pretrained (30 training minutes) and fine-tuned.
# variant configs: configs/pretrain/cpu_30min.yaml with one change (mask30/config.yaml, char/config.yaml)
python scripts/clue_experiment.py --budget-minutes 30 --output runs/mask30 --config mask30/config.yaml \
    --baseline runs/clue_experiment_full --snapshots "" --seeds 1,2,3 --lr 3e-4 --cmrc-dev 300
python scripts/clue_experiment.py --budget-minutes 30 --output runs/char30 --config char/config.yaml \
    --baseline runs/clue_experiment_full --snapshots "" --seeds 1,2,3 --lr 3e-4 --cmrc-dev 0
