"""CLUE 1.1 classification benchmark: task specs, loading, fine-tuning, metrics, reports.

Pipeline order: ``tasks`` (what each task's files look like) -> ``data`` (reading them) ->
``finetune`` (one task and seed) -> ``metrics`` -> ``report`` (files written) -> ``run``
(the whole evaluation) -> ``cli`` (``zhbert eval clue``). Heavy libraries (torch, wandb,
matplotlib) are imported inside functions.
"""
