"""Timeline of one `zhbert prepare` run: when each shard starts and ends in its worker (wall seconds
from process start) and its CPU seconds, plus when the main process loaded the segmenter.
    python timeline.py CORPUS.txt WORKERS ENGINE      (NSH=n: n shards of equal characters; default 8 per
    worker, as benchmarks/prep_throughput.py did then; NSH=default: prepare's own shards). CORPUS.txt: the
benchmark's corpus, e.g. written with --copies 8 (the shared corpus, each copy's documents reshuffled).
Output on 2026-12-07: timeline_copies8_2workers.txt."""
import sys, time, json, os, tempfile
os.environ.setdefault("OMP_NUM_THREADS", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
T0 = time.perf_counter()
from pathlib import Path
corpus, workers, engine = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
import zhbert.prep.prepare as P
from zhbert.config import DataConfig
log = Path(tempfile.mkdtemp()) / "log"
orig = P.process_shard
def patched(job):
    a = time.perf_counter(); c = time.process_time()
    r = orig(job)
    with open(log, "a") as f:
        f.write(json.dumps([os.getpid(), job["index"], a - T0, time.perf_counter() - T0, time.process_time() - c]) + "\n")
    return r
P.process_shard = patched
oc = P._components
def comp(job):
    a = time.perf_counter(); r = oc(job); print(f"components {a-T0:.2f}->{time.perf_counter()-T0:.2f}", file=sys.stderr); return r
P._components = comp
chars = len(corpus.read_text())
nsh = os.environ.get("NSH", str(8 * workers))
exact = {"min_shards": 1} if hasattr(DataConfig(), "min_shards") else {}  # exactly the n shards asked for
shards = {} if nsh == "default" else dict(shard_documents=10**9, shard_chars=max(1, chars // int(nsh)), **exact)
cfg = DataConfig(input=[str(corpus)], dir=tempfile.mkdtemp() + "/o", vocab=str(Path(__file__).resolve().parents[4] / "shared" / "data" / "bert_base_chinese" / "vocab.txt"),
                 workers=workers, overwrite=True, segmenter=engine, **shards)
t1 = time.perf_counter()
st = P.prepare(cfg)
t2 = time.perf_counter()
print(f"imports {t1-T0:.2f}  prepare {t1-T0:.2f}->{t2-T0:.2f}  cpu {st.get('cpu_seconds')}", file=sys.stderr)
for l in sorted(open(log), key=lambda l: json.loads(l)[2]):
    p, i, a, b, c = json.loads(l); print(f"  pid {p} shard {i:2d} {a:6.2f} -> {b:6.2f}  cpu {c:.2f}", file=sys.stderr)
