# The recipe variants of 2026-12-06 (evening), each against the full-protocol experiment
# (docs/results/cpu30-vs-random-fulltrain-2026-12-06/): its corpus, vocab, prepared data and the
# random-init twin's fine-tuning results were reused (copied by hand then; `--baseline` does it now),
# so only the variant was pretrained (30 training minutes) and fine-tuned.
# variant configs: configs/pretrain/cpu_30min.yaml with one change (mask30/config.yaml, char/config.yaml)
python scripts/clue_experiment.py --budget-minutes 30 --output runs/mask30 --config mask30/config.yaml \
    --baseline runs/clue_experiment_full --snapshots "" --seeds 1,2,3 --lr 3e-4 --cmrc-dev 300
python scripts/clue_experiment.py --budget-minutes 30 --output runs/char30 --config char/config.yaml \
    --baseline runs/clue_experiment_full --snapshots "" --seeds 1,2,3 --lr 3e-4 --cmrc-dev 0

# 2026-12-06 (late): peak lr 5e-4 (lr5e-4/config.yaml: the lr-1e-3 recipe with train.lr 5e-4), the lead
# of the 10-minute ablation (docs/results/ablation-2026-12-06c/, row r_lr5e-4), with `--baseline`.
# The baseline experiment predates comparison.json's "eval_flags", so they were added to it by hand,
# as its recorded `zhbert eval clue` command shows them (tasks ocnli,tnews, seeds 1,2,3, epochs 1,
# lr 3e-4, train_rows 0, cmrc_dev 300, the shared clue dir); the twin's weights sha256 matched.
python scripts/clue_experiment.py --budget-minutes 30 --output runs/lr5e-4 --config lr5e-4/config.yaml \
    --baseline runs/clue_experiment_full --snapshots "" --seeds 1,2,3 --lr 3e-4 --cmrc-dev 300
python variant_delta.py runs/clue_experiment_full runs/lr5e-4 > lr5e-4/variant_delta.txt

# then no clipping on top of lr 5e-4 (lr5e-4_noclip/config.yaml), the other lead of table 4, same baseline;
# paired deltas against the lr-1e-3 recipe (variant_delta.txt) and against lr 5e-4 (variant_delta_vs_lr5e-4.txt)
python scripts/clue_experiment.py --budget-minutes 30 --output runs/lr5e-4_noclip --config lr5e-4_noclip/config.yaml \
    --baseline runs/clue_experiment_full --snapshots "" --seeds 1,2,3 --lr 3e-4 --cmrc-dev 300
python variant_delta.py runs/clue_experiment_full runs/lr5e-4_noclip > lr5e-4_noclip/variant_delta.txt
python variant_delta.py runs/lr5e-4 runs/lr5e-4_noclip > lr5e-4_noclip/variant_delta_vs_lr5e-4.txt
# pretrain_metrics.jsonl: step, tokens, lr, grad_norm (every 50 steps) and the held-out evals (MLM, SOP every
# 500 steps) taken from each run's pretrain/metrics.jsonl; the SOP and gradient-norm figures in the docs are from them

# 2026-12-07: peak lr 3e-4 (lr3e-4/config.yaml: the recipe, lr 5e-4, with train.lr 3e-4): the other side of 5e-4,
# same baseline and protocol; paired deltas against the lr-1e-3 recipe and against lr 5e-4
python scripts/clue_experiment.py --budget-minutes 30 --output runs/lr3e-4 --config lr3e-4/config.yaml \
    --baseline runs/clue_experiment_full --snapshots "" --seeds 1,2,3 --lr 3e-4 --cmrc-dev 300
python variant_delta.py runs/clue_experiment_full runs/lr3e-4 > lr3e-4/variant_delta.txt
python variant_delta.py runs/lr5e-4 runs/lr3e-4 > lr3e-4/variant_delta_vs_lr5e-4.txt

# 2026-12-07: the recipe (lr 5e-4) again with another pretraining seed (lr5e-4_seed43/config.yaml: train.seed 43,
# which draws the initial weights, the data order and the masks), same baseline and protocol; then the paired
# delta against the seed-42 run and the two runs pooled against the random-init twin (pooled_delta.txt)
python scripts/clue_experiment.py --budget-minutes 30 --output runs/lr5e-4_seed43 --config lr5e-4_seed43/config.yaml \
    --baseline runs/clue_experiment_full --snapshots "" --seeds 1,2,3 --lr 3e-4 --cmrc-dev 300
python variant_delta.py runs/clue_experiment_full runs/lr5e-4_seed43 > lr5e-4_seed43/variant_delta.txt
python variant_delta.py runs/lr5e-4 runs/lr5e-4_seed43 > lr5e-4_seed43/variant_delta_vs_lr5e-4.txt
python pooled_delta.py runs/clue_experiment_full runs/lr5e-4 runs/lr5e-4_seed43 > pooled_delta.txt

# 2026-12-07 (later): a third pretraining seed of the recipe (lr5e-4_seed44/config.yaml: cpu_30min.yaml
# with train.seed 44). This machine had lost the earlier runs' directories, so the whole experiment
# ran (no --baseline): corpus, vocab (byte-identical), preparation, pretraining, the random-init twin
# (same weights; its six fine-tuning results reproduced the earlier ones exactly) and both arms' fine-tuning.
python scripts/clue_experiment.py --budget-minutes 30 --output runs/lr5e-4_seed44 --config lr5e-4_seed44/config.yaml \
    --snapshots "" --seeds 1,2,3 --lr 3e-4 --cmrc-dev 300
python dev_correct.py runs/lr5e-4_seed44 > lr5e-4_seed44/dev_correct.json   # per-example correctness, both arms
python pooled_seeds.py lr5e-4 lr5e-4_seed43 lr5e-4_seed44 > pooled_seeds.txt   # from the committed comparison.json files

# 2026-12-07 (afternoon): NSP instead of SOP (nsp/config.yaml: the recipe with data.pair_mode nsp), the lead
# of table 5 (docs/results/ablation-2026-12-07/, row r_nsp). `--baseline` now prepares the variant's own
# data from the baseline's corpus and vocab, so the seed-44 run (the one still on this machine) is the
# baseline: its twin's results were copied (same weights, same flags). Run from a git worktree of the commit,
# hence the explicit --clue-dir (the default is the shared folder beside the checkout).
python scripts/clue_experiment.py --budget-minutes 30 --output runs/nsp42 --config nsp/config.yaml \
    --baseline runs/lr5e-4_seed44 --snapshots "" --seeds 1,2,3 --lr 3e-4 --cmrc-dev 300 --clue-dir ../shared/data/clue
python variant_delta.py runs/lr5e-4_seed44 runs/nsp42 > nsp/variant_delta_vs_seed44.txt
python dev_correct.py runs/nsp42 > nsp/dev_correct.json
# held-out MLM at the recipe's 15% wwm on the seed-44 (SOP) data's validation batches, seed 44's model as the yardstick
python mlm_at_rate.py runs/lr5e-4_seed44/data wwm 0.15 runs/lr5e-4_seed44/pretrain/checkpoints/step_5882/hf \
    runs/nsp42/pretrain/checkpoints/step_6324/hf    # 5.6171 / 17.63% (= its own final eval), 5.6287 / 18.15%

# 2026-12-07 (afternoon): 40% masking (mask40/config.yaml: the recipe with masking.mask_prob 0.40), table 5's
# other lead, same baseline and protocol
python scripts/clue_experiment.py --budget-minutes 30 --output runs/mask40 --config mask40/config.yaml \
    --baseline runs/lr5e-4_seed44 --snapshots "" --seeds 1,2,3 --lr 3e-4 --cmrc-dev 300 --clue-dir ../shared/data/clue
python variant_delta.py runs/lr5e-4_seed44 runs/mask40 > mask40/variant_delta_vs_seed44.txt
python dev_correct.py runs/mask40 > mask40/dev_correct.json
python mlm_at_rate.py runs/lr5e-4_seed44/data wwm 0.15 runs/mask40/pretrain/checkpoints/step_5410/hf   # 5.4997 / 18.62%

# 2026-12-07 (evening): 40% masking with two more pretraining seeds (mask40_seed43/, mask40_seed44/: the
# mask40 config with train.seed 43 / 44), same baseline and protocol; run from a git worktree of 79152ac.
# Decision rule, written before seed 44 had finished: adopt 0.40 if, over three pretraining seeds per
# setting, the TNEWS difference's Welch t interval lies above 0 and the OCNLI difference is >= -0.5.
for s in 43 44; do
  python scripts/clue_experiment.py --budget-minutes 30 --output runs/mask40s$s --config mask40_seed$s/config.yaml \
      --baseline runs/lr5e-4_seed44 --snapshots "" --seeds 1,2,3 --lr 3e-4 --cmrc-dev 300 --clue-dir ../shared/data/clue
  bash collect.sh runs/mask40s$s mask40_seed$s mask40_seed$s/config.yaml   # the committed files of the run
  python variant_delta.py runs/lr5e-4_seed44 runs/mask40s$s > mask40_seed$s/variant_delta_vs_seed44.txt
  python dev_correct.py runs/mask40s$s > mask40_seed$s/dev_correct.json
done
python mlm_at_rate.py runs/lr5e-4_seed44/data wwm 0.15 runs/mask40s43/pretrain/checkpoints/step_5761/hf   # 5.4897 / 18.75%
python mlm_at_rate.py runs/lr5e-4_seed44/data wwm 0.15 runs/mask40s44/pretrain/checkpoints/step_5834/hf   # 5.5498 / 17.99%
# 40% (3 seeds) against 15% (3 seeds): Welch over pretraining seeds; and 40% pooled against the twin
python variant_seeds.py lr5e-4 lr5e-4_seed43 lr5e-4_seed44 -- mask40 mask40_seed43 mask40_seed44 > mask40_variant_seeds.txt
python pooled_seeds.py mask40 mask40_seed43 mask40_seed44 > mask40_pooled_seeds.txt
python pooled_delta.py runs/lr5e-4_seed44 runs/mask40 runs/mask40s43 runs/mask40s44 > mask40_pooled_delta.txt
# -> the recipe's masking.mask_prob is 0.40 since (configs/pretrain/cpu_30min.yaml)

# 2026-12-07 (night): character masking at the current recipe (char40/, char40_seed43/: configs/pretrain/cpu_30min.yaml,
# 40% masking, with masking.strategy char; train.seed 42 / 43), same baseline and protocol, run from a git worktree
# of b05cb50: the "wwm >= char at equal budget" re-measured with the recipe (the char row above was at 15%
# masking and lr 1e-3). Reading fixed before the first result: wwm >= char is supported if the wwm mean is >= the
# char mean on both tasks, shown only if the Welch interval of char - wwm lies below +0.5 on both; the recipe would
# switch to char only by the rule that adopted 40% (char - wwm Welch interval above 0 on one task, >= -0.5 on the other).
for s in 42 43; do
  out=runs/char40$([ $s = 42 ] || echo s$s); dest=char40$([ $s = 42 ] || echo _seed$s)
  python scripts/clue_experiment.py --budget-minutes 30 --output $out --config $dest/config.yaml \
      --baseline runs/lr5e-4_seed44 --snapshots "" --seeds 1,2,3 --lr 3e-4 --cmrc-dev 300 --clue-dir ../shared/data/clue
  bash collect.sh $out $dest $dest/config.yaml
  python variant_delta.py runs/lr5e-4_seed44 $out > $dest/variant_delta_vs_seed44.txt
  python dev_correct.py $out > $dest/dev_correct.json
done
# paired over dev examples against wwm with the same pretraining seed (same init and data order; only the masks differ)
python variant_delta.py runs/mask40 runs/char40 > char40/variant_delta_vs_mask40.txt
python mlm_at_rate.py runs/lr5e-4_seed44/data wwm 0.15 runs/char40/pretrain/checkpoints/step_5420/hf \
    runs/mask40/pretrain/checkpoints/step_5410/hf   # char 5.4157 / 20.34%, wwm 5.4997 / 18.62%
python mlm_at_rate.py runs/lr5e-4_seed44/data char 0.15 runs/char40/pretrain/checkpoints/step_5420/hf \
    runs/mask40/pretrain/checkpoints/step_5410/hf   # char 5.3310 / 20.83%, wwm 5.4818 / 18.83%
python variant_delta.py runs/mask40s43 runs/char40s43 > char40_seed43/variant_delta_vs_mask40_seed43.txt
python mlm_at_rate.py runs/lr5e-4_seed44/data wwm 0.15 runs/char40s43/pretrain/checkpoints/step_5241/hf \
    runs/mask40s43/pretrain/checkpoints/step_5761/hf   # char 5.4863 / 18.88%, wwm 5.4897 / 18.75%
python mlm_at_rate.py runs/lr5e-4_seed44/data char 0.15 runs/char40s43/pretrain/checkpoints/step_5241/hf \
    runs/mask40s43/pretrain/checkpoints/step_5761/hf   # char 5.4298 / 19.50%, wwm 5.4763 / 19.24%
# char (2 seeds) against wwm 40% (3 seeds), Welch over pretraining seeds -> equal within noise; the recipe keeps wwm
python variant_seeds.py mask40 mask40_seed43 mask40_seed44 -- char40 char40_seed43 > char40_variant_seeds.txt

# 2026-12-08 (session 26): the third character-masking seed (char40_seed44/: char40_seed43/config.yaml with train.seed 44),
# so that char and wwm at 40% both have three pretraining seeds; the reading is the one fixed above before the first
# char result. Run from a git worktree of 4ed18e2 at /tmp/wtA (PYTHONPATH=/tmp/wtA). No --baseline (the baseline's run
# directory was gone): the script built its own corpus (8,037,222 characters, vocab sha256 ce6b0431..., as every run's)
# and its twin (weights sha256 df8f15d7..., the committed twin's). The run was first stopped after the pretrained arm's
# fine-tuning (the script's own eval, 2 threads, as the earlier char runs), the figures below taken from it, then the
# same command run again (every stage resumes) fine-tuned the twin and CMRC2018 and wrote comparison.json: the twin's
# six figures and its per-example bits are the committed twin's exactly (mask40_seed44/dev_correct.json).
python scripts/clue_experiment.py --budget-minutes 30 --output runs/char40s44 --config char40_seed44/config.yaml \
    --snapshots "" --seeds 1,2,3 --lr 3e-4 --cmrc-dev 300 \
    --clue-dir ../shared/data/clue --pretrain-corpus ../shared/data/pretrain_corpus
bash collect.sh runs/char40s44 char40_seed44 char40_seed44/config.yaml   # after the second run
# 4,685 steps, 6.49M tokens (3,607 tokens/s: 20% fewer than wwm seed 44's 8.08M; `top` showed ~36% CPU steal
# from the VM host during pretraining, so char had the same 30 minutes but fewer tokens).
python dev_correct.py runs/char40s44 > char40_seed44/dev_correct.json   # both arms (after the second run; the outputs below are
# unchanged from the first, pretrained-only dev_correct.json)
# paired over dev examples against wwm seed 44 from the committed bits (bits_delta.py gives variant_delta.py's
# figures for the two earlier pairs exactly: char40/ and char40_seed43/ variant_delta_vs_mask40*.txt)
python bits_delta.py mask40_seed44/dev_correct.json char40_seed44/dev_correct.json > char40_seed44/variant_delta_vs_mask40_seed44.txt
# over pretraining seeds, 3 char against 3 wwm
python variant_seeds.py mask40 mask40_seed43 mask40_seed44 -- char40 char40_seed43 char40_seed44 > char40_seed44/char40_variant_seeds_3.txt
python mlm_at_rate.py runs/char40s44/data wwm 0.15 runs/char40s44/pretrain/checkpoints/step_4685/hf   # 5.5155 / 18.64%
python mlm_at_rate.py runs/char40s44/data char 0.15 runs/char40s44/pretrain/checkpoints/step_4685/hf  # 5.5594 / 17.94%
# (this run's own prepared data: the same corpus, vocab and data section as runs/lr5e-4_seed44/data; prepare is
# deterministic, so the same held-out split)
