"""Stage 6: ``zhbert prepare`` -- corpus -> segmented, aligned sentence-pair instances on disk.

    documents (zhbert.prep.corpus, read and deduplicated in the main process, in input order)
      -> sentences over 8192 characters cut into pieces of at most 8192, and documents
         over ``shard_cap`` characters (below) cut into parts at sentence ends (see "Long text")
      -> shards of ``shard_documents`` documents, or fewer when they reach ``shard_cap``
         characters: ``shard_chars``, or 1/``min_shards`` of the corpus size estimated from the
         input files when that is smaller (not below 250,000). Shard k = the k-th group:
         independent of the number of workers, so the output is too; the character cap keeps
         shards of long documents as small as shards of short ones, and a mid-sized corpus in
         enough shards, so workers start early and finish together
      -> worker processes, each with ONE tokenizer and ONE jieba dictionary for its lifetime
         (a shard's sentences reach its worker as one string, ``_pack``):
         tokenize + segment + align (zhbert.prep.segment), sentences over the token budget cut at
         word boundaries, then sentence pairs (zhbert.prep.instances) with ``random.Random``
         seeded from (seed, shard, dupe pass, split)
      -> WORK/shards/shard_00000/{train,validation}.arrow + shard.json (written last: its
         presence means the shard is finished; a re-run reuses it once its row counts match
         the Arrow files)
      -> appended to WORK's split files as the shards finish, in shard order, by the main
         process while the workers make the later ones (``_Merger``)
      -> WORK as a ``datasets.DatasetDict`` (train, validation) + tokenizer files + stats.json
         + prepare_config.json + zhbert_prepare.json (marker, written last), shards removed.

WORK is the output directory DIR itself, except when a finished output is replaced (see
"Never lose a finished output").

Memory is bounded by the shards in flight (at most ``2 * workers`` shards are read ahead)
plus a few copies of the longest input line, not by the corpus: documents stream from disk,
and each worker writes its own Arrow files. The price of streaming is that a random-next B
segment is drawn from the same *shard* (as Google's script draws from the same input file),
not the whole corpus: a shard of 2000 documents, or of at least 250,000 characters, is a pool
large enough for the NSP task.

Validation documents are chosen by a hash of (seed, document text) against
``validation_fraction``, so the choice does not depend on shard size or workers; train and
validation instances are built from disjoint documents (random B segments too). If a corpus
of two or more documents would get no validation document, the last document of the first
shard that brings the count to two is moved to validation.

Long text. A sentence longer than the sequence budget (``max_seq_length`` - 3, or - 2 for
``pair_mode`` none) used to become one truncated instance: a 3.5M-character line without a
sentence end gave 128 tokens. Such a sentence is now cut into pieces (counted in
``split_long_sentences``), in two steps:

* in the main process, in characters: a sentence over 8192 characters becomes pieces of at
  most 8192 (cut after a space or comma near the end of the window when there is one; jieba's
  route over one unbroken block costs memory in proportion to it), and a document over the
  shard cap (``shard_cap``: at most ``shard_chars``) is cut into parts at sentence ends, so no
  shard holds much more than that whatever the lines look like. (The parts of a document are
  documents of their shards, so a random B segment may come from another part of it; all
  parts go to the document's split, and a part is never the document moved to validation.)
* in the worker, in tokens: a sentence over the budget is cut into pieces of at most half the
  budget (two pieces make one A/B pair; the whole budget for ``none``, which packs single
  segments), at jieba word boundaries where the last half of the window has one. Word and
  entity ids restart at 0 in each piece.

Resume: ``prepare_config.json`` (the resolved data config, a fingerprint of every input file,
vocab sha256) is written first. A re-run with the same config reuses every finished shard; a
directory made with a different config (or any directory that is not a zhbert output) is
refused unless ``overwrite``; a complete output with the same config is returned as it is.
The input fingerprint is (path, size, mtime_ns, blake2b of the content; of its first, middle
and last MiB for files over 64 MiB): an input edited in place without changing its size is
seen. A file whose size and mtime match the record, and whose mtime is older than the record
by 2 s or more, keeps its recorded hash without being read again (as git trusts its index).

One run at a time: the run holds ``DIR.lock`` (``zhbert.files.DirLock``: flock, released by
the kernel even when the run is killed). A second run on the same output fails at once with
the holder's pid and host. Two runs writing the same shards could otherwise produce an output
marked complete whose stats disagree with its rows; for the same reason the counts in
stats.json and the marker are read back from the Arrow files written, and compared with the
shards' own counts.

Never lose a finished output. ``overwrite`` builds the new output in the sibling
``DIR.zhbert-partial`` and only when it is complete swaps it in (DIR -> DIR.zhbert-old-PID,
partial -> DIR, then the old one is deleted); a kill between the two renames is repaired by
the next run. A failed run keeps what a re-run can resume from (finished shards) and deletes
the rest (the shard in progress, half-written split files, temporary files); a failed
replacement that ran out of disk space deletes its partial output, leaving the old one as it
was. A run killed between its complete marker and the removal of ``shards/`` leaves a second
copy of the data; the next run removes it.

A worker process that dies (the out-of-memory killer sends SIGKILL) stops the run with an
error naming the shard it was preparing and suggesting fewer workers or a smaller
``data.shard_chars``; the finished shards are kept. Disk full, a read-only output folder or
missing permissions are one-line ``DataError`` messages naming the path.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import glob
import hashlib
import importlib.util
import itertools
import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from zhbert.config import DataConfig
from zhbert.errors import ConfigError, DataError, ZhbertError
from zhbert.files import DirLock, fsync_file, is_disk_full, os_error_message, write_json_atomic, write_text_atomic
# The instance format (columns, schemas) is zhbert.prep.format's; ``features`` is re-exported
# for readers of prepared data.
from zhbert.prep.format import (COLUMNS, FORMAT_VERSION, READABLE_FORMAT_VERSIONS, SCHEMA, arrow_schema,  # noqa: F401
                                 features, features_json, storage_columns)

MARKER = "zhbert_prepare.json"
CONFIG_FILE = "prepare_config.json"
STATS_FILE = "stats.json"
SHARDS_DIR = "shards"
SPLITS = ("train", "validation")
PARTIAL_SUFFIX = ".zhbert-partial"  # DIR.zhbert-partial: a replacement being built
OLD_SUFFIX = ".zhbert-old"  # DIR.zhbert-old-PID: the replaced output, until deleted
LOCK_INSIDE = ".zhbert.lock"  # the lock file when DIR.lock cannot be created (zhbert.files.DirLock)
# Config fields that do not decide what a finished output holds (a re-run may differ in these and
# still use it): where it lives and how it is made. ``min_shards`` moves where shards close
# (``shard_cap``), so where shards are reused, on resume, the recorded cap must match
# (``_check_resume_cap``).
_NOT_IN_KEY = ("workers", "overwrite", "dir", "min_shards")
_SEGMENT_BATCH = 2048  # sentences per tokenizer/jieba batch inside a shard (one joined string) ...
_SEGMENT_BATCH_CHARS = 1 << 18  # ... or fewer: a batch also closes at this many characters
_HUGE_SENTENCE_CHARS = 1 << 13  # longer sentences are cut in the main process (see "Long text")
_FULL_HASH_BYTES = 64 << 20  # input files up to this size are hashed whole, larger ones sampled
_SAMPLE_BYTES = 1 << 20


# ---------------------------------------------------------------------------------------
# Reading a finished output


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(dir: str | Path) -> bool:
    marker = _read_json(Path(dir) / MARKER)
    return bool(marker and marker.get("complete") and marker.get("format_version") in READABLE_FORMAT_VERSIONS)


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


_MALLOC_TRIM = None  # glibc's malloc_trim, looked up once (False: not available)


def _worker_init() -> None:
    # One worker = one core: no Rust thread pool inside each worker process.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _pool_worker_init() -> None:
    _worker_init()
    # Ctrl-C reaches the whole process group: the main process alone handles it (and stops
    # the workers), so an interrupt is reported as one, not as a worker that died.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _components(job: dict):
    from zhbert.prep.segment import Segmenter
    from zhbert.prep.tokenizer import ChineseTokenizer

    engine = job.get("segmenter", "fastcut")
    key = (job["vocab"], job["jieba_hmm"], job["jieba_user_dict"], job["entity_mode"], engine)
    if key not in _STATE:
        tok = ChineseTokenizer.from_vocab(job["vocab"])
        seg = Segmenter(hmm=job["jieba_hmm"], user_dict=job["jieba_user_dict"], entity_mode=job["entity_mode"],
                        engine=engine)
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


def _narrow(values, dtype):
    """int64 values as ``dtype``, refusing (never wrapping) a value the type cannot hold."""
    import numpy as np

    info = np.iinfo(dtype)
    if values.size and (values.min() < info.min or values.max() > info.max):
        raise DataError(f"instance values in [{values.min()}, {values.max()}] do not fit the stored type {dtype}")
    return values.astype(dtype)


def _arrow_array(values):
    """A pyarrow array over a 1-D numpy integer array (zero-copy). Not ``pa.array``: it
    imports pandas to check its argument, ~0.7 s of every worker's start-up."""
    import numpy as np
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def _write_arrow(path: Path, instances: list[dict], columns=SCHEMA) -> None:
    """``_write_columns`` for instances as dicts of Python lists (one per instance)."""
    import numpy as np

    cols = {}
    for c in columns:
        if c.per_token:
            lists = [i[c.name] for i in instances]
            offsets = np.zeros(len(lists) + 1, dtype=np.int64)
            np.cumsum(np.fromiter(map(len, lists), dtype=np.int64, count=len(lists)), out=offsets[1:])
            values = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=int(offsets[-1]))
            cols[c.name] = (values, offsets)
        else:
            cols[c.name] = np.fromiter((i[c.name] for i in instances), dtype=np.int64, count=len(instances))
    _write_columns(path, cols, columns)


def _write_columns(path: Path, cols: dict, columns=SCHEMA) -> None:
    """One Arrow IPC stream file (the format ``datasets`` caches in), read back with
    ``datasets.Dataset.from_file``. Plain pyarrow: workers need not import ``datasets``.

    cols: column name -> (values (L,), offsets (N + 1,)) for a per-token column, (N,) values
    otherwise (``instances.gather``'s output). columns: ``storage_columns(vocab_size,
    max_seq_length)``, the element types to store; a value outside its type is a DataError
    (``_narrow``), never a silent wrap-around."""
    import numpy as np
    import pyarrow as pa

    arrays = []
    for c in columns:
        if c.per_token:
            values, offsets = cols[c.name]
            offsets = np.asarray(offsets)
            if offsets[-1] > np.iinfo(np.int32).max:
                raise DataError(f"{path}: {offsets[-1]} tokens in one Arrow file (at most 2**31 - 1)")
            arrays.append(pa.ListArray.from_arrays(_arrow_array(offsets.astype(np.int32)),
                                                   _arrow_array(_narrow(np.asarray(values), c.dtype))))
        else:
            arrays.append(_arrow_array(_narrow(np.asarray(cols[c.name]), c.dtype)))
    table = pa.Table.from_arrays(arrays, schema=arrow_schema(columns))
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def _count_rows(path: Path) -> int:
    """Rows of an Arrow IPC stream file, from its record batch headers (memory-mapped)."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as src:  # zero-copy: the bodies' pages are never touched
        return sum(batch.num_rows for batch in pa.ipc.open_stream(src))


def _shard_dir(dir: str | Path, index: int) -> Path:
    return Path(dir) / SHARDS_DIR / f"shard_{index:05d}"


def _finished_shard(shard_dir: Path) -> Optional[dict]:
    """The stats of a finished shard, or None: no shard.json, or an Arrow file missing,
    unreadable, or of another size or number of rows than shard.json says (another process
    wrote here, or the file was damaged): such a shard is made again."""
    stats = _read_json(shard_dir / "shard.json")
    if stats is None:
        return None
    for split in SPLITS:
        path = shard_dir / f"{split}.arrow"
        try:
            if f"{split}_bytes" in stats and path.stat().st_size != stats[f"{split}_bytes"]:
                return None
            if _count_rows(path) != stats.get(f"{split}_instances"):
                return None
        except (OSError, ValueError):
            return None
    return stats


def _split_long(sent, piece: int) -> list:
    """``sent`` (an AlignedSentence) as consecutive pieces of at most ``piece`` tokens.

    Each cut goes at the last whole-word boundary (``word_ids`` changes) in the second half
    of the window, or at the window's end when one word fills that half. Word ids restart at
    0 in every piece and so do entity ids (-1 stays -1): a word or entity cut in two counts
    as two, as when instances truncate a segment.
    """
    from zhbert.prep.segment import AlignedSentence

    ids, words, ents = sent.ids, sent.word_ids, sent.entity_ids
    n = len(ids)
    pieces = []
    a = 0
    while a < n:
        b = min(a + piece, n)
        if b < n:
            k = b
            while k > a + piece // 2 and words[k] == words[k - 1]:
                k -= 1
            if k > a + piece // 2:
                b = k
        w0 = words[a]
        e0 = next((e for e in ents[a:b] if e >= 0), 0)
        pieces.append(AlignedSentence(ids[a:b], [w - w0 for w in words[a:b]],
                                      [e - e0 if e >= 0 else -1 for e in ents[a:b]], sent.aligned))
        a = b
    return pieces


def process_shard(job: dict) -> dict:
    """Segment, align and pair one shard's documents; write its Arrow files and shard.json.

    ``job``: {"index", "docs": [(doc_id, sentences, is_validation)] (or "packed", see
    ``_pack``), "cut": {position in docs: (indices of sentences that are pieces of a longer
    one, how many such sentences start there)}, "dir", and the data config fields used here}.
    Returns the shard's stats (also written to shard.json).
    """
    with _gc_paused():
        stats = _process_shard(job)
    _trim_heap()
    return stats


def _pack(job: dict) -> dict:
    """``job`` as it is sent to a worker process: the documents' sentences as one string
    joined by "\\n" plus each document's sentence count and validation flag, instead of a list
    of lists of strings. Pickling one string is a copy; 35K sentence objects take about twice
    as long to pickle and rebuild (~18 ms against ~9 ms, join and split included, for a
    600K-character shard, paid on every shard). A shard where a sentence holds "\\n"
    (the readers never make one) goes as it is."""
    docs = job["docs"]
    sentences = [s for _, sents, _ in docs for s in sents]
    text = "\n".join(sentences)
    if text.count("\n") != max(len(sentences) - 1, 0):
        return job
    return {**job, "docs": None, "packed": (
        [len(sents) for _, sents, _ in docs], bytes(bool(v) for _, _, v in docs), len(sentences), text)}


def _shard_sentences(job: dict):
    """(every sentence of the shard in order, (documents,) sentence counts, (documents,)
    validation flags) from a job as ``_shard_jobs`` makes it or as ``_pack`` sends it."""
    import numpy as np

    if job.get("packed") is not None:
        counts, flags, n, text = job["packed"]
        texts = text.split("\n") if n else []
        return (texts, np.array(counts, dtype=np.int64),
                np.frombuffer(flags, dtype=np.uint8).astype(bool))
    docs = job["docs"]
    return ([s for _, sents, _ in docs for s in sents],
            np.fromiter((len(sents) for _, sents, _ in docs), dtype=np.int64, count=len(docs)),
            np.fromiter((v for _, _, v in docs), dtype=bool, count=len(docs)))


def _trim_heap() -> None:
    """Give the heap memory freed by a shard back to the OS (glibc ``malloc_trim``).

    A shard allocates and frees arrays of a few MB; glibc raises its mmap threshold after the
    first such free, so later ones come from the heap, whose free space is not returned by
    itself (resident set at the end of a 100 MB run: 378 MB without, 332 MB with; with the
    smaller caches it took the 1 GB peak from 442 to 414 MB, benchmarks/prep_memory.py).
    A no-op where glibc is absent (macOS, musl)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        _MALLOC_TRIM = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):
                pass
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


def _process_shard(job: dict) -> dict:
    import numpy as np

    from zhbert.prep.instances import DocTokens, gather, plan_instances
    from zhbert.prep.segment import Segmented, segment_batch

    t0 = time.perf_counter()
    tok, seg = _components(job)
    failures0 = seg.align_failures
    index = job["index"]
    shard_dir = _shard_dir(job["dir"], index)
    if shard_dir.exists():
        shutil.rmtree(shard_dir)  # leftovers of an interrupted run
    shard_dir.mkdir(parents=True)
    # Which process works on this shard: named in the error if the process dies.
    (shard_dir / "worker.json").write_text(json.dumps({"pid": os.getpid()}), encoding="utf-8")

    # Tokenize + segment all sentences of the shard in batches (arrays, end to end).
    c0 = time.process_time()
    texts, doc_sents, is_val = _shard_sentences(job)
    parts = []
    b = 0
    while b < len(texts):
        e, chars = b, 0
        while e < len(texts) and e - b < _SEGMENT_BATCH and (e == b or chars + len(texts[e]) <= _SEGMENT_BATCH_CHARS):
            chars += len(texts[e])
            e += 1
        parts.append(segment_batch(texts[b:e], tok, seg))
        b = e
    segd = Segmented.concat(parts)
    del parts
    stats: dict[str, Any] = {"shard": index, "documents": len(doc_sents),
                             "sentences": len(texts), "chars": sum(map(len, texts)),
                             "alignment_failures": seg.align_failures - failures0}
    del texts

    # Regroup per document: sentences with no token dropped, sentences over the token budget
    # cut into pieces (module docstring, "Long text"; the pieces go after the batch's
    # sentences and take their place in ``order``, the sentences in document order).
    budget = job["max_seq_length"] - (2 if job["pair_mode"] == "none" else 3)
    piece = budget if job["pair_mode"] == "none" else max(budget // 2, 1)
    n_docs, n = len(doc_sents), len(segd)
    doc_first = np.cumsum(doc_sents) - doc_sents
    doc_of = np.repeat(np.arange(n_docs), doc_sents)  # (n,)
    lens = segd.lengths()
    count = (lens > 0).astype(np.int64)  # slots of each sentence in ``order``
    cuts = job.get("cut", {})
    split_long = sum(sources for _, sources in cuts.values())
    pieces, extra = {}, []
    for k in np.flatnonzero(lens > budget).tolist():
        d = int(doc_of[k])
        split_long += (k - int(doc_first[d])) not in cuts.get(d, ((), 0))[0]  # not already cut while reading
        new = _split_long(segd.sentence(k), piece)
        pieces[k] = range(n + len(extra), n + len(extra) + len(new))
        extra.extend(new)
        count[k] = len(new)
    if extra:
        segd = Segmented.concat([segd, Segmented.from_sentences(extra)])
    slot_sentence = np.repeat(np.arange(n), count)
    order = slot_sentence.copy()
    first_slot = np.cumsum(count) - count
    for k, ids in pieces.items():
        order[first_slot[k]:first_slot[k] + len(ids)] = ids
    slot_doc = doc_of[slot_sentence]
    doc_sizes = np.bincount(slot_doc, minlength=n_docs)
    stats["split_long_sentences"] = split_long
    cpu = {"segment": time.process_time() - c0, "pairs": 0.0, "write": 0.0}

    tokens = unk = random_next = 0
    columns = storage_columns(tok.vocab_size, job["max_seq_length"])
    for split in SPLITS:
        c0 = time.process_time()
        in_split = is_val if split == "validation" else ~is_val
        sub = segd.take(order[in_split[slot_doc]])
        pool = DocTokens.from_arrays(sub.ids, sub.word_ids, sub.entity_ids, sub.starts,
                                     doc_sizes[in_split & (doc_sizes > 0)])
        del sub
        plans: list = []
        for dupe in range(job["dupe_factor"]):
            rng = random.Random(_seed(job["seed"], index, dupe, split))
            plans.extend(plan_instances(pool.offsets, job["max_seq_length"], job["short_seq_prob"],
                                        job["pair_mode"], rng))
        # Google shuffles the instances of its whole output; we shuffle within the shard (the
        # trainer samples randomly across shards anyway).
        random.Random(_seed(job["seed"], index, "shuffle", split)).shuffle(plans)
        cols = gather(pool, plans, tok.cls_id, tok.sep_id)
        del pool
        c1 = time.process_time()
        _write_columns(shard_dir / f"{split}.arrow", cols, columns)
        cpu["pairs"] += c1 - c0
        cpu["write"] += time.process_time() - c1
        ids = cols["input_ids"][0]
        stats[f"{split}_documents"] = int((in_split & (doc_sizes > 0)).sum())
        stats[f"{split}_instances"] = len(plans)
        stats[f"{split}_bytes"] = (shard_dir / f"{split}.arrow").stat().st_size
        tokens += len(ids)
        unk += int((ids == tok.unk_id).sum())
        random_next += int((cols["next_sentence_label"] == 1).sum())
        del cols, plans
    stats.update(tokens=tokens, unk_tokens=unk, random_next=random_next,
                 seconds=round(time.perf_counter() - t0, 3),
                 **{f"cpu_{k}": round(v, 4) for k, v in cpu.items()})
    write_json_atomic(shard_dir / "shard.json", stats)  # last: marks the shard finished
    return stats


# ---------------------------------------------------------------------------------------
# Orchestration: what the output directory holds, and what to do with it


def _is_validation(seed: int, sentences: list[str], fraction: float) -> bool:
    # Keyed by the document's content (duplicates are already dropped), not its path, so the
    # split is the same wherever the corpus lives (another checkout, machine or mount point).
    # Hashed sentence by sentence: the same digest as of "\n".join(sentences), without the copy.
    h = hashlib.blake2b(f"{seed}/".encode("utf-8"), digest_size=8)
    for i, s in enumerate(sentences):
        if i:
            h.update(b"\n")
        h.update(s.encode("utf-8"))
    return int.from_bytes(h.digest(), "little") / 2.0 ** 64 < fraction


def _file_hash(path: Path, size: int) -> tuple[str, str]:
    """(blake2b hex, "full" | "sampled"): the whole file, or for files over 64 MiB its size
    and first, middle and last MiB (reading 100 GB of corpus on every run costs minutes)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        if size <= _FULL_HASH_BYTES:
            while chunk := f.read(1 << 20):
                h.update(chunk)
            return h.hexdigest(), "full"
        h.update(str(size).encode())
        for at in (0, size // 2, size - _SAMPLE_BYTES):
            f.seek(at)
            h.update(f.read(_SAMPLE_BYTES))
    return h.hexdigest(), "sampled"


def _fingerprints(files: list[Path], old: Optional[dict]) -> list[dict]:
    """{"path", "size", "mtime_ns", "blake2b", "hashed"} per input file (module docstring).

    ``old``: the meta recorded by an earlier run, whose hashes are reused for files whose
    size and mtime match and whose mtime is at least 2 s older than that record (a file
    changed within the same timestamp tick as the record could otherwise look unchanged)."""
    recorded = {}
    if old and isinstance(old.get("input_files"), list):
        taken = old.get("fingerprinted_ns", 0)
        recorded = {r["path"]: r for r in old["input_files"]
                    if isinstance(r, dict) and r.get("mtime_ns", taken) < taken - 2_000_000_000}
    out = []
    for f in files:
        st = f.stat()
        rec = {"path": str(f.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        prev = recorded.get(rec["path"])
        if prev and (prev.get("size"), prev.get("mtime_ns")) == (rec["size"], rec["mtime_ns"]) and prev.get("blake2b"):
            rec.update(blake2b=prev["blake2b"], hashed=prev.get("hashed", "full"))
        else:
            digest, how = _file_hash(f, st.st_size)
            rec.update(blake2b=digest, hashed=how)
        out.append(rec)
    return out


def _resolved_meta(cfg: DataConfig, vocab_sha256: str, old: Optional[dict] = None) -> dict:
    from zhbert import __version__
    from zhbert.prep.corpus import t2s_converter_name, walk_input_files

    files = walk_input_files(cfg.input)  # DataError naming a missing path
    config = dataclasses.asdict(cfg)
    config["input"] = [str(Path(p).resolve()) for p in cfg.input]
    config["vocab"] = str(Path(cfg.vocab).resolve())
    if cfg.jieba_user_dict:
        config["jieba_user_dict"] = str(Path(cfg.jieba_user_dict).resolve())
    taken = time.time_ns()
    return {
        "config": config,
        "input_files": _fingerprints(files, old),
        "fingerprinted_ns": taken,
        "vocab_sha256": vocab_sha256,
        "zhbert_version": __version__,
        "format_version": FORMAT_VERSION,
        # OpenCC's C++ library and its Python port convert a few phrases differently
        "t2s_converter": t2s_converter_name() if cfg.t2s else None,
    }


# Settings added after outputs were first written: an output that does not record one was made
# with this value (before data.segmenter, jieba's exact words).
_RECORDED_DEFAULTS = {"segmenter": "fastcut", "dataset_split": "train", "near_dedup": False,
                      "near_dedup_threshold": 0.8, "near_dedup_num_perm": 128, "min_shards": 1}


def _recorded_config(meta: dict) -> dict:
    return {**_RECORDED_DEFAULTS, **(meta.get("config") or {})}


def _recorded_cap(meta: dict) -> Optional[int]:
    """The characters at which the recorded run's shards closed (before ``shard_cap`` was
    recorded: ``shard_chars``)."""
    return meta.get("shard_cap", _recorded_config(meta).get("shard_chars"))


def _check_resume_cap(out: Path, old: dict, meta: dict) -> None:
    """Finished shards are reused by index, so a resumed run must cut the corpus where the
    first one did."""
    if _recorded_cap(old) != meta["shard_cap"]:
        was = _recorded_config(old).get("min_shards")
        raise DataError(f"{out}: holds a partial output whose shards close at {_recorded_cap(old):,} characters; "
                        f"this run's close at {meta['shard_cap']:,} (data.min_shards, data.shard_chars): re-run "
                        f"with data.min_shards={was} to resume it, or pass --overwrite to start over")


def _key(meta: dict) -> dict:
    cfg = {k: v for k, v in _recorded_config(meta).items() if k not in _NOT_IN_KEY}
    return {"config": cfg, "vocab_sha256": meta.get("vocab_sha256"), "format_version": meta.get("format_version"),
            "t2s_converter": meta.get("t2s_converter")}


def _changed_inputs(old: Any, new: list[dict]) -> list[str]:
    """Names of the input files that differ between two fingerprint lists ([] = same).

    Same content = same path, size and hash; for a sampled hash the mtime must match too.
    A record from before fingerprints (``[path, size]`` pairs) matches nothing."""
    old = old if isinstance(old, list) else []
    before = {r["path"]: r for r in old if isinstance(r, dict) and "path" in r}
    if not before and old:
        return ["recorded by an older zhbert, without content fingerprints"]
    now = {r["path"]: r for r in new}
    changed = []
    for path in sorted(set(before) | set(now)):
        a, b = before.get(path), now.get(path)
        same = (a is not None and b is not None and (a["size"], a.get("blake2b")) == (b["size"], b["blake2b"])
                and (b["hashed"] == "full" or a.get("mtime_ns") == b["mtime_ns"]))
        if not same:
            changed.append(Path(path).name + ("" if b else " (gone)") + ("" if a else " (new)"))
    return changed


def _differences(old: dict, new: dict) -> list[str]:
    a, b = _key(old), _key(new)
    diff = [f"data.{k}" for k in sorted(set(a["config"]) | set(b["config"]))
            if a["config"].get(k) != b["config"].get(k)]
    changed = _changed_inputs(old.get("input_files"), new["input_files"])
    if changed:
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        diff.append(f"input_files ({', '.join(changed[:5])}{more})")
    diff += [k for k in ("vocab_sha256", "format_version", "t2s_converter") if a[k] != b[k]]
    return diff


# Keys whose difference does not make other instances: where the data lives and how it is made.
_NOT_COMPARED_FOR_TRAINING = ("vocab", "jieba_user_dict")  # compared by content (vocab_sha256) / not at all


def _same_content_elsewhere(inputs: list[str], recorded: Any) -> bool:
    """Whether ``inputs`` are the recorded input files moved or copied: the same file names,
    sizes and content hashes, in the same order, at other paths (an experiment directory
    copied to another disk; its prepared data stays valid). Files over 64 MiB, hashed by
    samples, must keep their mtime too (``cp -p``, ``rsync -a``)."""
    from zhbert.prep.corpus import walk_input_files

    if not isinstance(recorded, list) or not recorded or not all(isinstance(r, dict) for r in recorded):
        return False
    try:
        now = _fingerprints(walk_input_files(inputs), None)
    except (DataError, OSError):
        return False
    def key(r: dict) -> tuple:  # a sampled hash (files over 64 MiB) also needs the mtime, as in _changed_inputs
        sampled = r.get("hashed", "full") == "sampled"
        return Path(r.get("path", "")).name, r.get("size"), r.get("blake2b"), sampled and r.get("mtime_ns")

    return [key(r) for r in recorded] == [key(r) for r in now]


def check_prepared_matches(cfg: DataConfig) -> DataConfig:
    """The data config a training run records for the complete ``cfg.dir``.

    With ``data.input`` set, ``cfg.dir`` must have been prepared from these settings: the
    recorded inputs, vocab (by sha256), normalisation, sequence length, pair mode, seed ... are
    compared, and any difference is a DataError naming the keys (a run never trains on data it
    did not ask for). With ``data.input`` empty the run takes ``cfg.dir`` as it is, and the
    recorded settings replace the run's ``data`` section, so what the run records is what it
    trained on. Input files are compared by path, not re-fingerprinted (``zhbert prepare``
    does that); only where the paths differ are they fingerprinted, and files with the recorded
    names, sizes and content hashes at another path (a moved or copied corpus) are accepted.
    """
    from zhbert.prep.tokenizer import ChineseTokenizer

    meta = read_prepare_meta(cfg.dir)
    recorded = _recorded_config(meta)
    if not cfg.input:
        names = {f.name for f in dataclasses.fields(DataConfig)} - set(_NOT_IN_KEY)
        return dataclasses.replace(cfg, **{k: v for k, v in recorded.items() if k in names})
    run = dataclasses.asdict(dataclasses.replace(cfg, fullwidth=bool(cfg.fullwidth)))
    run["input"] = [str(Path(p).resolve()) for p in cfg.input]
    skip = set(_NOT_IN_KEY) | set(_NOT_COMPARED_FOR_TRAINING)
    diff = [f"data.{k}" for k in sorted(set(run) | set(recorded))
            if k not in skip and run.get(k) != recorded.get(k)]
    if "data.input" in diff and _same_content_elsewhere(cfg.input, meta.get("input_files")):
        diff.remove("data.input")
    vocab = ChineseTokenizer.from_vocab(resolve_vocab(cfg.vocab))
    if meta.get("vocab_sha256") != vocab.vocab_sha256():
        diff.append("data.vocab (sha256)")
    if diff:
        raise DataError(f"data.dir {cfg.dir} was prepared with other settings than this run's data section "
                        f"(differs in {', '.join(diff)}); set data.dir to a new directory (it is prepared "
                        f"first) or re-prepare it with `zhbert prepare ... --overwrite`")
    return dataclasses.replace(cfg, fullwidth=bool(cfg.fullwidth))


def _check_output_dir(out: Path, cfg: DataConfig, meta: dict) -> str:
    """'new' | 'resume' | 'done' | 'replace' for the output directory (or raise DataError)."""
    overwrite_hint = "pass --overwrite (data.overwrite=true) to replace it"
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: output path exists and is not a directory")
    if not out.exists() or not any(p.name != LOCK_INSIDE for p in out.iterdir()):
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


def _check_partial_dir(work: Path, meta: dict) -> str:
    """'new' | 'resume' | 'done' for the replacement being built in ``work``."""
    if not work.exists():
        return "new"
    old = _read_json(work / CONFIG_FILE) if (work / MARKER).exists() else None
    if old is None:
        raise DataError(f"{work}: exists and is not a zhbert prepare output; move it away "
                        f"(`zhbert prepare --overwrite` builds the new output there)")
    if _differences(old, meta) or _recorded_cap(old) != meta["shard_cap"]:
        shutil.rmtree(work)  # a replacement with another configuration, never finished
        return "new"
    return "done" if is_complete(work) else "resume"


def _guard_replace(out: Path, cfg: DataConfig) -> None:
    """Refuse to delete a directory that holds the inputs, the vocab or the working dir."""
    res = out.resolve()
    protected = [Path.cwd().resolve(), Path(cfg.vocab).resolve(), *(Path(p).resolve() for p in cfg.input)]
    for p in protected:
        if p == res or res in p.parents:
            raise DataError(f"{out}: refusing to overwrite a directory that contains {p}")


def _partial_dir(out: Path) -> Path:
    return out.with_name(out.name + PARTIAL_SUFFIX)


def _old_dirs(out: Path) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(glob.escape(str(out)) + OLD_SUFFIX + "-*"))


def _swap_in(out: Path, work: Path) -> None:
    """Put the complete output ``work`` at ``out``: two renames, then the old one deleted.
    A kill between them is repaired by ``_repair_swap``."""
    if out.exists():
        old = out.with_name(f"{out.name}{OLD_SUFFIX}-{os.getpid()}")
        os.rename(out, old)
        os.rename(work, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(work, out)


def _repair_swap(out: Path) -> None:
    """Finish what a run killed inside ``_swap_in`` left: put a complete replacement (or
    else the old output) back at ``out``, delete old outputs that were already replaced."""
    partial, olds = _partial_dir(out), _old_dirs(out)
    if not out.exists():
        if partial.is_dir() and is_complete(partial):
            os.rename(partial, out)
        elif olds:
            os.rename(olds.pop(), out)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def _clean_failed(work: Path, created: bool, drop: bool) -> None:
    """After a failed run: keep what a re-run can resume from, delete the rest.

    ``drop``: delete ``work`` entirely when this run created it (no training instances; or
    a replacement that did not fit on the disk). Otherwise the finished shards and the
    config/marker stay (a directory created by this run with no finished shard goes), and
    the shard in progress, half-written split files and temporary files are deleted."""
    if not work.exists():
        return
    finished = any((work / SHARDS_DIR).glob("shard_*/shard.json"))
    if created and (drop or not finished):
        shutil.rmtree(work, ignore_errors=True)
        return
    if is_complete(work):
        return
    for d in (work / SHARDS_DIR).glob("shard_*"):
        if not (d / "shard.json").exists():
            shutil.rmtree(d, ignore_errors=True)
    for split in SPLITS:
        shutil.rmtree(work / split, ignore_errors=True)
    for p in [work / "dataset_dict.json", *work.glob(".*.tmp-*"), *(work / SHARDS_DIR).glob("shard_*/.*.tmp-*")]:
        with contextlib.suppress(OSError):
            p.unlink()


# ---------------------------------------------------------------------------------------
# Orchestration: documents -> shard jobs -> workers


def _cut_huge(sentences: list[str]) -> tuple[list[str], set[int], set[int]]:
    """Sentences over ``_HUGE_SENTENCE_CHARS`` characters cut into pieces of at most that
    many (after the last space or comma in the window's last eighth, when there is one).
    Returns (sentences, indices of all pieces, indices of the first piece of each cut one)."""
    if all(len(s) <= _HUGE_SENTENCE_CHARS for s in sentences):
        return sentences, set(), set()
    out: list[str] = []
    pieces: set[int] = set()
    firsts: set[int] = set()
    n = _HUGE_SENTENCE_CHARS
    for s in sentences:
        if len(s) <= n:
            out.append(s)
            continue
        firsts.add(len(out))
        a = 0
        while a < len(s):
            b = min(a + n, len(s))
            if b < len(s):
                soft = max(s.rfind(c, b - n // 8, b) for c in " ，,、；;：:")
                if soft > a:
                    b = soft + 1
            piece = s[a:b].strip()
            if piece:
                pieces.add(len(out))
                out.append(piece)
            a = b
    return out, pieces, firsts


def _parts(sentences: list[str], cap: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the parts of a document cut at sentence ends into parts of about
    ``cap`` characters (a part closes once it reaches ``cap``)."""
    start = chars = 0
    for k, s in enumerate(sentences):
        chars += len(s)
        if chars >= cap and k + 1 < len(sentences):
            yield start, k + 1
            start, chars = k + 1, 0
    yield start, len(sentences)


# The validation split gets at least MIN_VALIDATION_INSTANCES instances when the corpus allows,
# i.e. when that is at most MAX_VALIDATION_SHARE of it (a quick start on a small corpus must
# still have eval curves worth reading, and keep most of its data for training).
MIN_VALIDATION_INSTANCES = 64
MAX_VALIDATION_SHARE = 0.25
MIN_SHARD_CHARS = 250_000  # shard_cap's floor
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")


def _estimated_chars(input_files: list[dict]) -> float:
    """Characters of the corpus, estimated from the recorded input files before anything is
    read: ~3 bytes per character of UTF-8 Chinese, x4 for compressed files. A pure function of
    the record, so a resumed run estimates as the first."""
    return sum(r.get("size", 0) * (4 if str(r.get("path", "")).endswith(_COMPRESSED) else 1)
               for r in input_files) / 3


def validation_fraction(cfg: DataConfig, input_files: list[dict]) -> float:
    """The share of documents routed to validation: ``data.validation_fraction``, raised when
    the corpus is so small that it would give fewer than MIN_VALIDATION_INSTANCES instances.

    Documents are routed by a hash of their text before anything is counted (streaming), so
    the corpus size is estimated from the input files (``_estimated_chars``), ~0.9 x
    max_seq_length characters per instance. 0 stays 0 (no validation split).
    """
    f = cfg.validation_fraction
    if f <= 0:
        return 0.0
    instances = max(1.0, _estimated_chars(input_files) / (0.9 * cfg.max_seq_length))
    return max(f, min(MIN_VALIDATION_INSTANCES / instances, MAX_VALIDATION_SHARE))


def shard_cap(cfg: DataConfig, input_files: list[dict]) -> int:
    """Characters at which a shard closes: ``data.shard_chars``, or 1/``data.min_shards`` of the
    estimated corpus (``_estimated_chars``) when that is smaller, but not below MIN_SHARD_CHARS
    (nor above ``shard_chars``).

    Why: the first shard is read before any worker has work, and the last worker to finish
    runs its last shard alone, so a run loses up to about two shards' time on one core. With
    16 shards of 2.3M characters (36M in all, 2 workers, ~18 s) the first shard started 1.15 s
    into the run and the last worker finished 1.46 s after the other (docs/benchmarks.md);
    64 shards shrink both.
    The floor keeps a shard's pool of random B segments large and the per-shard costs (files,
    hand-over) negligible; big corpora keep ``shard_chars``. The cap is a pure function of the
    recorded inputs and settings, not of the number of workers, so the output is the same for
    any ``workers`` and a resumed run cuts as the first (recorded as ``shard_cap``).
    """
    if cfg.min_shards <= 1:  # exactly shard_chars, as before the setting, whatever the estimate
        return cfg.shard_chars
    est = _estimated_chars(input_files)
    return min(cfg.shard_chars, max(MIN_SHARD_CHARS, int(est // cfg.min_shards)))


def _shard_jobs(cfg: DataConfig, read_stats, out: Path, fraction: Optional[float] = None,
                cap: Optional[int] = None) -> Iterator[dict]:
    """Stream documents into shard jobs (validation flags decided here, in input order); a shard
    closes at ``cfg.shard_documents`` documents or ``cap`` characters (``shard_cap``; default
    ``cfg.shard_chars``)."""
    from zhbert.prep.corpus import iter_documents

    base = {k: getattr(cfg, k) for k in ("vocab", "jieba_hmm", "jieba_user_dict", "entity_mode", "segmenter", "seed",
                                         "dupe_factor", "max_seq_length", "short_seq_prob", "pair_mode")}
    base["dir"] = str(out)
    fraction = cfg.validation_fraction if fraction is None else fraction
    cap = cfg.shard_chars if cap is None else cap
    docs: list = []  # (doc_id, sentences, is_validation): a document, or a part of a long one
    cuts: dict[int, tuple[set[int], int]] = {}  # position in docs -> (pieces, cut sentences starting there)
    whole: list[bool] = []  # docs[i] is a whole document
    index = seen = chars = 0
    any_val = False

    def job():
        nonlocal any_val
        any_val = any_val or any(v for _, _, v in docs)
        if not any_val and seen >= 2 and fraction > 0 and whole[-1]:
            doc_id, sents, _ = docs[-1]
            docs[-1] = (doc_id, sents, True)
            any_val = True
        return {**base, "index": index, "docs": docs, "cut": cuts}

    for doc in iter_documents(cfg.input, fmt=cfg.format, text_field=cfg.text_field, fullwidth=cfg.fullwidth,
                              t2s=cfg.t2s, dedup=cfg.dedup, stats=read_stats, dataset_split=cfg.dataset_split,
                              near_dedup=cfg.near_dedup, near_dedup_threshold=cfg.near_dedup_threshold,
                              near_dedup_num_perm=cfg.near_dedup_num_perm, near_dedup_seed=cfg.seed):
        is_val = _is_validation(cfg.seed, doc.sentences, fraction)
        sentences, pieces, firsts = _cut_huge(doc.sentences)
        seen += 1
        for a, b in _parts(sentences, cap):
            if pieces:
                here = {i - a for i in pieces if a <= i < b}
                if here:
                    cuts[len(docs)] = (here, sum(1 for i in firsts if a <= i < b))
            docs.append((doc.id, sentences[a:b], is_val))
            whole.append(b - a == len(sentences))
            chars += sum(map(len, sentences[a:b]))
            if len(docs) == cfg.shard_documents or chars >= cap:
                yield job()
                docs, cuts, whole, index, chars = [], {}, [], index + 1, 0
    if docs:
        yield job()


def _timed(it: Iterator, seconds: list[float]) -> Iterator:
    """``it``, adding the CPU time this process spends producing its items to seconds[0]."""
    while True:
        c0 = time.process_time()
        try:
            item = next(it)
        except StopIteration:
            seconds[0] += time.process_time() - c0
            return
        seconds[0] += time.process_time() - c0
        yield item


def _run_jobs(jobs: Iterator[dict], workers: int, done: set[int]) -> Iterator[tuple[dict, dict, bool]]:
    """(job, shard stats, reused) in shard order; at most 2 * workers shards in flight.

    Workers are a ``concurrent.futures.ProcessPoolExecutor``, not a ``multiprocessing.Pool``:
    when a worker dies (SIGKILL from the out-of-memory killer) a Pool silently starts a new
    one and waits forever for the lost result; the executor fails every pending future with
    ``BrokenProcessPool``, which becomes a ``DataError`` naming the shard (``_dead_worker``).
    """
    def reused(job):
        return _finished_shard(_shard_dir(job["dir"], job["index"])) if job["index"] in done else None

    if workers == 1:
        _worker_init()
        for job in jobs:
            s = reused(job)
            yield (job, s, True) if s is not None else (job, process_shard(job), False)
        return
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    pool = None
    procs: dict = {}  # pid -> Process (CPython 3.9+: the executor's own dict, filled as workers start)

    def submit(job):
        nonlocal pool, procs
        if pool is None:  # at the first shard to process (a resumed run may have none)
            context = _worker_context()
            if context.get_start_method() == "fork":
                # Forked workers inherit the tokenizer and segmenter loaded once here
                # (copy-on-write): ~0.6 s of CPU per worker less than each loading its own,
                # plus the imports a spawned worker repeats.
                _components(job)
            pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_pool_worker_init)
            found = getattr(pool, "_processes", None)  # filled as the workers start
            if found is not None:
                procs = found
        return pool.submit(process_shard, _pack(job))

    pending: collections.deque = collections.deque()
    ok = False
    try:
        try:
            for job in jobs:
                s = reused(job)
                pending.append((job, s, True) if s is not None else (job, submit(job), False))
                while len(pending) > 2 * workers or (pending and pending[0][2]):
                    yield _next_result(pending)
            while pending:
                yield _next_result(pending)
            ok = True
        except BrokenProcessPool:
            # Stop the other workers (SIGTERM) and let the executor reap them all: then every
            # exit code is known, and the worker that died is the one not stopped by SIGTERM.
            _stop_workers(procs)
            pool.shutdown(wait=True)
            dead = [(pid, p.exitcode) for pid, p in list(procs.items()) if p.exitcode not in (None, 0, -signal.SIGTERM)]
            raise _dead_worker(dead, [j for j, _, was in pending if not was]) from None
    finally:
        if pool is not None:
            if not ok:  # an error or an interrupt: do not wait for the shards in progress
                pool.shutdown(wait=False, cancel_futures=True)
                _stop_workers(procs)
            pool.shutdown(wait=True)


def _worker_context():
    """How worker processes start: ``fork`` on Linux (they inherit what the main process has
    loaded; the executor starts them all at once, before any thread of its own), ``spawn``
    elsewhere (macOS and Windows, where forking a process that has loaded native libraries is
    unsafe)."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _stop_workers(procs: dict) -> None:
    """SIGTERM every worker still alive (SIGKILL after 10 s) and reap them. Done here, not
    left to the executor: on CPython 3.11 a worker it spawns while it is tearing itself down
    after a death is never stopped, and ``shutdown`` then waits for it forever."""
    for p in list(procs.values()):
        if p.exitcode is None:
            p.terminate()
    for p in list(procs.values()):
        p.join(10)
        if p.exitcode is None:
            p.kill()
            p.join()


def _next_result(pending: collections.deque) -> tuple[dict, dict, bool]:
    j, r, was = pending[0]
    s = r if was else r.result()  # on an error the job stays in ``pending``, to be named
    pending.popleft()
    return j, s, was


def _dead_worker(dead: list[tuple[int, int]], in_flight: list[dict]) -> DataError:
    """The error for a worker that died: which process, by which signal, on which shard
    (the shard whose worker.json names the dead process and which has no shard.json)."""
    how, shard = "died", None
    if dead:
        pid, code = dead[0]
        how = (f"(pid {pid}) was killed by {signal.Signals(-code).name}" if code < 0
               else f"(pid {pid}) exited with status {code}")
        for job in in_flight:
            d = _shard_dir(job["dir"], job["index"])
            if (_read_json(d / "worker.json") or {}).get("pid") == pid and not (d / "shard.json").exists():
                shard = job["index"]
    if shard is None and in_flight:
        shard = in_flight[0]["index"]
    where = f" while preparing shard {shard}" if shard is not None else ""
    return DataError(f"a worker process {how}{where} (out of memory?); the finished shards are kept: re-run "
                     f"to resume, with fewer workers (--workers) or a smaller data.shard_chars")


def resolve_vocab(spec: str) -> Path:
    """``data.vocab``: a vocab.txt file or a directory holding one (a prepared data dir, a
    tokenizer dir); else any checkpoint argument -- a step_<N>/ or run dir, a registry name,
    hub id or URL such as ``bert-base-chinese`` -- whose model's vocab.txt is used: the model
    directory :func:`zhbert.hub.resolve.resolve_model_dir` picks for ``model.init_from`` too
    (a download is fetched once and cached)."""
    p = Path(spec)
    if p.is_file():
        return p
    if (p / "vocab.txt").is_file():
        return p / "vocab.txt"
    if spec.endswith(".txt") and not p.exists():
        raise DataError(f"{spec}: vocab file not found (data.vocab)")
    from zhbert.hub.resolve import resolve_model_dir

    return resolve_model_dir(spec, what="data.vocab") / "vocab.txt"


def prepare(cfg: DataConfig) -> dict:
    """Run ``zhbert prepare`` for ``cfg`` (see module docstring); returns the stats dict."""
    from zhbert.prep.tokenizer import ChineseTokenizer

    t0 = time.perf_counter()
    if not cfg.input:
        raise DataError("no input given: set data.input (or --input) to corpus files or directories")
    # data.fullwidth None ("what the vocabulary's models saw") is off here; the trainer resolves
    # it from model.init_from before it prepares data.
    cfg = dataclasses.replace(cfg, vocab=str(resolve_vocab(cfg.vocab)), fullwidth=bool(cfg.fullwidth))
    tokenizer = ChineseTokenizer.from_vocab(cfg.vocab)  # DataError naming the vocab
    # The saved tokenizer files record the corpus normalisation, so every export carries it
    # to fine-tuning (ChineseTokenizer.normalize), which then sees text as pretraining did.
    tokenizer.normalization = {"fullwidth": cfg.fullwidth, "t2s": cfg.t2s}
    for p in cfg.input:  # before anything is created (also checked, with the files, later)
        if not Path(p).exists():
            raise DataError(f"input path does not exist: {p}")
    if cfg.segmenter == "rjieba" and importlib.util.find_spec("rjieba") is None:  # here, not in a worker
        raise ConfigError("data.segmenter=rjieba needs the rjieba package: pip install rjieba "
                          "(or set data.segmenter=fastcut)")
    out = Path(cfg.dir)
    if out.is_symlink():  # replace the directory it points to, not the link
        out = Path(os.path.realpath(out))
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: output path exists and is not a directory")
    lock = DirLock(out, what="another `zhbert prepare`", inside=LOCK_INSIDE)
    try:
        lock.acquire()  # DataError naming the holder
    except OSError as e:
        # Nothing can be written here (read-only file system, no permission); an output that
        # is complete and up to date can still be returned as it is.
        meta = _resolved_meta(cfg, tokenizer.vocab_sha256(), _read_json(out / CONFIG_FILE))
        if out.is_dir() and _check_output_dir(out, cfg, meta) == "done":
            return {**(_read_json(out / STATS_FILE) or {}), "already_prepared": True}
        raise DataError(f"cannot write the output {out}: {os_error_message(e, lock.path) or e}") from None
    try:
        return _prepare_locked(cfg, out, tokenizer, t0)
    except ZhbertError:
        raise
    except Exception as e:
        msg = os_error_message(e, out)
        if msg is None:
            raise
        raise DataError(msg) from None
    finally:
        lock.release()


def _prepare_locked(cfg: DataConfig, out: Path, tokenizer, t0: float) -> dict:
    from tqdm.auto import tqdm

    from zhbert.prep.corpus import ReadStats

    _repair_swap(out)
    old = _read_json(out / CONFIG_FILE) if (out / MARKER).exists() else None
    meta = _resolved_meta(cfg, tokenizer.vocab_sha256(), old)  # DataError naming a missing input
    meta["shard_cap"] = shard_cap(cfg, meta["input_files"])
    state = _check_output_dir(out, cfg, meta)
    if state == "resume":
        _check_resume_cap(out, old, meta)
    if state == "done":
        # A run killed between its complete marker and removing the shards left them here.
        shutil.rmtree(out / SHARDS_DIR, ignore_errors=True)
        stats = _read_json(out / STATS_FILE) or {}
        return {**stats, "already_prepared": True}
    work, wstate = out, state
    if state == "replace":
        _guard_replace(out, cfg)
        work = _partial_dir(out)
        wstate = _check_partial_dir(work, meta)
        if wstate == "done":  # finished, but killed before it was swapped in
            _swap_in(out, work)
            shutil.rmtree(out / SHARDS_DIR, ignore_errors=True)
            return _read_json(out / STATS_FILE) or {}

    done = {int(p.parent.name.split("_")[1]) for p in (work / SHARDS_DIR).glob("shard_*/shard.json")} \
        if wstate == "resume" else set()
    created = False

    def open_output() -> None:
        """Create the directory lazily, once there is something to write."""
        nonlocal created
        if wstate == "new":
            work.mkdir(parents=True, exist_ok=True)
            created = True
        write_json_atomic(work / CONFIG_FILE, meta)
        write_json_atomic(work / MARKER, {"format_version": FORMAT_VERSION, "complete": False})

    read_stats = ReadStats()
    totals: collections.Counter = collections.Counter()
    shards = reused_shards = processed_chars = 0
    bar = tqdm(unit="char", unit_scale=True, desc="prepare", disable=None)
    val_fraction = validation_fraction(cfg, meta["input_files"])
    read_cpu = [0.0]
    jobs = _timed(_shard_jobs(cfg, read_stats, work, val_fraction, meta["shard_cap"]), read_cpu)
    progress = _Progress(bar)
    drop = False
    merger = None
    try:
        first = next(jobs, None)
        if first is None:
            raise DataError(_no_documents(cfg, read_stats))
        open_output()
        merger = _Merger(work, storage_columns(tokenizer.vocab_size, cfg.max_seq_length))
        with contextlib.closing(_run_jobs(itertools.chain([first], jobs), cfg.workers, done)) as results:
            for job, s, reused in results:
                merger.add(job["index"])  # shards arrive in order; the workers go on meanwhile
                shards += 1
                reused_shards += reused
                for k in ("train_instances", "validation_instances", "train_documents", "validation_documents",
                          "tokens", "unk_tokens", "random_next", "alignment_failures", "split_long_sentences"):
                    totals[k] += s.get(k, 0)
                if not reused:
                    for k in ("segment", "pairs", "write"):
                        totals[f"cpu_{k}"] += s.get(f"cpu_{k}", 0.0)
                    processed_chars += s["chars"]
                    bar.update(s["chars"])
                bar.set_postfix(shards=shards, instances=totals["train_instances"] + totals["validation_instances"])
                progress.line(shards, processed_chars, totals)
        bar.close()
        if totals["train_instances"] == 0:
            drop = True
            raise DataError(f"no training instances could be built from {', '.join(map(str, cfg.input))} "
                            f"({read_stats.documents} documents, {totals['validation_documents']} of them "
                            f"for validation; too few or too short for pair_mode {cfg.pair_mode}?)")
        written = merger.finish(tokenizer)
        # The counts come from the Arrow files just written; the shards' own counts must agree.
        for k in ("train_instances", "validation_instances", "tokens", "unk_tokens", "random_next"):
            if written[k] != totals[k]:
                raise DataError(f"{work}: the shards report {totals[k]} {k} but their Arrow files hold "
                                f"{written[k]}; the output is not marked complete: re-run with --overwrite")
        seconds = time.perf_counter() - t0
        instances = written["train_instances"] + written["validation_instances"]
        stats = {
            "documents": read_stats.documents,
            "train_documents": totals["train_documents"],
            "validation_documents": totals["validation_documents"],
            "sentences": read_stats.sentences,
            "chars": read_stats.chars,
            "instances": instances,
            "train_instances": written["train_instances"],
            "validation_instances": written["validation_instances"],
            "tokens": written["tokens"],
            "unk_tokens": written["unk_tokens"],
            # [UNK] share of the non-special tokens: how much of the corpus the vocab cannot spell
            "unk_rate": round(written["unk_tokens"] / max(1, written["tokens"] - 3 * instances), 5),
            "validation_fraction_used": round(val_fraction, 6),
            "mean_tokens_per_instance": round(written["tokens"] / instances, 3),
            "nsp_random_fraction": (round(written["random_next"] / instances, 4) if cfg.pair_mode == "nsp" else None),
            "sop_swapped_fraction": (round(written["random_next"] / instances, 4) if cfg.pair_mode == "sop" else None),
            "alignment_failures": totals["alignment_failures"],
            "split_long_sentences": totals["split_long_sentences"],
            "duplicates_dropped": read_stats.duplicates_dropped,
            "near_duplicates_dropped": read_stats.near_duplicates_dropped,
            "skipped_lines": read_stats.skipped_lines,
            "skipped_locations": read_stats.skipped_locations,
            "undecodable_files": read_stats.undecodable_files,
            "files": read_stats.files,
            "files_skipped": read_stats.files_skipped,
            "skipped_files": read_stats.skipped_files,
            "shards": shards,
            "shards_reused": reused_shards,
            "shard_cap": meta["shard_cap"],
            "workers": cfg.workers,
            "seconds": round(seconds, 3),
            "chars_per_second": round(processed_chars / seconds, 1) if seconds > 0 else None,
            # Where the CPU went (seconds, all processes): reading + normalising + dedup in the
            # main process, then per shard segmenting (tokenize, cut, align), pairs, Arrow.
            "cpu_seconds": {"read": round(read_cpu[0], 3),
                            **{k: round(totals[f"cpu_{k}"], 3) for k in ("segment", "pairs", "write")},
                            "finalise": round(merger.cpu, 3)},
            "vocab_sha256": meta["vocab_sha256"],
        }
        write_json_atomic(work / STATS_FILE, stats)
        write_json_atomic(work / MARKER, {"format_version": FORMAT_VERSION, "complete": True,
                                          "zhbert_version": meta["zhbert_version"],
                                          "splits": {s: written[f"{s}_instances"] for s in SPLITS
                                                     if written[f"{s}_instances"]}})
    except BaseException as e:
        bar.close()
        if merger is not None:
            merger.abort()
        drop = drop or (work != out and is_disk_full(e))
        _clean_failed(work, created or work != out, drop)
        raise
    # Complete. Everything below only tidies up, and a re-run repairs it if it is cut short.
    if work != out:
        _swap_in(out, work)
    shutil.rmtree(out / SHARDS_DIR, ignore_errors=True)
    print(summary_line(stats, cfg.vocab), file=sys.stderr, flush=True)
    return stats


def summary_line(stats: dict, vocab: str) -> str:
    """One line on what was prepared, with the [UNK] rate under the vocab (a warning above 1%:
    a vocabulary that cannot spell the corpus, e.g. classical Chinese under bert-base-chinese)."""
    rate = stats.get("unk_rate") or 0.0
    line = (f"[zhbert] prepared {stats['instances']:,} instances ({stats['train_instances']:,} train, "
            f"{stats['validation_instances']:,} validation) from {stats['documents']:,} documents; [UNK] is "
            f"{rate:.2%} of the tokens under {vocab}")
    if rate > 0.01:
        line += " -- high: consider a vocabulary built from this corpus (zhbert vocab build) or extended"
    return line


class _Progress:
    """Plain progress lines when the tqdm bar is off (nohup, SLURM, a pipe): one per finished
    shard, at most every ``every`` seconds."""

    def __init__(self, bar, every: float = 10.0):
        self.off = bar.disable
        self.every, self.t0, self.last = every, time.perf_counter(), 0.0

    def line(self, shards: int, chars: int, totals) -> None:
        now = time.perf_counter()
        if not self.off or now - self.last < self.every:
            return
        self.last = now
        rate = chars / max(now - self.t0, 1e-9)
        print(f"[zhbert] prepare: {shards} shards, {chars:,} chars, "
              f"{totals['train_instances'] + totals['validation_instances']:,} instances, {rate:,.0f} chars/s",
              file=sys.stderr, flush=True)  # stdout is the stats JSON of `zhbert prepare`


def _no_documents(cfg: DataConfig, rs) -> str:
    """Why the input gave no document, as precisely as the read statistics allow."""
    where = f"no documents in input {', '.join(map(str, cfg.input))}"
    if rs.undecodable_files:
        names = ", ".join(rs.undecodable_files[:3]) + (" ..." if len(rs.undecodable_files) > 3 else "")
        return (f"{where}: every line of {names} failed UTF-8 decoding (GBK/GB18030? convert it first, "
                f"e.g. iconv -f GB18030 -t UTF-8)")
    if rs.files == 0 and rs.files_skipped:
        first = rs.skipped_files[0]
        return f"{where}: all {rs.files_skipped} file(s) skipped, e.g. {first['path']} ({first['reason']})"
    extra = f", {rs.skipped_lines} line(s) skipped, e.g. {rs.skipped_locations[0]}" if rs.skipped_lines else ""
    return f"{where} (format {cfg.format}; {rs.files} file(s) read{extra})"


_features_json = features_json  # the name tests/test_prepare.py checks against ``datasets``
_MAX_SPLIT_FILE_BYTES = 500 * 2**20  # as ``save_to_disk``'s default max_shard_size


class _Merger:
    """Shard Arrow files -> one ``datasets.DatasetDict`` in ``out`` (train/, validation/) in
    ``save_to_disk``'s layout (``data-0000i-of-0000n.arrow`` + state.json + dataset_info.json,
    dataset_dict.json), plus the tokenizer files.

    Fed one finished shard at a time, in shard order (``add``), while the workers make the
    later ones: the copy is done by the end of the run instead of after it (it was the serial
    tail of every run, growing with the output: ~0.4 s at 36M characters). ``finish`` closes the
    files, gives them their final names and returns what they hold (``_count_written``), read
    back from disk.

    The shards' record batches are streamed into files of at most ~500 MB with pyarrow, which
    is what ``save_to_disk`` would write, minus importing ``datasets`` and re-encoding the
    table, in bounded memory. A file is written as ``.part-0000i.arrow`` (how many files a
    split has is known only at the end) and fsync'ed when it is closed, before the caller
    writes the complete marker, so after a power cut the marker never stands for data that did
    not reach the disk. A failed run leaves the part
    files to ``_clean_failed`` (``abort`` only closes them); a new run starts the split
    directories afresh."""

    def __init__(self, out: Path, columns=SCHEMA):
        self.out = out
        self.features = features_json(columns)
        self.schema = arrow_schema(columns).with_metadata(
            {"huggingface": json.dumps({"info": {"features": self.features}})})
        self.parts: dict[str, list[Path]] = {split: [] for split in SPLITS}  # closed files
        self.open: dict[str, list] = {}  # split -> [sink, writer, path, bytes so far]
        # The split's fingerprint: every shard's stats, in order.
        self.digest = {split: hashlib.blake2b(split.encode(), digest_size=8) for split in SPLITS}
        self.cpu = 0.0  # process CPU seconds spent here
        for split in SPLITS:
            if (out / split).exists():
                shutil.rmtree(out / split)  # an interrupted earlier run

    def add(self, index: int) -> None:
        """Append shard ``index``'s split files (every shard before it was added already)."""
        import pyarrow as pa

        c0 = time.process_time()
        shard_dir = _shard_dir(self.out, index)
        stats = _read_json(shard_dir / "shard.json") or {}
        for split in SPLITS:
            self.digest[split].update(json.dumps({k: v for k, v in stats.items() if k != "seconds"},
                                                 sort_keys=True).encode())
            # Shards without instances of this split are left out, and so is a split without
            # any (`datasets` cannot reload an empty split: validation with validation_fraction 0).
            if not stats.get(f"{split}_instances"):
                continue
            f = shard_dir / f"{split}.arrow"
            size = f.stat().st_size
            cur = self.open.get(split)
            if cur is not None and cur[3] and cur[3] + size > _MAX_SPLIT_FILE_BYTES:
                self._close(split)
                cur = None
            if cur is None:
                (self.out / split).mkdir(exist_ok=True)
                path = self.out / split / f".part-{len(self.parts[split]):05d}.arrow"
                sink = pa.OSFile(str(path), "wb")
                cur = self.open[split] = [sink, pa.ipc.new_stream(sink, self.schema), path, 0]
            # Buffered reads, not memory_map: a mapped file's touched pages count in the
            # process's resident set, so merging by mmap grew peak RSS with the corpus (+28%
            # from 10 to 100 MB); this holds one record batch at a time.
            with pa.OSFile(str(f), "rb") as src:
                for batch in pa.ipc.open_stream(src):
                    cur[1].write_batch(batch)
            cur[3] += size
        self.cpu += time.process_time() - c0

    def _close(self, split: str) -> None:
        sink, writer, path, _ = self.open.pop(split)
        writer.close()
        sink.close()
        fsync_file(path)
        self.parts[split].append(path)

    def abort(self) -> None:
        """Close the open files (a failed run; ``_clean_failed`` decides what stays)."""
        for sink, writer, _, _ in self.open.values():
            with contextlib.suppress(Exception):
                writer.close()
            with contextlib.suppress(Exception):
                sink.close()
        self.open.clear()

    def finish(self, tokenizer) -> dict:
        """Close and name the split files, write the dataset's JSON files and the tokenizer
        files; the counts of the written files."""
        c0 = time.process_time()
        for split in list(self.open):
            self._close(split)
        info = {"citation": "", "description": "", "features": self.features, "homepage": "", "license": ""}
        splits = []
        written: dict[str, int] = collections.Counter()
        for split in SPLITS:
            parts = self.parts[split]
            if not parts:
                continue
            d = self.out / split
            names = [f"data-{k:05d}-of-{len(parts):05d}.arrow" for k in range(len(parts))]
            for path, name in zip(parts, names):
                os.replace(path, d / name)
            state = {"_data_files": [{"filename": n} for n in names], "_fingerprint": self.digest[split].hexdigest(),
                     "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
                     "_output_all_columns": False, "_split": None}
            write_text_atomic(d / "state.json", json.dumps(state, indent=2, sort_keys=True))
            write_text_atomic(d / "dataset_info.json", json.dumps(info, indent=2))
            written.update(_count_written(d, names, tokenizer.unk_id, split))
            splits.append(split)
        write_text_atomic(self.out / "dataset_dict.json", json.dumps({"splits": splits}))
        tokenizer.save(self.out)
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (self.out / name).exists():
                fsync_file(self.out / name)
        self.cpu += time.process_time() - c0
        return {k: written.get(k, 0) for k in ("train_instances", "validation_instances", "tokens", "unk_tokens",
                                                "random_next")}


def _numpy_view(arr):
    """A numpy view of a null-free pyarrow integer array. Not ``to_numpy``/``pyarrow.compute``
    with a Python scalar: both import pandas (~0.5 s)."""
    import numpy as np
    import pyarrow as pa

    dtype = np.dtype(f"{'u' if pa.types.is_unsigned_integer(arr.type) else 'i'}{arr.type.bit_width // 8}")
    if len(arr) == 0:
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def _count_written(d: Path, names: list[str], unk_id: int, split: str) -> dict[str, int]:
    """Rows, tokens, [UNK] tokens and label-1 rows of the split files ``d/names``, read back
    from disk (buffered, batch by batch, column by column: no Python objects per row)."""
    import pyarrow as pa

    rows = tokens = unk = label1 = 0
    for name in names:
        with pa.OSFile(str(d / name), "rb") as src:  # one batch resident at a time (see above)
            for batch in pa.ipc.open_stream(src):
                ids = _numpy_view(batch.column(COLUMNS.index("input_ids")).flatten())
                rows += batch.num_rows
                tokens += len(ids)
                unk += int((ids == unk_id).sum())
                label1 += int((_numpy_view(batch.column(COLUMNS.index("next_sentence_label"))) == 1).sum())
    return {f"{split}_instances": rows, "tokens": tokens, "unk_tokens": unk, "random_next": label1}
