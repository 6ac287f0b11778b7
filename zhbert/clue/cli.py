"""``zhbert eval clue``: argument parsing only; the work is :func:`zhbert.clue.run.run_clue`."""

from __future__ import annotations

import json


def add_cli(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on downstream benchmarks")
    esub = p.add_subparsers(dest="eval_command", required=True)
    c = esub.add_parser(
        "clue", help="fine-tune and evaluate on CLUE 1.1 classification tasks",
        description="Fine-tune a BERT checkpoint on CLUE classification tasks for one or more seeds; "
        "write results.json/md/png, dev predictions and a CLUE 1.1 submission zip to --output. "
        "Per-task defaults come from configs/clue/<task>.yaml; flags override them.")
    c.add_argument("--model", required=True, help="registry name, HF-format dir, zhbert step_<N>/ or run dir")
    c.add_argument("--tasks", default="all", help="comma list of afqmc,tnews,iflytek,cmnli,ocnli,wsc,csl or all")
    c.add_argument("--data-dir", required=True, help="directory holding CLUE's <task>_public/ folders")
    c.add_argument("--output", required=True, help="output directory (reruns skip finished task/seed pairs)")
    c.add_argument("--seeds", default="1", help="comma list of fine-tuning seeds (default: 1)")
    c.add_argument("--epochs", type=float, help="training epochs (default: the task config's)")
    c.add_argument("--lr", type=float, help="peak learning rate (default: the task config's)")
    c.add_argument("--batch-size", type=int, help="training batch size (default: the task config's)")
    c.add_argument("--max-seq-length", type=int, help="tokens per example, truncated longest-first "
                   "(default: the task config's)")
    c.add_argument("--warmup-ratio", type=float, help="share of the steps spent warming up (default 0.1)")
    c.add_argument("--eval-every", type=int, help="dev evaluation every N steps (0 = epoch ends only)")
    c.add_argument("--max-train-samples", type=int, help="fixed random subset of the train set (same for all seeds)")
    c.add_argument("--max-eval-samples", type=int, help="first N rows of the dev file")
    c.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    c.add_argument("--deepspeed", action="store_true", help="train through a single-process DeepSpeed engine")
    c.add_argument("--wandb-mode", choices=["offline", "online", "disabled"], default="offline",
                   help="wandb logging of every task/seed run (default: offline)")
    c.add_argument("--config-dir", help="directory of <task>.yaml defaults (default: configs/clue)")
    c.add_argument("overrides", nargs="*", help="key=value overrides of the task config (e.g. weight_decay=0)")
    c.set_defaults(func=_run_clue)


def _run_clue(args) -> int:
    from pathlib import Path

    from zhbert.clue.run import run_clue
    from zhbert.clue.tasks import parse_tasks
    from zhbert.errors import ConfigError

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r}: expected a comma list of integers") from None
    if not seeds:
        raise ConfigError("--seeds: no seed given")
    overrides = list(args.overrides)
    for flag in ("epochs", "lr", "batch_size", "max_seq_length", "warmup_ratio", "eval_every"):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{flag}={json.dumps(value)}")
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"--device {device!r}: expected cpu or cuda")
    results = run_clue(
        args.model, parse_tasks(args.tasks), args.data_dir, args.output, seeds, overrides,
        max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples, device=device,
        use_deepspeed=args.deepspeed, wandb_mode=args.wandb_mode,
        explicit_tasks=args.tasks.strip().lower() != "all",
        config_dir=Path(args.config_dir) if args.config_dir else None)
    print((Path(args.output) / "results.md").read_text(encoding="utf-8"))
    return 0
