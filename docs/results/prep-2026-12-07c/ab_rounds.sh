#!/usr/bin/env bash
# Alternating A/B of prepare's 1 -> 2 worker scaling, OLD vs NEW (two git worktrees, imported
# through PYTHONPATH), on CORPUS, for each shard setting in SHARDS ("default": prepare's own
# shards; a number N: shard_documents 1e9, shard_chars N, as ../prep-2026-12-07b/ab.py takes it -- the new code's
# data.min_shards then still caps shards at 1/64 of the corpus, the old code has no such cap).
# Each round runs every (shards, workers, version) once; the version that goes first alternates.
#   OLD=/tmp/abold NEW=/tmp/abnew SHARDS="default 2271126" bash ab_rounds.sh corpus8.txt 5 > ab_rounds_copies8.txt
#   python ../prep-2026-12-07b/ab_summary.py ab_rounds_copies8.txt   (corpus8.txt: ../prep-2026-12-07b/mkcorpus.py)
set -eu
corpus=$1; rounds=$2; here=$(dirname "$0")
for r in $(seq 1 "$rounds"); do
  for shards in $SHARDS; do
    extra=(); [[ $shards == default ]] || extra=("$shards")
    for w in 1 2; do
      if (( r % 2 )); then order="old new"; else order="new old"; fi
      for v in $order; do
        if [[ $v == old ]]; then src=$OLD; else src=$NEW; fi
        out=$(PYTHONPATH=$src python "$here/../prep-2026-12-07b/ab.py" "$corpus" "$w" "${extra[@]}" 2>/dev/null)
        echo "round $r shards $shards version $v $(echo "$out" | grep -o 'workers.*')"
      done
    done
  done
done
