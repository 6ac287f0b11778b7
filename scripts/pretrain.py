#!/usr/bin/env python
"""Pretrain a Chinese BERT (MLM + NSP) under DeepSpeed.

    python scripts/pretrain.py                                     # tiny model, sample corpus, CPU
    deepspeed --num_gpus 2 scripts/pretrain.py --config configs/pretrain/tiny.yaml train.max_steps=50
    deepspeed --hostfile hostfile scripts/pretrain.py --config configs/pretrain/base_phase1.yaml

Trailing ``section.key=value`` arguments override the YAML. All the work is in
``zhbert.train.trainer.train``; see docs/pretraining.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_CONFIG = "configs/pretrain/tiny.yaml"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"pretraining YAML (default: {DEFAULT_CONFIG})")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None,
                   help="set by the deepspeed launcher (LOCAL_RANK is read from the environment)")
    p.add_argument("--deepspeed_config", "--deepspeed-config", metavar="FILE",
                   help="a DeepSpeed JSON merged into the derived one (= deepspeed.config_file=FILE); keys "
                   "zhbert derives (batch sizes, precision, ZeRO stage, optimizer, scheduler) may only "
                   "repeat the derived value or be \"auto\"")
    p.add_argument("--deepspeed", action="store_true",
                   help="accepted for compatibility with DeepSpeed scripts (DeepSpeed is always used)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.max_steps=20")
    args = p.parse_args(argv)
    if args.deepspeed_config:
        args.overrides = [f"deepspeed.config_file={args.deepspeed_config}", *args.overrides]

    from zhbert.errors import ZhbertError, disk_error, exit_code

    try:
        from zhbert.config import load_config
        from zhbert.train.launch import setup_env

        cfg = load_config(args.config, args.overrides)
        setup_env()  # env defaults before DeepSpeed is imported
        from zhbert.train.launch import multinode_env_warning

        warning = multinode_env_warning()
        if warning and os.environ.get("RANK", "0") == "0":
            print(f"pretrain: warning: {warning}", file=sys.stderr, flush=True)
        from zhbert.train.trainer import train

        summary = train(cfg)
    except ZhbertError as e:
        print(f"pretrain: error: {e}", file=sys.stderr)
        return exit_code(e)
    except OSError as e:  # a full or read-only disk met outside the places that name it already
        err = disk_error(e, e.filename or "?")
        if err is None:
            raise
        print(f"pretrain: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pretrain: interrupted", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":
        last = summary.get("last") or {}
        loss = f"; loss {last['loss']:.4f}" if isinstance(last.get("loss"), float) else ""
        ev = f", eval mlm_acc {last['eval/mlm_acc']:.3f}" if isinstance(last.get("eval/mlm_acc"), float) else ""
        if summary.get("stopped_at_budget"):
            print(f"pretrain: stopped at the time budget at step {summary['step']} after "
                  f"{summary['train_seconds'] / 60:.2f} training minutes (train.max_minutes="
                  f"{summary['max_minutes']:g}){loss}{ev}; checkpoint {summary['checkpoint']}", flush=True)
        else:
            print(f"pretrain: done at step {summary['step']}{loss}{ev}; checkpoint {summary['checkpoint']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
