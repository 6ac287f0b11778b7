"""Summary of ab_rounds.sh's output: per (shards, version) each round's own 1 -> 2 worker
scaling (1-worker wall / 2-worker wall, same round), their mean and standard deviation, and the
paired new - old difference of the scaling over rounds with a 95% t interval."""
import re
import statistics
import sys
from collections import defaultdict

wall = defaultdict(dict)  # (shards, version) -> {(round, workers): wall}
for line in open(sys.argv[1]):
    m = re.match(r"round (\d+) shards (\S+) version (\S+) workers (\d) wall ([\d.]+)", line)
    if m:
        r, shards, v, w, t = m.groups()
        wall[(shards, v)][(int(r), int(w))] = float(t)
T95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}
for shards in sorted({s for s, _ in wall}):
    ratios = {}
    for v in ("old", "new"):
        d = wall[(shards, v)]
        rounds = sorted({r for r, _ in d if (r, 1) in d and (r, 2) in d})
        ratios[v] = {r: d[(r, 1)] / d[(r, 2)] for r in rounds}
        x = list(ratios[v].values())
        w1 = [d[(r, 1)] for r in rounds]
        w2 = [d[(r, 2)] for r in rounds]
        print(f"shards {shards:8s} {v}: rounds {' '.join(f'x{y:.2f}' for y in x)}; mean x{statistics.mean(x):.3f} "
              f"sd {statistics.stdev(x) if len(x) > 1 else 0:.3f}; 1 worker mean {statistics.mean(w1):.2f} s, "
              f"2 workers mean {statistics.mean(w2):.2f} s; best-of x{min(w1) / min(w2):.3f}")
    common = sorted(set(ratios["old"]) & set(ratios["new"]))
    diff = [ratios["new"][r] - ratios["old"][r] for r in common]
    if len(diff) > 1:
        m, s = statistics.mean(diff), statistics.stdev(diff)
        h = T95[len(diff)] * s / len(diff) ** 0.5
        print(f"shards {shards:8s} new - old scaling, paired by round: {m:+.3f} [{m - h:+.3f}, {m + h:+.3f}] (n={len(diff)})")
