"""The figures behind data.fullwidth's default (docs/data.md, "Normalisation").

1. How many tokens of CLUE's dev text the full-width folding changes, under the
   bert-base-chinese vocabulary: every string field of every ``*/dev*.json`` file.
2. How much of a pretraining corpus the full-width forms are, and how many distinct ones.

    python benchmarks/fullwidth_share.py [--clue ../shared/data/clue]
        [--vocab ../shared/data/bert_base_chinese/vocab.txt]
        [--corpus ../shared/data/pretrain_corpus corpora/sample]

Measured 2026-12-03: 113,333 strings / 2,341,549 tokens, 4.63% of the tokens and 12.41% of
the strings changed; corpus 4,988,687 characters, 7.29% full-width forms, 68 distinct.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from zhbert.clue.data import dev_strings
from zhbert.prep.tokenizer import FULLWIDTH_FOLDS, ChineseTokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clue", default="../shared/data/clue")
    ap.add_argument("--vocab", default="../shared/data/bert_base_chinese/vocab.txt")
    ap.add_argument("--corpus", nargs="+", default=["../shared/data/pretrain_corpus", "corpora/sample"])
    args = ap.parse_args()

    strings = dev_strings(args.clue)
    tok = ChineseTokenizer.from_vocab(args.vocab)
    raw = [ids for ids, _ in tok.encode_batch(strings)]
    tok.normalization = {"fullwidth": True, "t2s": False}
    folded = [ids for ids, _ in tok.encode_batch(strings)]
    total = sum(len(x) for x in raw)
    changed = sum(sum(a != b for a, b in zip(x, y)) if len(x) == len(y) else max(len(x), len(y))
                  for x, y in zip(raw, folded))
    rows = sum(x != y for x, y in zip(raw, folded))
    print(f"CLUE dev: {len(strings):,} strings, {total:,} tokens; folding changes {changed:,} tokens "
          f"({100 * changed / total:.2f}%) in {rows:,} strings ({100 * rows / len(strings):.2f}%)")

    forms = {a for a, _ in FULLWIDTH_FOLDS}
    counts: Counter[str] = Counter()
    chars = 0
    for root in map(Path, args.corpus):
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            text = f.read_text(encoding="utf-8", errors="replace")
            chars += len(text)
            counts.update(c for c in text if c in forms)
    n = sum(counts.values())
    print(f"corpus: {chars:,} characters, {n:,} full-width forms ({100 * n / max(chars, 1):.2f}%), "
          f"{len(counts)} distinct; most common: {' '.join(c for c, _ in counts.most_common(10))}")


if __name__ == "__main__":
    main()
