"""corpus8.txt (argv[1]): the shared corpus 8 times, copy k > 0 of each document with its
sentences shuffled and the first one numbered (as benchmarks/prep_throughput.py --copies 8)."""
import random
import sys
from pathlib import Path

from zhbert.prep.corpus import iter_documents

shared = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "pretrain_corpus"
docs = [d.sentences for d in iter_documents([str(shared)])]
rng, base = random.Random(0), list(docs)
for k in range(1, 8):
    for d in base:
        s = list(d)
        rng.shuffle(s)
        docs.append([f"{s[0]}{k}", *s[1:]])
Path(sys.argv[1]).write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
