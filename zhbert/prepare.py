"""Stage 6: ``zhbert prepare`` -- corpus -> segmented, aligned sentence-pair instances on disk.

    documents (zhbert.corpus, read and deduplicated in the main process, in input order)
      -> shards of ``shard_documents`` documents, or fewer when they reach ``shard_chars``
         characters (shard k = the k-th group: independent of the number of workers, so the
         output is too; the character cap keeps shards of long documents as small as shards of
         short ones, so workers finish together)
      -> worker processes, each with ONE tokenizer and ONE jieba dictionary for its lifetime:
         tokenize + segment + align (zhbert.segment), then sentence pairs (zhbert.instances)
         with ``random.Random`` seeded from (seed, shard, dupe pass, split)
      -> DIR/shards/shard_00000/{train,validation}.arrow + shard.json (written last: its
         presence means the shard is finished; a re-run reuses it)
      -> DIR as a ``datasets.DatasetDict`` (train, validation) + tokenizer files + stats.json
         + prepare_config.json + zhbert_prepare.json (marker, written last), shards removed.

Memory is bounded by the shards in flight (at most ``2 * workers`` shards are read ahead),
not by the corpus: documents stream from disk, and each worker writes its own Arrow files.
The price of streaming is that a random-next B segment is drawn from the same *shard* (as
Google's script draws from the same input file), not the whole corpus: with the default
2000 documents per shard the pool is large enough for the NSP task.

Validation documents are chosen by a hash of (seed, document id) against
``validation_fraction``, so the choice does not depend on shard size or workers; train and
validation instances are built from disjoint documents (random B segments too). If a corpus
of two or more documents would get no validation document, the last document of the first
shard that brings the count to two is moved to validation.

Resume: ``prepare_config.json`` (the resolved data config, input file sizes, vocab sha256) is
written first. A re-run with the same config reuses every finished shard; a directory made
with a different config (or any directory that is not a zhbert output) is refused unless
``overwrite``; a complete output with the same config is returned as it is.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import hashlib
import itertools
import json
import multiprocessing
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from zhbert.config import DataConfig
from zhbert.errors import DataError

FORMAT_VERSION = 1
MARKER = "zhbert_prepare.json"
CONFIG_FILE = "prepare_config.json"
STATS_FILE = "stats.json"
SHARDS_DIR = "shards"
SPLITS = ("train", "validation")
COLUMNS = ("input_ids", "token_type_ids", "next_sentence_label", "word_ids", "entity_ids")
# Config fields that do not change the output (a re-run may differ in these and still resume).
_NOT_IN_KEY = ("workers", "overwrite", "dir")
_SEGMENT_BATCH = 2048  # sentences per tokenizer/jieba batch inside a shard (one joined string)


def features():
    """The ``datasets.Features`` of the instance format (docs/DESIGN.md)."""
    import datasets

    return datasets.Features({
        "input_ids": datasets.List(datasets.Value("int32")),
        "token_type_ids": datasets.List(datasets.Value("int8")),
        "next_sentence_label": datasets.Value("int8"),
        "word_ids": datasets.List(datasets.Value("int32")),
        "entity_ids": datasets.List(datasets.Value("int32")),
    })


def _arrow_schema():
    import pyarrow as pa

    return pa.schema([
        ("input_ids", pa.list_(pa.int32())),
        ("token_type_ids", pa.list_(pa.int8())),
        ("next_sentence_label", pa.int8()),
        ("word_ids", pa.list_(pa.int32())),
        ("entity_ids", pa.list_(pa.int32())),
    ])


# ---------------------------------------------------------------------------------------
# Reading a finished output


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(dir: str | Path) -> bool:
    marker = _read_json(Path(dir) / MARKER)
    return bool(marker and marker.get("complete") and marker.get("format_version") == FORMAT_VERSION)


def read_prepare_meta(dir: str | Path) -> dict:
    """``DIR/prepare_config.json``: {"config": resolved DataConfig, "vocab_sha256", ...}."""
    d = Path(dir)
    meta = _read_json(d / CONFIG_FILE)
    if meta is None:
        raise DataError(f"{d}: not a zhbert prepare output (no readable {CONFIG_FILE}); run `zhbert prepare`")
    return meta


def load_prepared(dir: str | Path):
    """The instances of a complete ``zhbert prepare`` output as a ``datasets.DatasetDict``."""
    import datasets

    d = Path(dir)
    if not d.is_dir():
        raise DataError(f"{d}: prepared data directory not found; run `zhbert prepare --output {d}`")
    if not (d / MARKER).exists():
        raise DataError(f"{d}: not a zhbert prepare output (no {MARKER})")
    if not is_complete(d):
        raise DataError(f"{d}: `zhbert prepare` did not finish here; re-run it to resume")
    try:
        return datasets.load_from_disk(str(d))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DataError(f"{d}: prepared data unreadable: {e}") from None


# ---------------------------------------------------------------------------------------
# The work of one shard (runs in a worker process)

# Per process: (vocab, hmm, user_dict, entity_mode) -> (tokenizer, segmenter). Built on the
# first shard a process sees and kept: the jieba dictionary load costs ~1 s.
_STATE: dict[tuple, tuple] = {}


def _worker_init() -> None:
    # One worker = one core: no Rust thread pool inside each worker process.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _components(job: dict):
    from zhbert.segment import Segmenter
    from zhbert.tokenizer import ChineseTokenizer

    key = (job["vocab"], job["jieba_hmm"], job["jieba_user_dict"], job["entity_mode"])
    if key not in _STATE:
        tok = ChineseTokenizer.from_vocab(job["vocab"])
        seg = Segmenter(hmm=job["jieba_hmm"], user_dict=job["jieba_user_dict"], entity_mode=job["entity_mode"])
        _STATE[key] = (tok, seg)
        # They live as long as the process: keep the collector from walking jieba's
        # dictionaries (~350K entries each) on every full collection.
        gc.collect()
        gc.freeze()
    return _STATE[key]


@contextlib.contextmanager
def _gc_paused():
    """The cyclic garbage collector off while a shard is processed: segmentation allocates
    millions of small lists and tuples, and the collections they trigger cost ~25% of the
    shard's time; the work makes no reference cycles, so nothing piles up meanwhile."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _seed(*parts: Any) -> int:
    """A 64-bit seed from (seed, shard, pass, split): stable across runs and processes."""
    text = "/".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def _list_array(lists: list[list[int]], dtype):
    """Arrow list array from Python lists via one flat numpy buffer (~4x faster than
    letting pyarrow convert the nested lists)."""
    import numpy as np
    import pyarrow as pa

    lens = np.fromiter(map(len, lists), dtype=np.int32, count=len(lists))
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum(lens, out=offsets[1:])
    values = np.fromiter(itertools.chain.from_iterable(lists), dtype=dtype, count=int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def _write_arrow(path: Path, instances: list[dict]) -> None:
    """One Arrow IPC stream file (the format ``datasets`` caches in), read back with
    ``datasets.Dataset.from_file``. Plain pyarrow: workers need not import ``datasets``."""
    import numpy as np
    import pyarrow as pa

    dtypes = {"input_ids": np.int32, "token_type_ids": np.int8, "word_ids": np.int32, "entity_ids": np.int32}
    arrays = [
        pa.array(np.fromiter((i[c] for i in instances), dtype=np.int8, count=len(instances)))
        if c == "next_sentence_label" else _list_array([i[c] for i in instances], dtypes[c])
        for c in COLUMNS
    ]
    table = pa.Table.from_arrays(arrays, schema=_arrow_schema())
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def process_shard(job: dict) -> dict:
    """Segment, align and pair one shard's documents; write its Arrow files and shard.json.

    ``job``: {"index", "docs": [(doc_id, sentences, is_validation)], "dir", and the data
    config fields used here}. Returns the shard's stats (also written to shard.json).
    """
    with _gc_paused():
        return _process_shard(job)


def _process_shard(job: dict) -> dict:
    from zhbert.instances import create_instances
    from zhbert.segment import segment_sentences

    t0 = time.perf_counter()
    tok, seg = _components(job)
    failures0 = seg.align_failures
    index = job["index"]
    shard_dir = Path(job["dir"]) / SHARDS_DIR / f"shard_{index:05d}"
    if shard_dir.exists():
        shutil.rmtree(shard_dir)  # leftovers of an interrupted run
    shard_dir.mkdir(parents=True)

    # Tokenize + segment all sentences of the shard in batches, then regroup per document.
    texts = [s for _, sents, _ in job["docs"] for s in sents]
    aligned = []
    for b in range(0, len(texts), _SEGMENT_BATCH):
        aligned.extend(segment_sentences(texts[b:b + _SEGMENT_BATCH], tok, seg))
    docs: dict[str, list] = {"train": [], "validation": []}
    k = 0
    for _, sents, is_val in job["docs"]:
        doc = [a for a in aligned[k:k + len(sents)] if a.ids]  # drop sentences with no token
        k += len(sents)
        if doc:
            docs["validation" if is_val else "train"].append(doc)

    stats: dict[str, Any] = {"shard": index, "documents": len(job["docs"]),
                             "sentences": len(texts), "chars": sum(map(len, texts)),
                             "alignment_failures": seg.align_failures - failures0}
    tokens = unk = random_next = 0
    for split in SPLITS:
        instances: list[dict] = []
        for dupe in range(job["dupe_factor"]):
            rng = random.Random(_seed(job["seed"], index, dupe, split))
            instances.extend(create_instances(docs[split], job["max_seq_length"], job["short_seq_prob"],
                                              job["pair_mode"], rng, tok.cls_id, tok.sep_id))
        # Google shuffles the instances of its whole output; we shuffle within the shard (the
        # trainer samples randomly across shards anyway).
        random.Random(_seed(job["seed"], index, "shuffle", split)).shuffle(instances)
        _write_arrow(shard_dir / f"{split}.arrow", instances)
        stats[f"{split}_documents"] = len(docs[split])
        stats[f"{split}_instances"] = len(instances)
        for inst in instances:
            ids = inst["input_ids"]
            tokens += len(ids)
            unk += ids.count(tok.unk_id)
            random_next += inst["next_sentence_label"] == 1
    stats.update(tokens=tokens, unk_tokens=unk, random_next=random_next,
                 seconds=round(time.perf_counter() - t0, 3))
    _write_json_atomic(shard_dir / "shard.json", stats)  # last: marks the shard finished
    return stats


# ---------------------------------------------------------------------------------------
# Orchestration


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _is_validation(seed: int, sentences: list[str], fraction: float) -> bool:
    # Keyed by the document's content (duplicates are already dropped), not its path, so the
    # split is the same wherever the corpus lives (another checkout, machine or mount point).
    h = hashlib.blake2b(f"{seed}/".encode("utf-8") + "\n".join(sentences).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0 ** 64 < fraction


def _resolved_meta(cfg: DataConfig, vocab_sha256: str) -> dict:
    from zhbert import __version__
    from zhbert.corpus import list_input_files

    files = list_input_files(cfg.input)  # DataError naming a missing path
    config = dataclasses.asdict(cfg)
    config["input"] = [str(Path(p).resolve()) for p in cfg.input]
    config["vocab"] = str(Path(cfg.vocab).resolve())
    if cfg.jieba_user_dict:
        config["jieba_user_dict"] = str(Path(cfg.jieba_user_dict).resolve())
    return {
        "config": config,
        "input_files": [[str(f.resolve()), f.stat().st_size] for f in files],
        "vocab_sha256": vocab_sha256,
        "zhbert_version": __version__,
        "format_version": FORMAT_VERSION,
    }


def _key(meta: dict) -> dict:
    cfg = {k: v for k, v in meta.get("config", {}).items() if k not in _NOT_IN_KEY}
    return {"config": cfg, "input_files": meta.get("input_files"), "vocab_sha256": meta.get("vocab_sha256"),
            "format_version": meta.get("format_version")}


def _differences(old: dict, new: dict) -> list[str]:
    a, b = _key(old), _key(new)
    diff = [f"data.{k}" for k in sorted(set(a["config"]) | set(b["config"]))
            if a["config"].get(k) != b["config"].get(k)]
    diff += [k for k in ("input_files", "vocab_sha256", "format_version") if a[k] != b[k]]
    return diff


def _check_output_dir(out: Path, cfg: DataConfig, meta: dict) -> str:
    """'new' | 'resume' | 'done' | 'replace' for the output directory (or raise DataError)."""
    overwrite_hint = "pass --overwrite (data.overwrite=true) to replace it"
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: output path exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return "new"
    old = _read_json(out / CONFIG_FILE) if (out / MARKER).exists() else None
    if old is None:
        if cfg.overwrite:
            return "replace"
        raise DataError(f"{out}: output directory exists and is not a zhbert prepare output; {overwrite_hint}")
    diff = _differences(old, meta)
    if diff:
        if cfg.overwrite:
            return "replace"
        raise DataError(f"{out}: holds data prepared with a different configuration "
                        f"(differs in {', '.join(diff)}); {overwrite_hint}")
    if cfg.overwrite:
        return "replace"
    return "done" if is_complete(out) else "resume"


def _guard_replace(out: Path, cfg: DataConfig) -> None:
    """Refuse to delete a directory that holds the inputs, the vocab or the working dir."""
    res = out.resolve()
    protected = [Path.cwd().resolve(), Path(cfg.vocab).resolve(), *(Path(p).resolve() for p in cfg.input)]
    for p in protected:
        if p == res or res in p.parents:
            raise DataError(f"{out}: refusing to overwrite a directory that contains {p}")


def _shard_jobs(cfg: DataConfig, read_stats, out: Path) -> Iterator[dict]:
    """Stream documents into shard jobs (validation flags decided here, in input order)."""
    from zhbert.corpus import iter_documents

    base = {k: getattr(cfg, k) for k in ("vocab", "jieba_hmm", "jieba_user_dict", "entity_mode", "seed",
                                         "dupe_factor", "max_seq_length", "short_seq_prob", "pair_mode")}
    base["dir"] = str(out)
    docs: list = []
    index = seen = chars = 0
    any_val = False

    def job(docs):
        nonlocal any_val, seen
        seen += len(docs)
        any_val = any_val or any(v for _, _, v in docs)
        if not any_val and seen >= 2 and cfg.validation_fraction > 0:
            doc_id, sents, _ = docs[-1]
            docs[-1] = (doc_id, sents, True)
            any_val = True
        return {**base, "index": index, "docs": docs}

    for doc in iter_documents(cfg.input, fmt=cfg.format, text_field=cfg.text_field, fullwidth=cfg.fullwidth,
                              t2s=cfg.t2s, dedup=cfg.dedup, stats=read_stats):
        docs.append((doc.id, doc.sentences, _is_validation(cfg.seed, doc.sentences, cfg.validation_fraction)))
        chars += sum(map(len, doc.sentences))
        if len(docs) == cfg.shard_documents or chars >= cfg.shard_chars:
            yield job(docs)
            docs, index, chars = [], index + 1, 0
    if docs:
        yield job(docs)


def _run_jobs(jobs: Iterator[dict], workers: int, done: set[int]) -> Iterator[tuple[dict, dict, bool]]:
    """(job, shard stats, reused) in shard order; at most 2 * workers shards in flight."""
    def reused(job):
        return _read_json(Path(job["dir"]) / SHARDS_DIR / f"shard_{job['index']:05d}" / "shard.json")

    if workers == 1:
        _worker_init()
        for job in jobs:
            if job["index"] in done and (s := reused(job)) is not None:
                yield job, s, True
            else:
                yield job, process_shard(job), False
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        pending: collections.deque = collections.deque()
        for job in jobs:
            if job["index"] in done and (s := reused(job)) is not None:
                pending.append((job, s, True))
            else:
                pending.append((job, pool.apply_async(process_shard, (job,)), False))
            while len(pending) > 2 * workers or (pending and pending[0][2]):
                j, r, was = pending.popleft()
                yield j, (r if was else r.get()), was
        while pending:
            j, r, was = pending.popleft()
            yield j, (r if was else r.get()), was


def resolve_vocab(spec: str) -> Path:
    """``data.vocab``: a vocab.txt file, a directory holding one, or (not a path that exists
    and not ending in .txt) a checkpoint name, hub id or URL whose vocab.txt is used, e.g.
    ``bert-base-chinese`` -- fetched once through zhbert.hub and cached."""
    p = Path(spec)
    if p.is_file():
        return p
    if p.is_dir():
        if (p / "vocab.txt").is_file():
            return p / "vocab.txt"
        raise DataError(f"{p}: directory has no vocab.txt (data.vocab)")
    if spec.endswith(".txt"):
        raise DataError(f"{spec}: vocab file not found (data.vocab)")
    from zhbert.hub import resolve_model

    d = Path(resolve_model(spec))
    for cand in (d / "vocab.txt", d / "hf" / "vocab.txt"):
        if cand.is_file():
            return cand
    raise DataError(f"data.vocab {spec!r} resolved to {d}, which has no vocab.txt")


def prepare(cfg: DataConfig) -> dict:
    """Run ``zhbert prepare`` for ``cfg`` (see module docstring); returns the stats dict."""
    from tqdm.auto import tqdm

    from zhbert.corpus import ReadStats
    from zhbert.tokenizer import ChineseTokenizer

    t0 = time.perf_counter()
    if not cfg.input:
        raise DataError("no input given: set data.input (or --input) to corpus files or directories")
    cfg = dataclasses.replace(cfg, vocab=str(resolve_vocab(cfg.vocab)))
    tokenizer = ChineseTokenizer.from_vocab(cfg.vocab)  # DataError naming the vocab
    # The saved tokenizer files record the corpus normalisation, so every export carries it
    # to fine-tuning (ChineseTokenizer.normalize), which then sees text as pretraining did.
    tokenizer.normalization = {"fullwidth": cfg.fullwidth, "t2s": cfg.t2s}
    meta = _resolved_meta(cfg, tokenizer.vocab_sha256())  # DataError naming a missing input
    out = Path(cfg.dir)
    state = _check_output_dir(out, cfg, meta)
    if state == "done":
        stats = _read_json(out / STATS_FILE) or {}
        return {**stats, "already_prepared": True}
    if state == "replace":
        _guard_replace(out, cfg)

    done: set[int] = set()
    if state == "resume":
        for p in (out / SHARDS_DIR).glob("shard_*/shard.json"):
            done.add(int(p.parent.name.split("_")[1]))

    created = False

    def open_output() -> None:
        """Create / replace the directory lazily, once there is something to write."""
        nonlocal created
        if state == "replace":
            shutil.rmtree(out)
        if state in ("new", "replace"):
            out.mkdir(parents=True, exist_ok=True)
            created = True
        _write_json_atomic(out / CONFIG_FILE, meta)
        _write_json_atomic(out / MARKER, {"format_version": FORMAT_VERSION, "complete": False})

    read_stats = ReadStats()
    totals = collections.Counter()
    shards = reused_shards = processed_chars = 0
    bar = tqdm(unit="char", unit_scale=True, desc="prepare", disable=None)
    jobs = _shard_jobs(cfg, read_stats, out)
    try:
        first = next(jobs, None)
        if first is None:
            raise DataError(f"no documents in input {', '.join(map(str, cfg.input))} "
                            f"(format {cfg.format}; {read_stats.files} file(s) read)")
        open_output()

        def all_jobs():
            yield first
            yield from jobs

        for job, s, reused in _run_jobs(all_jobs(), cfg.workers, done):
            shards += 1
            reused_shards += reused
            for k in ("train_instances", "validation_instances", "train_documents", "validation_documents",
                      "tokens", "unk_tokens", "random_next", "alignment_failures"):
                totals[k] += s.get(k, 0)
            if not reused:
                processed_chars += s["chars"]
                bar.update(s["chars"])
            bar.set_postfix(shards=shards, instances=totals["train_instances"] + totals["validation_instances"])
    except BaseException:
        bar.close()
        if created and not (out / SHARDS_DIR).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    bar.close()

    instances = totals["train_instances"] + totals["validation_instances"]
    if totals["train_instances"] == 0:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise DataError(f"no training instances could be built from {', '.join(map(str, cfg.input))} "
                        f"({read_stats.documents} documents, {totals['validation_documents']} of them "
                        f"for validation; too few or too short for pair_mode {cfg.pair_mode}?)")

    _finalise(out, shards, tokenizer)
    seconds = time.perf_counter() - t0
    stats = {
        "documents": read_stats.documents,
        "train_documents": totals["train_documents"],
        "validation_documents": totals["validation_documents"],
        "sentences": read_stats.sentences,
        "chars": read_stats.chars,
        "instances": instances,
        "train_instances": totals["train_instances"],
        "validation_instances": totals["validation_instances"],
        "tokens": totals["tokens"],
        "unk_tokens": totals["unk_tokens"],
        "mean_tokens_per_instance": round(totals["tokens"] / instances, 3),
        "nsp_random_fraction": (round(totals["random_next"] / instances, 4) if cfg.pair_mode == "nsp" else None),
        "sop_swapped_fraction": (round(totals["random_next"] / instances, 4) if cfg.pair_mode == "sop" else None),
        "alignment_failures": totals["alignment_failures"],
        "duplicates_dropped": read_stats.duplicates_dropped,
        "skipped_lines": read_stats.skipped_lines,
        "skipped_locations": read_stats.skipped_locations,
        "files": read_stats.files,
        "shards": shards,
        "shards_reused": reused_shards,
        "workers": cfg.workers,
        "seconds": round(seconds, 3),
        "chars_per_second": round(processed_chars / seconds, 1) if seconds > 0 else None,
        "vocab_sha256": meta["vocab_sha256"],
    }
    _write_json_atomic(out / STATS_FILE, stats)
    _write_json_atomic(out / MARKER, {"format_version": FORMAT_VERSION, "complete": True,
                                      "zhbert_version": meta["zhbert_version"],
                                      "splits": {s: stats[f"{s}_instances"] for s in SPLITS
                                                 if stats[f"{s}_instances"]}})
    shutil.rmtree(out / SHARDS_DIR, ignore_errors=True)
    return stats


def _features_json() -> dict:
    """``datasets.Features.to_dict()`` of ``features()``, written out so that finishing a
    run needs neither ``datasets`` (1-2 s to import) nor its copy of the data; a test checks
    it against ``datasets`` itself."""
    def ids(dtype):
        return {"feature": {"dtype": dtype, "_type": "Value"}, "_type": "List"}

    return {"input_ids": ids("int32"), "token_type_ids": ids("int8"),
            "next_sentence_label": {"dtype": "int8", "_type": "Value"},
            "word_ids": ids("int32"), "entity_ids": ids("int32")}


_MAX_SPLIT_FILE_BYTES = 500 * 2**20  # as ``save_to_disk``'s default max_shard_size


def _finalise(out: Path, shards: int, tokenizer) -> None:
    """Shard Arrow files -> one ``datasets.DatasetDict`` in ``out`` (train/, validation/) in
    ``save_to_disk``'s layout (``data-0000i-of-0000n.arrow`` + state.json + dataset_info.json,
    dataset_dict.json), plus the tokenizer files.

    The shards' record batches are streamed into files of at most ~500 MB with pyarrow, which
    is what ``save_to_disk`` would write, minus importing ``datasets`` and re-encoding the
    table: finishing costs a file copy, whatever the corpus size, in bounded memory."""
    import pyarrow as pa

    features = _features_json()
    schema = _arrow_schema().with_metadata(
        {"huggingface": json.dumps({"info": {"features": features}})})
    info = {"citation": "", "description": "", "features": features, "homepage": "", "license": ""}
    splits = []
    for split in SPLITS:
        d = out / split
        if d.exists():
            shutil.rmtree(d)  # an interrupted earlier finalisation
        # Shards without instances of this split are left out, and so is a split without any
        # (`datasets` cannot reload an empty split: validation with validation_fraction 0).
        files = []
        digest = hashlib.blake2b(split.encode(), digest_size=8)  # the split's fingerprint
        for i in range(shards):
            shard_dir = out / SHARDS_DIR / f"shard_{i:05d}"
            stats = _read_json(shard_dir / "shard.json") or {}
            digest.update(json.dumps({k: v for k, v in stats.items() if k != "seconds"}, sort_keys=True).encode())
            if stats.get(f"{split}_instances"):
                files.append(shard_dir / f"{split}.arrow")
        if not files:
            continue
        groups: list[list[Path]] = [[]]
        size = 0
        for f in files:
            if groups[-1] and size + f.stat().st_size > _MAX_SPLIT_FILE_BYTES:
                groups.append([])
                size = 0
            groups[-1].append(f)
            size += f.stat().st_size
        d.mkdir()
        names = [f"data-{k:05d}-of-{len(groups):05d}.arrow" for k in range(len(groups))]
        for name, group in zip(names, groups):
            with pa.OSFile(str(d / name), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
                for f in group:
                    with pa.memory_map(str(f)) as src:
                        for batch in pa.ipc.open_stream(src):
                            writer.write_batch(batch)
        state = {"_data_files": [{"filename": n} for n in names], "_fingerprint": digest.hexdigest(),
                 "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
                 "_output_all_columns": False, "_split": None}
        (d / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        (d / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        splits.append(split)
    (out / "dataset_dict.json").write_text(json.dumps({"splits": splits}), encoding="utf-8")
    tokenizer.save(out)
