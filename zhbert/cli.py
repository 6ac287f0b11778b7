"""The ``zhbert`` command line.

Each subcommand parses its arguments, loads configuration and calls ONE library function.
Errors the user can cause (``ZhbertError``) print a one-line message and exit with status 2.
Library modules are imported lazily so ``zhbert --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from zhbert.errors import ZhbertError


# --------------------------------------------------------------------------------------
# zhbert prepare


def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="corpus -> jieba whole-word NSP instances (Arrow, datasets.load_from_disk)",
        description="Read corpora, segment with jieba once, build sentence-pair instances and "
        "write them with `datasets` (train/validation) plus stats.json. Flags override the "
        "`data` section of --config.",
    )
    p.add_argument("--config", help="YAML with a `data:` section (e.g. configs/pretrain/tiny.yaml)")
    p.add_argument("--input", nargs="+", help="corpus files or directories")
    p.add_argument("--output", help="output directory (data.dir)")
    p.add_argument("--vocab", help="BERT vocab.txt, a directory holding one, or a checkpoint name "
                   "(bert-base-chinese)")
    p.add_argument("--format", choices=["auto", "bert", "plain", "jsonl", "wiki"],
                   help="corpus format (default: detected per file)")
    p.add_argument("--text-field", help="jsonl field holding the text (default: text)")
    p.add_argument("--t2s", action="store_true", default=None, help="convert traditional to simplified")
    p.add_argument("--fullwidth", action="store_true", default=None,
                   help="fold full-width ASCII forms (，！Ａ１) to ASCII (default: off, as bert-base-chinese)")
    p.add_argument("--max-seq-length", type=int, help="tokens per instance, [CLS]/[SEP] included (default 128)")
    p.add_argument("--pair-mode", choices=["nsp", "sop", "none"],
                   help="nsp: Google's next-sentence pairs (default); sop: sentence order; none: packed segments")
    p.add_argument("--workers", type=int, help="worker processes (default 1)")
    p.add_argument("--seed", type=int, help="seed of the pairing, splitting and validation choice (default 12345)")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="replace an existing output directory (the old one stays until the new one is complete)")
    p.add_argument("overrides", nargs="*", help="data.key=value overrides")
    p.set_defaults(func=_run_prepare)


def _run_prepare(args) -> int:
    from zhbert.config import PrepareFileConfig, PretrainConfig, load_config
    from zhbert.prep.prepare import prepare

    overrides = list(args.overrides)
    flag_map = {
        "input": "input", "output": "dir", "vocab": "vocab", "format": "format",
        "text_field": "text_field", "t2s": "t2s", "fullwidth": "fullwidth", "max_seq_length": "max_seq_length",
        "pair_mode": "pair_mode", "workers": "workers", "seed": "seed", "overwrite": "overwrite",
    }
    for flag, key in flag_map.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"data.{key}={json.dumps(value, ensure_ascii=False)}")
    cls = PrepareFileConfig
    if args.config and set(_config_sections(args.config)) - {"data"}:
        cls = PretrainConfig  # a full pretraining config: use its data section
    cfg = load_config(args.config, overrides, cls=cls)
    stats = prepare(cfg.data)
    print(json.dumps(stats, ensure_ascii=False, indent=2))
    return 0


def _config_sections(path: str) -> list[str]:
    """The top-level keys of a YAML config; a missing, unreadable, non-UTF-8 or invalid file
    is a one-line ``ConfigError`` naming it (and the line, for YAML errors)."""
    import yaml

    from zhbert.errors import ConfigError

    try:
        with open(path, encoding="utf-8") as f:
            top = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: config path is a directory, not a YAML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save the config as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror or e}") from None
    return list(top) if isinstance(top, dict) else []


# --------------------------------------------------------------------------------------
# zhbert vocab build


def _add_vocab(sub) -> None:
    p = sub.add_parser("vocab", help="vocabulary tools")
    vsub = p.add_subparsers(dest="vocab_command", required=True)
    b = vsub.add_parser("build", help="build a BERT-layout character vocab.txt from a corpus")
    b.add_argument("--input", nargs="+", required=True, help="corpus files or directories")
    b.add_argument("--output", required=True, help="path of the vocab.txt to write")
    b.add_argument("--size", type=int, default=21128, help="vocabulary size, special tokens included "
                   "(default 21128, bert-base-chinese's)")
    b.add_argument("--format", default="auto", choices=["auto", "bert", "plain", "jsonl", "wiki"],
                   help="corpus format (default: detected per file)")
    b.add_argument("--text-field", default="text", help="jsonl field holding the text (default: text)")
    b.add_argument("--min-freq", type=int, default=1, help="drop characters seen fewer times (default 1)")
    b.add_argument("--fullwidth", action="store_true",
                   help="fold full-width ASCII forms first; use it only if the data is prepared with "
                   "data.fullwidth=true (default: off, as zhbert prepare)")
    b.add_argument("--t2s", action="store_true", help="traditional -> simplified first (as data.t2s=true)")
    b.set_defaults(func=_run_vocab_build)


def _run_vocab_build(args) -> int:
    from zhbert.errors import DataError
    from zhbert.files import os_error_message
    from zhbert.prep.tokenizer import build_vocab

    try:
        path = build_vocab(args.input, args.output, size=args.size, fmt=args.format,
                           min_freq=args.min_freq, text_field=args.text_field, fullwidth=args.fullwidth,
                           t2s=args.t2s)
    except OSError as e:  # disk full, read-only folder, no permission: one line, not a traceback
        msg = os_error_message(e, args.output)
        if msg is None:
            raise
        raise DataError(msg) from None
    print(path)
    return 0


# --------------------------------------------------------------------------------------
# Commands of later stages register here (export, plot, eval, download, release).


def _add_later_stages(sub) -> None:
    for module, fn in (
        ("zhbert.train.checkpoint", "add_cli"),  # zhbert export
        ("zhbert.train.plot", "add_cli"),  # zhbert plot
        ("zhbert.clue.cli", "add_cli"),  # zhbert eval clue
        ("zhbert.hub.registry", "add_cli"),  # zhbert download
        ("zhbert.hub.release", "add_cli"),  # zhbert release
    ):
        try:
            mod = __import__(module, fromlist=[fn])
        except ModuleNotFoundError as e:
            if e.name and (e.name == module or module.startswith(e.name + ".")):
                continue  # stage not present in this build
            raise
        getattr(mod, fn)(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zhbert", description="Chinese BERT pretraining pipeline")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    _add_prepare(sub)
    _add_vocab(sub)
    _add_later_stages(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from zhbert import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except ZhbertError as e:
        print(f"zhbert {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"zhbert {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
