# 2026-12-07 (night, session 25): OCNLI with 2 fine-tuning epochs instead of 1, the recipe (configs/pretrain/cpu_30min.yaml,
# train.seed 42) against its random-init twin, everything else as the 1-epoch protocol (full train and dev sets, lr 3e-4,
# batch 32, fine-tuning seeds 1-3). The protocol's own OCNLI default is the task file's 3 epochs (configs/clue/ocnli.yaml;
# the tiny size class changes lr and batch only); the experiment uses 1 for CPU time. The reading was written down before
# launching (rule_written_before_the_run.txt; in the docs: "Fine-tuning for 2 epochs instead of 1"). Run from a git worktree of a0c2ae3 at /tmp/wtA, PYTHONPATH=/tmp/wtA.
python scripts/clue_experiment.py --budget-minutes 30 --output runs/ep2 --config configs/pretrain/cpu_30min.yaml \
    --snapshots "" --tasks ocnli --seeds 1,2,3 --epochs 2 --lr 3e-4 --cmrc-dev 0 \
    --clue-dir ../shared/data/clue --pretrain-corpus ../shared/data/pretrain_corpus
# After the pretrain stage the script's eval (both arms in turn, 2 threads each) was stopped and the two arms fine-tuned
# at once, one thread each (split_eval.sh: ~19 min a seed instead of ~12.5 min in turn), into the directories the script
# uses; the script, run again, found every seed finished and wrote comparison.json. Same flags as the script's eval:
common="--tasks ocnli --seeds 1,2,3 --epochs 2 --data-dir ../shared/data/clue --device cpu --wandb-mode disabled --lr 3e-4"
OMP_NUM_THREADS=1 python -m zhbert.cli eval clue --model runs/ep2/pretrain --output runs/ep2/clue/pretrain $common &
OMP_NUM_THREADS=1 python -m zhbert.cli eval clue --model runs/ep2/clue/_models/random-init \
    --output runs/ep2/clue/random-init $common &
wait
python scripts/clue_experiment.py ...   # the same command as above: writes comparison.json / .md
# collected:
cp runs/ep2/comparison.json runs/ep2/comparison.md .; cp runs/ep2/clue/results.md results_ocnli.md
cp configs/pretrain/cpu_30min.yaml config.yaml
python ../cpu30-recipe-variants-2026-12-06/dev_correct.py runs/ep2 > dev_correct.json
# 1 epoch (the recipe's seed-42 run, mask40/) against 2 epochs (this run), paired over dev examples:
python epochs_delta.py ../cpu30-recipe-variants-2026-12-06/mask40/dev_correct.json dev_correct.json > epochs_delta.txt
# held-out MLM at the common 15% wwm (as the variant rows; this run's own prepared data, the same corpus, vocab and
# data settings as theirs):
python ../cpu30-recipe-variants-2026-12-06/mlm_at_rate.py runs/ep2/data wwm 0.15 runs/ep2/pretrain/checkpoints/step_5707/hf
#   -> loss 5.4431 acc 20.08%
# Check of epochs_delta.py: given the 1-epoch file twice it prints delta +1.92 [+0.95, +2.93] for both epoch counts,
# the interval clue_experiment.py wrote for that run (../cpu30-recipe-variants-2026-12-06/mask40/comparison.json), and 0 changes.
python epochs_delta.py ../cpu30-recipe-variants-2026-12-06/mask40/dev_correct.json ../cpu30-recipe-variants-2026-12-06/mask40/dev_correct.json
# The first attempt (not used): the same command from a worktree at /tmp/wtA without --pretrain-corpus, where the default
# ../shared/data/pretrain_corpus (/tmp/shared/...) did not exist: its corpus_stats.json had 3,065,153 characters in 5 files
# (corpora/sample and the CLUE train text) against 8,037,222 in 13 with the shared pretrain_corpus (mask40/comparison.json).
