#!/usr/bin/env bash
# Alternating A/B of prepare's 1 -> 2 worker scaling, old (OLD: a worktree of a587c1b) vs new
# (this checkout), on corpus8.txt (mkcorpus.py), with prepare's default shards and with 16
# shards of 2,271,126 characters (prep_throughput.py's default, 8 per worker). Each round runs
# every (shards, workers, version) once; the version that goes first alternates by round.
#   OLD=/tmp/old bash ab_rounds.sh corpus8.txt 6 > ab_rounds.txt; python ab_summary.py ab_rounds.txt
set -eu
corpus=$1; rounds=$2; here=$(dirname "$0")
for r in $(seq 1 "$rounds"); do
  for shards in default 2271126; do
    extra=(); [[ $shards == default ]] || extra=("$shards")
    for w in 1 2; do
      if (( r % 2 )); then order="old new"; else order="new old"; fi
      for v in $order; do
        if [[ $v == old ]]; then out=$(PYTHONPATH=$OLD python "$here/ab.py" "$corpus" "$w" "${extra[@]}" 2>/dev/null)
        else out=$(python "$here/ab.py" "$corpus" "$w" "${extra[@]}" 2>/dev/null); fi
        echo "round $r shards $shards version $v $(echo "$out" | grep -o 'workers.*')"
      done
    done
  done
done
