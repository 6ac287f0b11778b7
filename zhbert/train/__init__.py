"""Stage 3, pretraining: masking/collator -> per-rank data order -> DeepSpeed config -> trainer, checkpoints, plots."""
