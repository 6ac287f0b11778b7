#!/usr/bin/env bash
# Chinese Wikipedia -> zhbert pretraining instances.
#
#   bash corpora/zhwiki.sh [WORK_DIR] [VOCAB]
#
# Needs network for the download and `pip install mwparserfromhell` (zhbert renders the
# wikitext itself: no WikiExtractor step, no extracted copy on disk). Expect about 3 GB for the
# compressed dump and a few GB of Arrow output at seq length 128. Every step can be rerun: the
# download continues, and `zhbert prepare` resumes from its finished shards.
set -euo pipefail

WORK=${1:-data/zhwiki}
VOCAB=${2:-vocab.txt}          # e.g. bert-base-chinese's vocab.txt, or `zhbert vocab build`
DUMP=zhwiki-latest-pages-articles.xml.bz2
mkdir -p "$WORK"

# 1. Download the latest dump of all articles (pages-articles: no talk/user pages).
if [ ! -s "$WORK/$DUMP" ]; then
  wget -c -O "$WORK/$DUMP" "https://dumps.wikimedia.org/zhwiki/latest/$DUMP"
fi

# 2. Instances, straight from the dump (--format wikidump, docs/data.md "Wikipedia dumps"): the
#    .xml.bz2 is streamed page by page; main-namespace articles only, redirects skipped,
#    templates, tables, refs, files and categories dropped, one document per article.
#    zh.wikipedia mixes traditional and simplified script (articles are written in either and
#    converted on display), so --t2s converts everything to simplified; this matches a
#    simplified-character vocab and halves the number of distinct characters.
#    Add data.near_dedup=true to drop near-duplicate articles too (pip install datasketch).
zhbert prepare --input "$WORK/$DUMP" --format wikidump --t2s \
    --output "$WORK/instances" --vocab "$VOCAB" --max-seq-length 128 \
    --workers "$(nproc)" --seed 12345
