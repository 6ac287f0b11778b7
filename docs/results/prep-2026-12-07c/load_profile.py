"""Time of `import zhbert.prep.prepare` and of loading the tokenizer and rjieba segmenter
(`_components`, what the main process does before forking the workers), with a cProfile of it.
    python load_profile.py          (output of the runs quoted: load_profile.txt)"""
from pathlib import Path as _Path
SHARED = _Path(__file__).resolve().parents[4] / "shared" / "data"
import time,sys
t0=time.perf_counter()
import zhbert.prep.prepare as P
t1=time.perf_counter()
job={"vocab":str(SHARED / "bert_base_chinese" / "vocab.txt"),"jieba_hmm":True,"jieba_user_dict":None,"entity_mode":"dict","segmenter":"rjieba"}
import cProfile,pstats
pr=cProfile.Profile(); pr.enable()
P._components(job)
pr.disable()
t2=time.perf_counter()
print("import prepare %.3f components %.3f"%(t1-t0,t2-t1))
pstats.Stats(pr).sort_stats("cumtime").print_stats(18)
