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
    p.add_argument("--format", choices=["auto", "bert", "plain", "jsonl", "wiki", "wikidump", "parquet", "datasets"],
                   help="corpus format (default: detected per file)")
    p.add_argument("--text-field", help="jsonl field / parquet or datasets column holding the text (default: text)")
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
    b.add_argument("--format", default="auto",
                   choices=["auto", "bert", "plain", "jsonl", "wiki", "wikidump", "parquet", "datasets"],
                   help="corpus format (default: detected per file)")
    b.add_argument("--text-field", default="text",
                   help="jsonl field / parquet or datasets column holding the text (default: text)")
    b.add_argument("--min-freq", type=int, default=1, help="drop characters seen fewer times (default 1)")
    b.add_argument("--fullwidth", action="store_true",
                   help="fold full-width ASCII forms first; use it only if the data is prepared with "
                   "data.fullwidth=true (default: off, as zhbert prepare)")
    b.add_argument("--t2s", action="store_true", help="traditional -> simplified first (as data.t2s=true)")
    b.set_defaults(func=_run_vocab_build)
    e = vsub.add_parser("extend", help="append a corpus's missing characters to a model's vocab, resizing its "
                        "embeddings (domain adaptation: docs/domain_adaptation.md)")
    e.add_argument("--base", required=True, help="the model to extend: registry name, hub id, HF dir, step or run dir")
    e.add_argument("--input", nargs="+", required=True, help="domain corpus files or directories (any corpus format)")
    e.add_argument("--add", type=int, required=True, help="how many tokens to append, most frequent first")
    e.add_argument("--output", required=True, help="directory to write the extended HF-format model into")
    e.add_argument("--words", action="store_true", help="also add non-Chinese words the base vocab splits "
                   "into pieces or maps to [UNK] (Chinese words cannot be BERT tokens: characters only)")
    e.add_argument("--format", default="auto",
                   choices=["auto", "bert", "plain", "jsonl", "wiki", "wikidump", "parquet", "datasets"],
                   help="corpus format (default: detected per file)")
    e.add_argument("--text-field", default="text",
                   help="jsonl field / parquet or datasets column holding the text (default: text)")
    e.set_defaults(func=_run_vocab_extend)


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


def _run_vocab_extend(args) -> int:
    from pathlib import Path

    from zhbert.train.vocab_extend import STATS_NAME, extend_vocab

    stats = extend_vocab(args.base, args.input, args.add, args.output, words=args.words, fmt=args.format,
                         text_field=args.text_field)
    print(stats.line())
    print(Path(args.output) / STATS_NAME)
    return 0


# --------------------------------------------------------------------------------------
# zhbert download


def _add_download(sub) -> None:
    p = sub.add_parser(
        "download", help="fetch a released checkpoint (registry name, hub id or URL)",
        description="Download a checkpoint into the cache and print its local directory (only "
        "that, on stdout). Names come from configs/checkpoints.yaml, $ZHBERT_REGISTRY and "
        "--registry; hub ids (org/name) and http(s) URLs of .tar.gz/.zip bundles work directly.")
    p.add_argument("name", nargs="?", metavar="NAME_OR_URL")
    p.add_argument("--cache-dir", help="default: $ZHBERT_CACHE, $XDG_CACHE_HOME/zhbert or ~/.cache/zhbert "
                   "(URL bundles); hub entries use the Hugging Face cache unless this is given")
    p.add_argument("--revision", help="hub branch, tag or commit")
    p.add_argument("--registry", action="append", default=[], metavar="FILE",
                   help="extra registry YAML (repeatable; later files override earlier names)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="give up on a URL download when the server sends nothing for this long "
                   "(connecting, waiting for a reply, or between data; default: 60)")
    p.add_argument("--list", action="store_true", help="show the registry and what is cached")
    p.set_defaults(func=_run_download)


def _run_download(args) -> int:
    from zhbert.errors import ConfigError
    from zhbert.hub.download import download, list_registry

    if args.list:
        sys.stdout.write(list_registry(args.registry, args.cache_dir))
        return 0
    if not args.name:
        raise ZhbertError("give a checkpoint NAME_OR_URL (or --list)")
    if not (args.timeout > 0 and args.timeout != float("inf")):  # NaN fails the first test
        raise ConfigError(f"--timeout {args.timeout:g}: expected a positive number of seconds")
    print(download(args.name, cache_dir=args.cache_dir, revision=args.revision,
                   registry_files=args.registry, timeout=args.timeout))
    return 0


# --------------------------------------------------------------------------------------
# zhbert release


def _add_release(sub) -> None:
    p = sub.add_parser(
        "release", help="bundle a pretraining checkpoint for others: HF dir, model card, SHA256SUMS",
        description="Build a release directory from a pretraining checkpoint (RUN/checkpoints/"
        "step_<N>/): HF BertForPreTraining weights with both heads, tokenizer files, a README.md "
        "model card and a SHA256SUMS manifest; with --tar also a deterministic .tar.gz next to it. "
        "Prints (and writes as OUT/registry_entry.yaml) the registry entry for `zhbert download`.")
    p.add_argument("ckpt", metavar="CKPT", help="step_<N>/ checkpoint dir (or its hf/, or a run dir)")
    p.add_argument("out", metavar="OUT", help="release directory to create")
    p.add_argument("--results", help="results.json of `zhbert eval clue` for the model card")
    p.add_argument("--tar", action="store_true", help="also write OUT/../NAME.tar.gz")
    p.add_argument("--name", help="release name (default: OUT's directory name)")
    p.add_argument("--url-placeholder", metavar="URL", help="url to put in the registry entry")
    p.add_argument("--description", help="one-line description for the registry entry")
    p.set_defaults(func=_run_release)


def _run_release(args) -> int:
    from zhbert.release import build_release

    rel = build_release(args.ckpt, args.out, results=args.results, tar=args.tar, name=args.name,
                        url_placeholder=args.url_placeholder, description=args.description)
    print(f"release directory: {rel.directory}", file=sys.stderr)
    if rel.tarball:
        print(f"tarball: {rel.tarball} ({rel.size:,} bytes, sha256 {rel.sha256})", file=sys.stderr)
    print(f"registry entry ({rel.directory / 'registry_entry.yaml'}):", file=sys.stderr)
    sys.stdout.write(rel.registry_yaml)
    return 0


# --------------------------------------------------------------------------------------
# Commands of later stages register here (export, plot, eval).


def _add_checkpoint_tools(sub) -> None:
    p = sub.add_parser(
        "export", help="checkpoint (step_<N>/ or DeepSpeed/ZeRO state) -> HF-format directory",
        description="Write config.json + model.safetensors (+ tokenizer files) that "
        "transformers.BertForPreTraining.from_pretrained loads. CKPT is a step_<N> directory, a "
        "run directory (newest complete checkpoint) or a bare DeepSpeed checkpoint folder.")
    p.add_argument("ckpt", help="checkpoint directory")
    p.add_argument("out", help="output directory (must not exist or be empty)")
    p.add_argument("--tokenizer", help="directory with vocab.txt to include (default: from the checkpoint)")
    p.set_defaults(func=_run_export)

    u = sub.add_parser(
        "universal", help="convert a step_<N> checkpoint to a DeepSpeed universal checkpoint (world-size change)",
        description="Runs deepspeed.checkpoint.ds_to_universal on STEP_DIR/ds/<tag> and records the result in "
        "meta.json. Then resume on any number of ranks with train.resume=STEP_DIR train.resume_universal=true. "
        "ZeRO-0 checkpoints need no conversion (it says so).")
    u.add_argument("step_dir", help="a complete checkpoints/step_<N> directory")
    u.set_defaults(func=_run_universal)

    g = sub.add_parser("plot", help="loss/accuracy curves (PNG) from RUN_DIR/metrics.jsonl",
                       description="Write loss.png, accuracy.png and lr.png for a training run.")
    g.add_argument("run_dir", help="a training output_dir (holds metrics.jsonl)")
    g.add_argument("--out", help="output directory (default: RUN_DIR/plots)")
    g.set_defaults(func=_run_plot)

    v = sub.add_parser(
        "verdict", help="did pretraining work? the newest checkpoint vs the unigram and coin-flip baselines",
        description="Score RUN_DIR's newest checkpoint on its whole validation split: masked-LM loss and "
        "accuracy against predicting characters by their frequency, NSP/SOP accuracy against 50%%.")
    v.add_argument("run_dir", help="a training output_dir")
    v.add_argument("--json", help="also write the figures to this JSON file")
    v.set_defaults(func=_run_verdict)


def _run_export(args) -> int:
    from zhbert.train.checkpoint import export

    print(export(args.ckpt, args.out, tokenizer_dir=args.tokenizer))
    return 0


def _run_universal(args) -> int:
    from zhbert.train.checkpoint import NothingToConvert, to_universal

    try:
        print(to_universal(args.step_dir))
    except NothingToConvert as e:
        print(f"zhbert universal: {e}")
    return 0


def _run_plot(args) -> int:
    from zhbert.train.plot import plot_run

    for path in plot_run(args.run_dir, args.out):
        print(path)
    return 0


def _run_verdict(args) -> int:
    from pathlib import Path

    from zhbert.train import verdict

    v = verdict.verdict(args.run_dir)
    print("\n".join(v.lines()))
    if args.json:
        verdict.write(v, Path(args.json))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zhbert", description="Chinese BERT pretraining pipeline")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    _add_prepare(sub)
    _add_vocab(sub)
    _add_checkpoint_tools(sub)
    from zhbert.clue.cli import add_cli as _add_eval

    _add_eval(sub)
    _add_download(sub)
    _add_release(sub)
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
