"""One `zhbert prepare` of CORPUS with WORKERS workers and prepare's default shards (or shards of
SHARD_CHARS characters, the third argument, as prep_throughput.py's default 8 per worker) (rjieba),
timed: wall seconds, CPU seconds of this process and its workers, and stats.json's cpu_seconds.
Used for an A/B of two code versions on the same corpus, alternating, e.g.
    git worktree add /tmp/old a587c1b
    for i in 1 2 3; do PYTHONPATH=/tmp/old python ab.py corpus8.txt 2; python ab.py corpus8.txt 2; done
(the first line of each output names the checkout it imported). corpus8.txt: the shared corpus
8 times, each copy's documents reshuffled, as benchmarks/prep_throughput.py --copies 8 writes it
(mkcorpus.py here). Since 2026-12-07 (evening; prep-2026-12-07c) it also prints the number of
shards; the runs recorded here were made before, without it."""
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import zhbert.prep.prepare as P  # noqa: E402
from zhbert.config import DataConfig  # noqa: E402

corpus, workers = sys.argv[1], int(sys.argv[2])
shards = dict(shard_documents=10**9, shard_chars=int(sys.argv[3])) if len(sys.argv) > 3 else {}  # SHARD_CHARS
vocab = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "bert_base_chinese" / "vocab.txt"
cfg = DataConfig(input=[corpus], dir=tempfile.mkdtemp() + "/o", vocab=str(vocab), workers=workers,
                 overwrite=True, segmenter="rjieba", **shards)
t0 = time.perf_counter()
st = P.prepare(cfg)
wall = time.perf_counter() - t0
cpu = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
          for f in ("ru_utime", "ru_stime"))
print(f"{Path(P.__file__).parents[2]} workers {workers} wall {wall:.2f} cpu {cpu:.2f} shards {st['shards']} {st['cpu_seconds']}", flush=True)
