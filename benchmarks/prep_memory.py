"""Peak memory of `zhbert prepare` against corpus size: it should stay flat (within ±10%).

    python benchmarks/prep_memory.py --sizes 10                # a quick check (~1 minute)
    python benchmarks/prep_memory.py                           # 10 MB, 100 MB, 1 GB (~1 h on 2 cores)
    python benchmarks/prep_memory.py --workers 2 --tmp /big/disk

prepare's memory is meant to be bounded by the shards in flight, not by the corpus
(docs/data.md, "Shards and workers"). For each size the script builds a corpus of that many
bytes in a temporary directory (never in the repository): the shared pretrain corpus's
documents, repeated in a new shuffled order per copy, each copy's documents made distinct
(their sentences shuffled and the first one numbered) so that duplicate removal keeps them,
as it would keep a real corpus of that size. Then it runs `zhbert prepare` on it in a fresh
process and reads the peak resident set size (``ru_maxrss``) of the main process (reading,
normalising, dedup, shard jobs, finalising) and of the largest worker (segmenting, pairs,
Arrow), both measured in that process with ``resource.getrusage`` (with ``--workers 1`` the
shards are made in the main process: one figure). Disk: about 4x the
largest size (corpus, shards and the merged output at once); each size's files are deleted
before the next.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MB = 1 << 20


def build_corpus(docs: list[list[str]], size: int, path: Path, seed: int = 0) -> dict:
    """Write `size` bytes (UTF-8, BERT layout: a sentence per line, a blank line between
    documents) made of `docs` repeated; copy k > 0 of a document has its sentences shuffled and
    its first sentence ends in "k", so no two documents are equal."""
    rng = random.Random(seed)
    written = n_docs = copy = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size:
            order = list(range(len(docs)))
            rng.shuffle(order)
            for i in order:
                sents = list(docs[i])
                if copy:
                    rng.shuffle(sents)
                    sents[0] = f"{sents[0]}{copy}"
                block = "\n".join(sents) + "\n\n"
                f.write(block)
                written += len(block.encode("utf-8"))
                n_docs += 1
                if written >= size:
                    break
            copy += 1
    return {"bytes": written, "documents": n_docs, "copies": copy}


def _child(args) -> int:
    """One prepare in this fresh process; prints the peaks as JSON."""
    from zhbert.config import DataConfig
    from zhbert.prep.prepare import prepare

    cfg = DataConfig(input=[args.child_input], dir=args.child_out, vocab=args.vocab, workers=args.workers,
                     segmenter=args.engine, overwrite=True)
    t0 = time.perf_counter()
    stats = prepare(cfg)
    me, ch = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_maxrss is in KiB on Linux; RUSAGE_CHILDREN: the largest single (waited-for) worker
    print(json.dumps({"main_mb": me.ru_maxrss / 1024, "worker_mb": ch.ru_maxrss / 1024,
                      "seconds": time.perf_counter() - t0, "instances": stats["instances"]}))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="+", default=[str(SHARED / "pretrain_corpus")])
    ap.add_argument("--vocab", default=str(SHARED / "bert_base_chinese" / "vocab.txt"))
    ap.add_argument("--sizes", default="10,100,1000", help="corpus sizes in MB (MiB), comma-separated")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--engine", default="fastcut", help="data.segmenter")
    ap.add_argument("--tmp", default=None, help="where the corpora and outputs go (default: the system temp dir)")
    ap.add_argument("--child-input", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_input:
        return _child(args)

    from zhbert.prep.corpus import iter_documents

    docs = [d.sentences for d in iter_documents(args.input)]
    rows = []
    base = Path(tempfile.mkdtemp(prefix="zhbert_prep_memory_", dir=args.tmp))
    try:
        for mb in (float(x) for x in args.sizes.split(",")):
            corpus = base / "corpus.txt"
            info = build_corpus(docs, int(mb * MB), corpus)
            out = base / "out"
            cmd = [sys.executable, __file__, "--child-input", str(corpus), "--child-out", str(out),
                   "--vocab", args.vocab, "--workers", str(args.workers), "--engine", args.engine]
            env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
            r = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env)
            row = {"mb": mb, **info, **json.loads(r.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(out, ignore_errors=True)
            corpus.unlink()
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(f"\n| corpus | documents | instances | main peak RSS | worker peak RSS | prepare time |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        worker = f"{r['worker_mb']:.0f} MB" if r["worker_mb"] else "(in the main process)"
        print(f"| {r['mb']:g} MB | {r['documents']:,} | {r['instances']:,} | {r['main_mb']:.0f} MB "
              f"| {worker} | {r['seconds']:.0f} s |")
    if len(rows) > 1:
        for key in ("main_mb", "worker_mb"):
            lo, hi = min(r[key] for r in rows), max(r[key] for r in rows)
            if lo <= 0:
                continue  # --workers 1: prepare runs in the main process, no worker
            print(f"{key}: max / min = {hi / lo:.3f} (flat within 10%: {'yes' if hi / lo <= 1.10 else 'no'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
