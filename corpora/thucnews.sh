#!/usr/bin/env bash
# THUCNews (http://thuctc.thunlp.org/, ~740k news articles in 14 category folders, 2.2 GB)
# -> zhbert pretraining instances.
#
#   bash corpora/thucnews.sh THUCNews/ [WORK_DIR] [VOCAB]
#
# Each article is one .txt file: the title on the first line, then one paragraph per line.
# zhbert's `plain` format would make every paragraph its own document, so first pack each
# file into one JSON line (one article = one document, keeping NSP pairs inside articles).
set -euo pipefail

SRC=${1:?usage: thucnews.sh THUCNews_DIR [WORK_DIR] [VOCAB]}
WORK=${2:-data/thucnews}
VOCAB=${3:-vocab.txt}
mkdir -p "$WORK"

if [ ! -s "$WORK/thucnews.jsonl.gz" ]; then
  python - "$SRC" "$WORK/thucnews.jsonl.gz" <<'PY'
import gzip, json, sys
from pathlib import Path

src, out = Path(sys.argv[1]), sys.argv[2]
with gzip.open(out + ".tmp", "wt", encoding="utf-8") as f:
    for path in sorted(src.rglob("*.txt")):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        body = "\n".join(line for line in lines[1:] if line.strip())  # drop the title line
        if body:
            f.write(json.dumps({"text": body, "category": path.parent.name}, ensure_ascii=False) + "\n")
Path(out + ".tmp").rename(out)
PY
fi

zhbert prepare --input "$WORK/thucnews.jsonl.gz" --format jsonl \
    --output "$WORK/instances" --vocab "$VOCAB" --max-seq-length 128 \
    --workers "$(nproc)" --seed 12345
