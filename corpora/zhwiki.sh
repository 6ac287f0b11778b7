#!/usr/bin/env bash
# Chinese Wikipedia -> zhbert pretraining instances.
#
#   bash corpora/zhwiki.sh [WORK_DIR] [VOCAB]
#
# Needs network for the download and `pip install wikiextractor`. Expect about 3 GB for the
# compressed dump, ~2 GB of extracted text, and a few GB of Arrow output at seq length 128.
# Every step can be rerun: finished steps are skipped, and `zhbert prepare` resumes.
set -euo pipefail

WORK=${1:-data/zhwiki}
VOCAB=${2:-vocab.txt}          # e.g. bert-base-chinese's vocab.txt, or `zhbert vocab build`
DUMP=zhwiki-latest-pages-articles.xml.bz2
mkdir -p "$WORK"

# 1. Download the latest dump of all articles (pages-articles: no talk/user pages).
if [ ! -s "$WORK/$DUMP" ]; then
  wget -c -O "$WORK/$DUMP" "https://dumps.wikimedia.org/zhwiki/latest/$DUMP"
fi

# 2. Strip wiki markup. WikiExtractor writes extracted/AA/wiki_00, wiki_01, ... with one
#    <doc id=.. url=.. title=..> ... </doc> block per article.
if [ ! -d "$WORK/extracted" ]; then
  python -m wikiextractor.WikiExtractor "$WORK/$DUMP" -o "$WORK/extracted" \
      --processes "$(nproc)" -b 100M
fi

# 3. Instances. zh.wikipedia mixes traditional and simplified script (articles are written
#    in either and converted on display), so --t2s converts everything to simplified; this
#    matches a simplified-character vocab and halves the number of distinct characters.
zhbert prepare --input "$WORK/extracted" --format wiki --t2s \
    --output "$WORK/instances" --vocab "$VOCAB" --max-seq-length 128 \
    --workers "$(nproc)" --seed 12345
