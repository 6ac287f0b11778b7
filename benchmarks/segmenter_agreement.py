"""How far rjieba (jieba-rs) is from jieba, in words and in what whole-word masking masks.

    python benchmarks/segmenter_agreement.py                  # whole shared corpus
    python benchmarks/segmenter_agreement.py --max-docs 2000  # a quick look

Both engines cut the same normalised sentences (``zhbert.prep.corpus``, the shared pretrain
corpus by default) with the HMM on, as ``zhbert prepare`` cuts them:

* word boundaries: the positions between two characters where an engine ends a word.
  jieba's (``FastCut``, identical to ``jieba.lcut``) are the reference; precision = share
  of rjieba's boundaries jieba also has, recall = share of jieba's that rjieba has;
  sentences cut identically, words shared (same start and end);
* masking units: the words after alignment to bert-base-chinese's tokens
  (``segment_sentences``: what ``word_ids`` stores and whole-word masking picks from):
  mean word length in tokens, share of multi-token words, and the share of jieba's units
  that are not a unit of rjieba's (a masked word that would differ);
* entity/phrase spans (entity masking): share of jieba's spans that rjieba also has;
* the cut's speed (CPU time of the cut alone, same text, each engine in this process).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BATCH = 2048  # sentences per cut, as prepare batches them


def boundaries(words: list[str]) -> set[int]:
    """Character positions where a word ends, the text's end excluded."""
    out, pos = set(), 0
    for w in words[:-1]:
        pos += len(w)
        out.add(pos)
    return out


def units(word_ids: list[int]) -> set[tuple[int, int]]:
    """Token ranges [a, b) of the words (masking units) of one aligned sentence."""
    out, start = set(), 0
    for k in range(1, len(word_ids) + 1):
        if k == len(word_ids) or word_ids[k] != word_ids[k - 1]:
            out.add((start, k))
            start = k
    return out


def spans(entity_ids: list[int]) -> set[tuple[int, int]]:
    out, start = set(), None
    for k in range(len(entity_ids) + 1):
        e = entity_ids[k] if k < len(entity_ids) else -1
        if start is not None and (e != entity_ids[start]):
            out.add((start, k))
            start = None
        if start is None and e >= 0:
            start = k
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="+", default=[str(SHARED / "pretrain_corpus")])
    ap.add_argument("--vocab", default=str(SHARED / "bert_base_chinese" / "vocab.txt"))
    ap.add_argument("--max-docs", type=int, default=0, help="only the first N documents (0 = all)")
    args = ap.parse_args(argv)

    from zhbert.prep.corpus import iter_documents
    from zhbert.prep.segment import Segmenter, segment_sentences
    from zhbert.prep.tokenizer import ChineseTokenizer

    texts: list[str] = []
    for n, d in enumerate(iter_documents(args.input), 1):
        texts.extend(d.sentences)
        if args.max_docs and n >= args.max_docs:
            break
    batches = ["\n".join(texts[i:i + BATCH]) for i in range(0, len(texts), BATCH)]
    tok = ChineseTokenizer.from_vocab(args.vocab)
    segs = {name: Segmenter(engine=name) for name in ("fastcut", "rjieba")}

    cut_s, words = {}, {}
    for name, seg in segs.items():
        seg.cut_words("预热") if name == "fastcut" else seg.cut_codes("预热")
        t0 = time.process_time()
        out = [seg.cut_codes(b)[0] for b in batches]
        cut_s[name] = time.process_time() - t0
        # Split the joined cuts back into sentences (each "\n" is a word of its own).
        per_sent, cur = [], []
        for ws in out:
            for w in ws:
                if w == "\n":
                    per_sent.append(cur)
                    cur = []
                else:
                    cur.append(w)
            per_sent.append(cur)
            cur = []
        assert len(per_sent) == len(texts), name
        words[name] = per_sent

    ref, alt = words["fastcut"], words["rjieba"]
    tp = n_ref = n_alt = same_sent = shared_words = ref_words = alt_words = 0
    for a, b in zip(ref, alt):
        ba, bb = boundaries(a), boundaries(b)
        tp += len(ba & bb)
        n_ref += len(ba)
        n_alt += len(bb)
        same_sent += a == b
        ref_words += len(a)
        alt_words += len(b)
        shared_words += len(a) if a == b else _shared(a, b)

    aligned = {name: [x for b in range(0, len(texts), BATCH) for x in segment_sentences(texts[b:b + BATCH], tok, seg)]
               for name, seg in segs.items()}
    stats = {}
    for name, sents in aligned.items():
        n_units = multi = toks = 0
        for s in sents:
            u = units(s.word_ids)
            n_units += len(u)
            multi += sum(1 for a, b in u if b - a > 1)
            toks += len(s.word_ids)
        stats[name] = {"units": n_units, "tokens_per_unit": toks / n_units, "multi_token_share": multi / n_units}
    diff_units = total_units = ent_ref = ent_same = 0
    for a, b in zip(aligned["fastcut"], aligned["rjieba"]):
        ua, ub = units(a.word_ids), units(b.word_ids)
        total_units += len(ua)
        diff_units += len(ua - ub)
        sa, sb = spans(a.entity_ids), spans(b.entity_ids)
        ent_ref += len(sa)
        ent_same += len(sa & sb)

    chars = sum(map(len, texts))
    result = {
        "sentences": len(texts), "chars": chars,
        "boundary_precision": tp / n_alt, "boundary_recall": tp / n_ref,
        "sentences_cut_identically": same_sent / len(texts),
        "words_jieba": ref_words, "words_rjieba": alt_words, "words_shared_share_of_jieba": shared_words / ref_words,
        "units": stats, "jieba_units_not_in_rjieba": diff_units / total_units,
        "entity_spans_jieba": ent_ref, "entity_spans_shared": ent_same / max(ent_ref, 1),
        "cut_cpu_s": cut_s, "cut_speed_rjieba_over_fastcut": cut_s["fastcut"] / cut_s["rjieba"],
    }
    print(json.dumps(result, indent=1))
    print(f"\n{len(texts):,} sentences, {chars:,} characters")
    print(f"word boundaries: precision {result['boundary_precision']:.4%}, recall {result['boundary_recall']:.4%}; "
          f"sentences cut identically {result['sentences_cut_identically']:.2%}; "
          f"jieba's words also rjieba's {result['words_shared_share_of_jieba']:.4%}")
    for name, s in stats.items():
        print(f"{name:8} masking units {s['units']:,}: {s['tokens_per_unit']:.4f} tokens/unit, "
              f"{s['multi_token_share']:.2%} multi-token")
    print(f"jieba's masking units that rjieba does not have: {result['jieba_units_not_in_rjieba']:.4%}; "
          f"entity spans shared {result['entity_spans_shared']:.2%} of {ent_ref:,}")
    print(f"cut CPU: fastcut {cut_s['fastcut']:.2f} s, rjieba {cut_s['rjieba']:.2f} s "
          f"(rjieba x{result['cut_speed_rjieba_over_fastcut']:.2f})")
    return 0


def _shared(a: list[str], b: list[str]) -> int:
    """Words of `a` that `b` also has at the same character range."""
    def ranges(ws):
        out, pos = set(), 0
        for w in ws:
            out.add((pos, pos + len(w)))
            pos += len(w)
        return out
    return len(ranges(a) & ranges(b))


if __name__ == "__main__":
    sys.exit(main())
