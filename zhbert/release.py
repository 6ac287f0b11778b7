"""Release bundles: a pretraining checkpoint -> a directory (and tarball) others can download.

``zhbert release runs/pretrain/base/checkpoints/step_100000 dist/zhbert-base-wwm --tar`` writes

    dist/zhbert-base-wwm/
        config.json  model.safetensors          HF BertForPreTraining (MLM + NSP heads)
        vocab.txt  tokenizer.json  tokenizer_config.json  special_tokens_map.json
        README.md                               model card (shape, tokenizer, masking, corpus,
                                                tokens seen, steps, final losses, CLUE table)
        pretraining_meta.json                   the checkpoint's meta.json, verbatim
        clue_results.json                       with --results
        SHA256SUMS                              `cd dist/zhbert-base-wwm && sha256sum -c SHA256SUMS`
        registry_entry.yaml                     a registry file for `zhbert download --registry`
    dist/zhbert-base-wwm.tar.gz                 with --tar: the directory above (minus
                                                registry_entry.yaml) under one top-level dir

The tarball is deterministic (sorted members, mtime 0, uid/gid 0, no gzip timestamp), so
building the same checkpoint twice gives the same sha256. Nothing in the model card depends
on the clock either.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from zhbert.errors import CheckpointError, ZhbertError
from zhbert.hub.resolve import resolve_model_dir
from zhbert.train.checkpoint import read_meta

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
HEAD_KEYS = {"MLM": "cls.predictions.transform.dense.weight", "NSP": "cls.seq_relationship.weight"}
DEFAULT_URL = "https://REPLACE-ME.example.org/{name}.tar.gz"


@dataclass
class Release:
    """What :func:`build_release` produced."""

    name: str
    directory: Path
    tarball: Optional[Path] = None
    sha256: Optional[str] = None  # of the tarball
    size: Optional[int] = None  # of the tarball
    registry_entry: dict[str, Any] = field(default_factory=dict)  # {"checkpoints": {name: {...}}}
    registry_yaml: str = ""


# ============================================================================ the checkpoint
@dataclass
class _Source:
    hf: Path  # config.json + weights + vocab
    meta: dict[str, Any]
    meta_path: Optional[Path]
    run_dir: Optional[Path]  # holds metrics.jsonl


def locate_checkpoint(path: str | Path) -> _Source:
    """A step_<N>/ dir, its hf/ dir, or a run dir -> the pieces of a release.

    The weights are the HF directory :func:`zhbert.hub.resolve.resolve_model_dir` picks (a
    run dir: its newest complete step); meta.json is the step's (or one beside the weights).
    """
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"{p}: checkpoint directory not found")
    hf = resolve_model_dir(p, what="release CKPT")
    meta_path = next((m for m in (hf / "meta.json", hf.parent / "meta.json") if m.is_file()), None)
    meta: dict[str, Any] = {}
    if meta_path is not None:
        meta = read_meta(meta_path.parent)  # CheckpointError naming the file when unreadable
        if not isinstance(meta, dict):
            raise CheckpointError(f"{meta_path}: expected a JSON object")
    step_dir = meta_path.parent if meta_path else hf
    run_dir = None
    for cand in (step_dir.parent.parent, step_dir.parent, step_dir):
        if (cand / "metrics.jsonl").is_file():
            run_dir = cand
            break
    return _Source(hf=hf, meta=meta, meta_path=meta_path, run_dir=run_dir)


def _get(d: Any, *paths: str, default: Any = None) -> Any:
    """First present value among dotted ``paths`` (meta.json layouts vary a little)."""
    for path in paths:
        cur = d
        for k in path.split("."):
            if isinstance(cur, dict) and k in cur:
                cur = cur[k]
            else:
                cur = None
                break
        if cur is not None:
            return cur
    return default


def _final_metrics(run_dir: Optional[Path], step: Optional[int]) -> dict[str, dict[str, Any]]:
    """Last train row (has ``loss``) and last eval row (``eval_*`` / ``split: validation``)."""
    out: dict[str, dict[str, Any]] = {}
    if run_dir is None:
        return out
    with open(run_dir / "metrics.jsonl", encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            if not isinstance(row, dict):
                continue
            if step is not None and isinstance(row.get("step"), int) and row["step"] > step:
                continue  # a later checkpoint's metrics
            # The trainer logs eval results (eval/loss ...) in the same row as the train step.
            if row.get("split") in ("validation", "eval") or any(k.startswith("eval") for k in row):
                out["eval"] = {k: v for k, v in row.items() if k == "step" or k.startswith("eval")
                               or row.get("split") in ("validation", "eval")}
            if "loss" in row and row.get("split") in (None, "train"):
                out["train"] = {k: v for k, v in row.items() if not k.startswith("eval")}
    return out


# =============================================================================== the bundle
def _copy_model(src: _Source, out: Path) -> dict[str, Any]:
    """config.json + model.safetensors (converted from .bin if needed) + tokenizer files."""
    from zhbert.model.modeling import BertForPreTraining
    from zhbert.model.weights import load_state_dict, normalize_state_dict, save_state_dict

    sd = normalize_state_dict(load_state_dict(src.hf))
    missing = [head for head, key in HEAD_KEYS.items() if key not in sd]
    if missing:
        raise CheckpointError(f"{src.hf}: the checkpoint has no {' or '.join(missing)} head "
                              f"({', '.join(HEAD_KEYS[h] for h in missing)}); a release carries "
                              f"BertForPreTraining weights with both heads")
    # Loading through the model checks every shape against config.json (names the tensor).
    model = BertForPreTraining.from_pretrained(src.hf)
    n_params = sum(p.numel() for p in model.parameters())
    if model.config.pre_layernorm:  # an older pre-LN checkpoint may say model_type bert: re-name it
        model.config.save_pretrained(out, architectures=["BertForPreTraining"])
    else:
        shutil.copy2(src.hf / "config.json", out / "config.json")
    if (src.hf / "model.safetensors").is_file():
        shutil.copy2(src.hf / "model.safetensors", out / "model.safetensors")
    else:  # sharded or .bin: one safetensors file with the normalised names
        save_state_dict(sd, out / "model.safetensors")
    for name in TOKENIZER_FILES:
        if (src.hf / name).is_file():
            shutil.copy2(src.hf / name, out / name)
    return {"config": json.loads((out / "config.json").read_text(encoding="utf-8")), "params": n_params}


def _stats(meta: dict[str, Any]) -> tuple[Optional[str], Optional[dict]]:
    data_dir = _get(meta, "data_dir", "config.data.dir", "data.dir")  # data_dir: resolved path
    if not data_dir:
        return None, None
    stats_path = Path(data_dir) / "stats.json"
    try:
        return str(data_dir), json.loads(stats_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return str(data_dir), None


def _find_number(d: Any, key: str) -> Optional[int | float]:
    """``key`` at the top of ``d``, else summed over its split sub-dicts (train + validation)."""
    if not isinstance(d, dict):
        return None
    if isinstance(d.get(key), (int, float)) and not isinstance(d.get(key), bool):
        return d[key]
    parts = [v[key] for v in d.values() if isinstance(v, dict) and isinstance(v.get(key), (int, float))]
    return sum(parts) if parts else None


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return "–" if math.isnan(x) else f"{x:.4f}" if abs(x) < 100 else f"{x:,.0f}"
    return str(x)


def _clue_section(results: dict[str, Any]) -> list[str]:
    """The CLUE table from `zhbert eval clue`'s results.json (its own renderer when possible)."""
    try:
        from zhbert.clue.report import results_markdown

        text = results_markdown(results)
        lines = text.splitlines()
        if lines and lines[0].startswith("# "):
            lines = lines[1:]
        return [ln[1:] if ln.startswith("## ") else ln for ln in lines]
    except Exception:  # an older/newer results.json: a generic table of whatever is there
        tasks = results.get("tasks") if isinstance(results, dict) else None
        if not isinstance(tasks, dict) or not tasks:
            return ["", "(results.json has no `tasks`; nothing to show)"]
        rows = ["", "| task | dev accuracy max (%) | mean (%) |", "|---|---|---|"]
        for task, r in tasks.items():
            r = r if isinstance(r, dict) else {}
            mx, mean = r.get("max", r.get("dev_accuracy")), r.get("mean")
            pct = lambda v: f"{100 * v:.2f}" if isinstance(v, (int, float)) else "–"  # noqa: E731
            rows.append(f"| {task} | {pct(mx)} | {pct(mean)} |")
        return rows


def model_card(name: str, model: dict[str, Any], src: _Source, vocab_size: int,
               results: Optional[dict[str, Any]] = None) -> str:
    """README.md of a release: everything needed to judge and reuse the checkpoint."""
    cfg, meta = model["config"], src.meta
    step = _get(meta, "step", "global_step")
    metrics = _final_metrics(src.run_dir, step if isinstance(step, int) else None)
    masking = _get(meta, "config.masking.strategy", "masking.strategy", "masking_strategy")
    pair_mode = _get(meta, "config.data.pair_mode", "data.pair_mode")
    seq_len = _get(meta, "config.data.max_seq_length", "data.max_seq_length")
    tokens = _get(meta, "tokens_seen", "tokens", "consumed_tokens")
    samples = _get(meta, "samples_seen", "samples", "consumed_samples")
    data_dir, stats = _stats(meta)
    tok_cfg = {}
    if (src.hf / "tokenizer_config.json").is_file():
        try:
            tok_cfg = json.loads((src.hf / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    vocab_sha = hashlib.sha256((src.hf / "vocab.txt").read_bytes()).hexdigest()
    heads = "MLM + " + ("SOP" if pair_mode == "sop" else "NSP (untrained: pair_mode none)"
                        if pair_mode == "none" else "NSP")

    # transformers has no pre-LN BERT (config.json says model_type zhbert-preln-bert, which it
    # refuses): such a card must not send readers to transformers.
    pre_ln = bool(cfg.get("pre_layernorm", False))
    library = "zhbert" if pre_ln else "transformers"
    loads = (f"a zhbert pre-LN BERT checkpoint (`model_type: zhbert-preln-bert`): transformers has no pre-LN "
             f"BERT and refuses it; load it with `zhbert.BertForPreTraining.from_pretrained(dir)`." if pre_ln else
             f"a Hugging Face `BertForPreTraining` checkpoint: "
             f"`transformers.BertForPreTraining.from_pretrained(dir)` and "
             f"`zhbert.BertForPreTraining.from_pretrained(dir)` both load it.")
    lines = ["---", "language: zh", "license: apache-2.0", f"library_name: {library}",
             "pipeline_tag: fill-mask", "tags: [bert, chinese, zhbert]", "---", "",
             f"# {name}", "",
             f"Chinese BERT pretrained from scratch with zhbert "
             f"({masking or 'unknown'} masking, {heads} heads). The directory is {loads}", "",
             "## Model", "",
             "| layers | hidden | heads | intermediate | max positions | activation | pre-LN | parameters |",
             "|---|---|---|---|---|---|---|---|",
             f"| {cfg.get('num_hidden_layers')} | {cfg.get('hidden_size')} | {cfg.get('num_attention_heads')} "
             f"| {cfg.get('intermediate_size')} | {cfg.get('max_position_embeddings')} | {cfg.get('hidden_act')} "
             f"| {_fmt(bool(cfg.get('pre_layernorm', False)))} | {model['params'] / 1e6:.2f}M |", "",
             "## Tokenizer", "",
             f"Character-level (bert-base-chinese style): every CJK character is a token, other text is "
             f"WordPiece. Vocabulary: **{vocab_size:,}** tokens (`vocab.txt`, sha256 `{vocab_sha[:16]}…`), "
             f"lower-casing: {_fmt(bool(tok_cfg.get('do_lower_case', True)))}; text normalisation in "
             f"pretraining: {_normalisation(tok_cfg)}.", "",
             "Load it with `transformers.AutoTokenizer.from_pretrained(dir)` (it builds a "
             "`PreTrainedTokenizerFast` from `tokenizer.json`, whose normalizer carries that normalisation): "
             "on raw text it gives the ids the model was pretrained on (zhbert's tests check this on ~90,000 "
             "benchmark dev strings). Do not use `BertTokenizer`/`BertTokenizerFast` by name: transformers 5 rebuilds their "
             "normalizer from `vocab.txt` and drops anything else in `tokenizer.json`.", "",
             "## Pretraining", "",
             "| | |", "|---|---|",
             f"| masking strategy | {masking or '–'} |",
             f"| sentence-pair task | {pair_mode or '–'} |",
             f"| sequence length | {_fmt(seq_len)} |",
             f"| optimizer steps | {_fmt(step)} |",
             f"| samples seen | {_fmt(samples)} |",
             f"| tokens seen | {_fmt(tokens)} |"]
    micro = _get(meta, "config.train.micro_batch_size")
    accum = _get(meta, "config.train.gradient_accumulation_steps")
    world = _get(meta, "world_size")
    if all(isinstance(x, int) for x in (micro, accum, world)):
        lines.append(f"| batch (sequences per step) | {_fmt(micro * accum * world)} "
                     f"({micro} × {accum} accumulation × {world} ranks) |")
    for keys, label in ((("config.train.lr",), "peak learning rate"),
                        (("config.train.max_steps",), "scheduled steps"),
                        (("precision", "config.deepspeed.precision"), "precision"),
                        (("zero_stage", "config.deepspeed.zero_stage"), "ZeRO stage")):
        value = _get(meta, *keys)
        if value is not None:
            lines.append(f"| {label} | {_fmt(value)} |")
    budget = _get(meta, "config.train.max_minutes")
    if isinstance(budget, (int, float)):
        lines.append(f"| time budget (training minutes) | {budget:g} ({_get(meta, 'config.train.schedule') or 'steps'} "
                     "schedule) |")
    seconds = meta.get("train_seconds")
    if isinstance(seconds, (int, float)) and seconds > 0:
        lines.append(f"| training time (minutes; start-up, eval and checkpoints excluded) | {seconds / 60:.1f} |")
    losses = []
    for split in ("train", "eval"):
        row = metrics.get(split)
        if row:
            vals = [f"{k} {_fmt(v)}" for k, v in row.items()
                    if "loss" in k and isinstance(v, (int, float))]
            losses.append(f"| final {split} loss (step {_fmt(row.get('step'))}) | {', '.join(vals)} |")
    if not losses:
        meta_losses = {k: v for k, v in meta.items() if "loss" in k and isinstance(v, (int, float))}
        if isinstance(meta.get("losses"), dict):
            meta_losses.update({k: v for k, v in meta["losses"].items() if isinstance(v, (int, float))})
        if meta_losses:
            losses.append(f"| final losses | {', '.join(f'{k} {_fmt(v)}' for k, v in meta_losses.items())} |")
    lines += losses or ["| final losses | – (no metrics.jsonl next to the checkpoint) |"]
    lines += ["", "## Corpus", ""]
    if data_dir is None:
        lines.append("Unknown (meta.json does not name the data directory).")
    else:
        # names, not the machine's absolute paths
        lines.append(f"Instances from `zhbert prepare` (data directory `{Path(data_dir).name}`).")
        if stats:
            lines += ["", "| | |", "|---|---|"]
            for key in ("documents", "sentences", "chars", "instances", "tokens"):
                value = _find_number(stats, key)
                if value is not None:
                    lines.append(f"| {key} | {_fmt(value)} |")
            if isinstance(stats.get("input"), list):
                lines.append(f"| input | {', '.join(Path(str(x)).name for x in stats['input'])} |")
        else:
            lines.append("(its `stats.json` was not reachable when the release was built.)")
    if results is not None:
        lines += ["", "## CLUE (dev)", *_clue_section(results)]
    lines += ["", "## Use", "", "```bash",
              f"zhbert download {name}            # after adding registry_entry.yaml to a registry",
              f"zhbert eval clue --model {name} --data-dir data/clue --output runs/clue/{name}",
              "sha256sum -c SHA256SUMS           # inside the directory: verify every file", "```", "",
              "```python",
              "from zhbert import BertForPreTraining" if pre_ln else "from transformers import BertForPreTraining",
              "from transformers import AutoTokenizer",
              f"model = BertForPreTraining.from_pretrained(\"path/to/{name}\")  # or `zhbert download` output",
              f"tok = AutoTokenizer.from_pretrained(\"path/to/{name}\")  # the pretraining ids", "```", ""]
    return "\n".join(lines)


def _normalisation(tok_cfg: dict) -> str:
    from zhbert.prep.tokenizer import NORMALIZATION_KEY

    norm = tok_cfg.get(NORMALIZATION_KEY) or {}
    done = [d for k, d in (("fullwidth", "full-width ASCII forms folded to ASCII (，→,)"),
                           ("t2s", "traditional → simplified (OpenCC; not in tokenizer.json: convert text "
                                   "yourself)")) if norm.get(k)]
    return "; ".join(done) if done else "none (raw text, as bert-base-chinese)"


def _write_sums(directory: Path) -> None:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name not in ("SHA256SUMS",))
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(directory).as_posix()}\n"
             for p in files]
    (directory / "SHA256SUMS").write_text("".join(lines), encoding="utf-8")


def deterministic_tar(directory: Path, tarball: Path, arcroot: str,
                      exclude: tuple[str, ...] = ()) -> None:
    """tar.gz of ``directory`` under ``arcroot/``: sorted, mtime 0, root-owned, no gzip time."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add(path: Path, arcname: str) -> None:
            info = tarfile.TarInfo(arcname)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.mode, info.size = 0o644, path.stat().st_size
                with open(path, "rb") as fh:
                    tf.addfile(info, fh)

        add(directory, arcroot)
        for path in sorted(directory.rglob("*"), key=lambda p: p.relative_to(directory).as_posix()):
            if path.name in exclude:
                continue
            add(path, f"{arcroot}/{path.relative_to(directory).as_posix()}")
    tmp = tarball.with_name(tarball.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(buf.getvalue())
    os.replace(tmp, tarball)


def registry_yaml(name: str, entry: dict[str, Any]) -> str:
    import yaml

    body = yaml.safe_dump({"checkpoints": {name: entry}}, sort_keys=False, allow_unicode=True)
    return ("# Registry entry for `zhbert download` (use with --registry FILE or ZHBERT_REGISTRY,\n"
            "# or paste under `checkpoints:` in configs/checkpoints.yaml). Replace the url.\n" + body)


def build_release(ckpt: str | Path, out: str | Path, *, results: Optional[str | Path] = None,
                  tar: bool = False, name: Optional[str] = None, url_placeholder: Optional[str] = None,
                  description: Optional[str] = None) -> Release:
    """Build a release directory (and optionally a tarball) from a pretraining checkpoint.

    ckpt: ``RUN/checkpoints/step_<N>/`` (or its ``hf/``, or a run dir: its newest complete step).
    out: the release directory; must not exist or be empty. The tarball goes next to it
        as ``<name>.tar.gz``, its top-level directory named ``<name>``.
    results: ``results.json`` from ``zhbert eval clue`` (a CLUE table in the model card).
    """
    from zhbert.prep.tokenizer import read_vocab

    src = locate_checkpoint(ckpt)
    out = Path(out)
    name = name or out.name
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ZhbertError(f"{out}: output exists and is not empty; choose a new directory")
    results_data = None
    if results is not None:
        try:
            results_data = json.loads(Path(results).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ZhbertError(f"{results}: cannot read CLUE results: {e}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model = _copy_model(src, tmp)
        vocab_size = len(read_vocab(tmp / "vocab.txt"))
        if src.meta_path is not None:
            shutil.copy2(src.meta_path, tmp / "pretraining_meta.json")
        if results_data is not None:
            shutil.copy2(results, tmp / "clue_results.json")
        (tmp / "README.md").write_text(model_card(name, model, src, vocab_size, results_data),
                                       encoding="utf-8")
        _write_sums(tmp)
        for f in tmp.iterdir():  # mkdtemp and copied tmp files are private; a release is not
            f.chmod(0o644)
        tmp.chmod(0o755)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    cfg = model["config"]
    desc = description or (f"zhbert {cfg.get('num_hidden_layers')}L/{cfg.get('hidden_size')}H, "
                           f"{_get(src.meta, 'config.masking.strategy', 'masking.strategy') or '?'} "
                           f"masking, {_get(src.meta, 'step', default='?')} steps")
    release = Release(name=name, directory=out)
    if tar:
        tarball = out.parent / f"{name}.tar.gz"
        deterministic_tar(out, tarball, name, exclude=("registry_entry.yaml",))
        from zhbert.hub.download import sha256_file

        release.tarball, release.size, release.sha256 = tarball, tarball.stat().st_size, sha256_file(tarball)
        entry = {"url": url_placeholder or DEFAULT_URL.format(name=name), "sha256": release.sha256,
                 "size": release.size, "format": "tar.gz", "description": desc}
    else:  # the directory itself, served file by file under a base URL
        sums = [ln.split("  ", 1) for ln in (out / "SHA256SUMS").read_text(encoding="utf-8").splitlines()]
        files = {fname: digest for digest, fname in sums}
        files["SHA256SUMS"] = hashlib.sha256((out / "SHA256SUMS").read_bytes()).hexdigest()
        entry = {"url": url_placeholder or DEFAULT_URL.format(name=name).removesuffix(".tar.gz") + "/",
                 "format": "files", "files": files, "description": desc}
    release.registry_entry = {"checkpoints": {name: entry}}
    release.registry_yaml = registry_yaml(name, entry)
    (out / "registry_entry.yaml").write_text(release.registry_yaml, encoding="utf-8")
    return release
