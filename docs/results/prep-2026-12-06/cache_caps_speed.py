"""Old vs new segmenter cache caps on a 100 MB corpus (fastcut, 1 worker): python cache_caps_speed.py old|new"""
import sys, os, time, gc
from pathlib import Path
os.environ["OMP_NUM_THREADS"]="1"; os.environ["TOKENIZERS_PARALLELISM"]="false"
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

mode = sys.argv[1]; mb = 100
p = Path(os.environ.get("TMPDIR", "/tmp")) / f"zhbert_cache_caps_c{mb}.txt"
if not p.exists():
    from prep_memory import build_corpus
    from zhbert.prep.corpus import iter_documents
    docs = [d.sentences for d in iter_documents([str(Path(__file__).resolve().parents[4] / "shared" / "data" / "pretrain_corpus")])]
    build_corpus(docs, int(mb * 2**20), p); del docs; gc.collect()
import zhbert.prep.segment as S, zhbert.prep.fastcut as F, zhbert.prep.prepare as P
if mode == "old":
    S._BLOCK_CACHE_SIZE = 150_000; F._HMM_CACHE_SIZE = 150_000; S._GUESSED_CODES = 200_000
from zhbert.config import DataConfig
cfg = DataConfig(input=[str(p)], dir=str(p.parent / f"zhbert_cache_caps_o_{mode}"), vocab=str(Path(__file__).resolve().parents[4] / "shared" / "data" / "bert_base_chinese" / "vocab.txt"), workers=1, segmenter="fastcut", overwrite=True)
t = time.perf_counter(); s = P.prepare(cfg)
import resource
print(mode, "seconds", round(time.perf_counter() - t, 1), "chars/s", s["chars_per_second"], "cpu", s["cpu_seconds"], "maxrss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10)
