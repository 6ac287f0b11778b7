"""Per worker: when its first shard starts and its last ends (seconds from prepare start), the wall and CPU
seconds between its shards (hand-over: the next job unpickled, or waiting) and inside them.
    python gaps.py corpus8.txt WORKERS NSHARDS    (shards of size(corpus)/3/NSHARDS characters)"""
import sys, time, json, os, tempfile
os.environ.setdefault("OMP_NUM_THREADS", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from pathlib import Path
corpus, workers, nsh = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
import zhbert.prep.prepare as P
from zhbert.config import DataConfig
log = Path(tempfile.mkdtemp()) / "log"
orig = P.process_shard
LAST = {}
def patched(job):
    a = time.perf_counter(); c = time.process_time()
    r = orig(job)
    with open(log, "a") as f:
        f.write(json.dumps([os.getpid(), job["index"], a, time.perf_counter(), c, time.process_time()]) + "\n")
    return r
P.process_shard = patched
chars = os.path.getsize(corpus) // 3
cfg = DataConfig(input=[str(corpus)], dir=tempfile.mkdtemp() + "/o", vocab=str(Path(__file__).resolve().parents[3].parent / "shared" / "data" / "bert_base_chinese" / "vocab.txt"),
                 workers=workers, shard_documents=10**9, shard_chars=max(1, chars // nsh), overwrite=True, segmenter="rjieba")
t0 = time.perf_counter(); c0 = time.process_time()
st = P.prepare(cfg)
t1 = time.perf_counter()
rows = sorted((json.loads(l) for l in open(log)), key=lambda r: r[2])
import collections
by = collections.defaultdict(list)
for r in rows: by[r[0]].append(r)
print(f"wall {t1-t0:.2f} main cpu {time.process_time()-c0:.2f} cpu {st['cpu_seconds']}")
for pid, v in by.items():
    gw = sum(b[2]-a[3] for a, b in zip(v, v[1:])); gc = sum(b[4]-a[5] for a, b in zip(v, v[1:]))
    print(pid, len(v), f"start {v[0][2]-t0:.2f} end {v[-1][3]-t0:.2f} gaps wall {gw:.2f} cpu {gc:.2f}; in-shard wall {sum(r[3]-r[2] for r in v):.2f} cpu {sum(r[5]-r[4] for r in v):.2f}")
