"""When each shard of a `zhbert prepare` (rjieba) starts and ends, per worker, in seconds from
the start of prepare (and its CPU per stage): where a 2-worker run leaves a core idle.
    python timeline_1x.py WORKERS [INPUT ...]         (default input: the shared pretrain corpus)
    SC=100000 python timeline_1x.py 2                 (shards of exactly SC characters)
Output of the runs quoted in docs/benchmarks.md: timeline_1x.txt."""
from pathlib import Path as _Path
SHARED = _Path(__file__).resolve().parents[4] / "shared" / "data"
import sys, time, json, os, tempfile, collections
os.environ.setdefault("OMP_NUM_THREADS", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from pathlib import Path
workers = int(sys.argv[1])
t00 = time.perf_counter()
import zhbert.prep.prepare as P
from zhbert.config import DataConfig
log = Path(tempfile.mkdtemp()) / "log"
orig = P.process_shard
def patched(job):
    a = time.perf_counter(); c = time.process_time()
    r = orig(job)
    with open(log, "a") as f:
        f.write(json.dumps([os.getpid(), job["index"], a, time.perf_counter(), c, time.process_time()]) + "\n")
    return r
P.process_shard = patched
cfg = DataConfig(input=sys.argv[2:] or [str(SHARED / "pretrain_corpus")], dir=tempfile.mkdtemp() + "/o", vocab=str(SHARED / "bert_base_chinese" / "vocab.txt"),
                 workers=workers, overwrite=True, **({"shard_chars": int(os.environ["SC"]), "shard_documents": 10**9} if os.environ.get("SC") else {}), segmenter="rjieba")
t0 = time.perf_counter(); c0 = time.process_time()
st = P.prepare(cfg)
t1 = time.perf_counter()
rows = sorted((json.loads(l) for l in open(log)), key=lambda r: r[2])
by = collections.defaultdict(list)
for r in rows: by[r[0]].append(r)
print(f"import {t0-t00:.2f} wall {t1-t0:.2f} main cpu {time.process_time()-c0:.2f} cpu {st['cpu_seconds']}")
for pid, v in by.items():
    print(pid, len(v), "shards", [(r[1], round(r[2]-t0,2), round(r[3]-t0,2)) for r in v])
