"""``zhbert eval clue``: argument parsing only; the work is :func:`zhbert.clue.run.run_clue`."""

from __future__ import annotations

import json


def add_cli(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on downstream benchmarks")
    esub = p.add_subparsers(dest="eval_command", required=True)
    c = esub.add_parser(
        "clue", help="fine-tune and evaluate on CLUE 1.1 (classification and reading comprehension)",
        description="Fine-tune BERT checkpoints on CLUE tasks for one or more seeds and grid points; "
        "write results.json/md/png, dev predictions and a CLUE 1.1 submission zip to --output. "
        "Defaults: configs/clue/<task>.yaml, then configs/clue/sizes.yaml for the model's size class; "
        "flags override them. --lr/--batch-size/--epochs take comma lists: a grid, selected by mean dev score.")
    c.add_argument("--model", required=True, action="append",
                   help="registry name, HF-format dir, zhbert step_<N>/ or run dir; repeat to compare models "
                   "(each is evaluated into <output>/<label>/, one table at <output>/results.md)")
    c.add_argument("--tasks", default="all", help="comma list of afqmc,tnews,iflytek,cmnli,ocnli,wsc,csl,"
                   "cmrc2018,chid,c3 or all")
    c.add_argument("--data-dir", required=True, help="directory holding CLUE's <task>_public/ folders")
    c.add_argument("--output", required=True, help="output directory (reruns skip finished task/seed pairs)")
    c.add_argument("--seeds", default="1", help="comma list of fine-tuning seeds (default: 1)")
    c.add_argument("--epochs", help="training epochs, or a comma list (grid) (default: the task config's)")
    c.add_argument("--lr", help="peak learning rate, or a comma list (grid), e.g. 1e-4,3e-4 (default: the task config's)")
    c.add_argument("--batch-size", help="training batch size, or a comma list (grid) (default: the task config's)")
    c.add_argument("--random-twin", action="store_true",
                   help="also evaluate the random-init twin of the (first) model: same config, vocab and "
                   "tokenizer, freshly initialised weights (seed 42), written to <output>/_models/random-init; "
                   "the table then shows what pretraining bought")
    c.add_argument("--save-models", action="store_true",
                   help="write every fine-tuned model (best dev weights, HF format: loads with transformers' "
                   "BertForSequenceClassification / BertForQuestionAnswering / BertForMultipleChoice) to "
                   "<task>/<point>/seed<k>/model/")
    c.add_argument("--train-file", action="append", default=[], metavar="TASK=PATH",
                   help="train on PATH instead of the data dir's train file (e.g. cmrc2018=cmrc2018_train.json; "
                   "CMRC2018 without one trains on the trial set)")
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

    cmp = esub.add_parser("compare", help="one CLUE table over existing `zhbert eval clue` outputs",
                          description="Read results.json of each DIR and write one results.md/png and "
                          "comparison.json (a row per model, the majority-class row, protocol warnings) to --output.")
    cmp.add_argument("dirs", nargs="+", metavar="DIR", help="--output dirs of earlier `zhbert eval clue` runs")
    cmp.add_argument("--output", required=True, help="where to write results.md, results.png, comparison.json")
    cmp.set_defaults(func=_compare)


def _list(flag: str, text, cast) -> list:
    from zhbert.errors import ConfigError

    if text is None:
        return []
    try:
        values = [cast(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--{flag} {text!r}: expected a number or a comma list of numbers") from None
    if not values:
        raise ConfigError(f"--{flag}: no value given")
    return values


def _compare(args) -> int:
    from pathlib import Path

    from zhbert.clue.run import compare, load_results

    combined = compare(load_results(args.dirs), args.output)
    print((Path(args.output) / "results.md").read_text(encoding="utf-8"))
    for w in combined["warnings"]:
        print(f"warning: {w}")
    return 0


def _run_clue(args) -> int:
    from pathlib import Path

    from zhbert.clue.run import run_clue, run_many
    from zhbert.clue.tasks import parse_tasks
    from zhbert.errors import ConfigError

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r}: expected a comma list of integers") from None
    if not seeds:
        raise ConfigError("--seeds: no seed given")
    overrides = list(args.overrides)
    for flag in ("max_seq_length", "warmup_ratio", "eval_every"):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{flag}={json.dumps(value)}")
    grid = {"lr": _list("lr", args.lr, float), "batch_size": _list("batch-size", args.batch_size, int),
            "epochs": _list("epochs", args.epochs, float)}
    train_files = {}
    for item in args.train_file:
        task, sep, path = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"--train-file {item!r}: expected TASK=PATH")
        spec = parse_tasks(task)[0]
        if not Path(path).is_file():
            raise ConfigError(f"--train-file {item!r}: {path} is not a file")
        train_files[spec.name] = Path(path)
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"--device {device!r}: expected cpu or cuda")
    kw = dict(overrides=overrides, grid=grid, max_train_samples=args.max_train_samples,
              max_eval_samples=args.max_eval_samples, device=device, use_deepspeed=args.deepspeed,
              wandb_mode=args.wandb_mode, explicit_tasks=args.tasks.strip().lower() != "all",
              config_dir=Path(args.config_dir) if args.config_dir else None, train_files=train_files,
              save_models=args.save_models)
    tasks = parse_tasks(args.tasks)
    models = list(args.model)
    if args.random_twin:
        from zhbert.clue.twin import random_twin
        from zhbert.hub.resolve import resolve_model_dir

        models.append(str(random_twin(resolve_model_dir(models[0], what="--model"),
                                      Path(args.output) / "_models" / "random-init")))
    if len(models) == 1:
        run_clue(args.model[0], tasks, args.data_dir, args.output, seeds, **kw)
    else:
        run_many(models, tasks, args.data_dir, args.output, seeds, **kw)
    print((Path(args.output) / "results.md").read_text(encoding="utf-8"))
    return 0
