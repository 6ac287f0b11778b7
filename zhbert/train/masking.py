"""Dynamic masked-LM masking: char / whole-word / entity / n-gram, as pure functions on ids.

Word segmentation happens once, when instances are built (zhbert/prep/segment.py stores a word
index and an entity/phrase span index for every token). Masking only reads those integer
columns; it never re-runs jieba and never decodes ids back to text, so it is cheap enough to
draw a fresh mask every time an instance is seen ("dynamic masking", as in RoBERTa).

Whole-word masking for Chinese (Chinese-BERT-wwm). The tokenizer is character-level, so a
word of k characters is k tokens; with whole-word masking either all of them are predicted
or none of them::

    原文      使用语言模型来预测下一个词的概率。
    分词      使用 语言 模型 来 预测 下 一个 词 的 概率 。
    字Mask    使 用 语 言 [MASK] 型 来 [MASK] 测 下 一 个 词 的 概 [MASK] 。
    全词Mask  使 用 语 言 [MASK] [MASK] 来 [MASK] [MASK] 下 一 个 词 的 [MASK] [MASK] 。

Strategies (``MaskingConfig.strategy``); a *unit* is what is chosen as a whole:

``char``   every token is its own unit (original BERT).
``wwm``    units are whole words: the tokens sharing a ``word_id`` (Chinese-BERT-wwm).
``entity`` units are first the entity/phrase spans (tokens sharing an ``entity_id``) in
           random order, then the remaining whole words in random order (ERNIE 1.0).
``ngram``  units are n-grams of whole words, n drawn from ``ngram_probs`` (n = 1, 2, ...;
           MacBERT uses 40/30/20/10 for 1..4-grams), following ALBERT's n-gram code.
           MacBERT replaces with *similar words* from a synonym model; we have none, so the
           chosen n-grams get the usual [MASK] / random / keep treatment.

Budget (Google's ``create_masked_lm_predictions``): ``num_to_predict = min(max_predictions,
max(1, round(n * mask_prob)))`` where ``n`` counts the maskable tokens (everything except
[CLS], [SEP], [PAD], [MASK]; Google also counts [CLS]/[SEP], under half a token more at 15%).
Units are visited in random order; a unit is skipped if adding it would exceed the budget and
the walk stops when the budget is met. A word longer than the whole budget is never masked.

``max_predictions`` is a cap sized for one sequence length. Google sets it by hand next to
``max_seq_length`` ("around max_seq_length * masked_lm_prob": 20 at 128, 80 at 512); a cap
of 20 left at 512 predicts ~4.9% of the tokens instead of 15%. The default, ``auto``, is
``ceil(mask_prob * max_seq_length)`` (20 at 128, 77 at 512: :func:`auto_max_predictions`),
which is never below ``round(n * mask_prob)`` for a sequence that fits in ``max_seq_length``:
``auto`` never caps, so the masking functions treat it as "no cap" and need no length. The
collator (zhbert/train/collator.py) resolves it against its ``max_seq_length`` and warns when an
explicit cap is below that value.

Replacement (``MaskingConfig.replace_unit``): every chosen token is predicted; what the model
*sees* there follows BERT's 80/10/10 rule -- [MASK] 80% of the time, a random token 10%, the
original token 10%. ``token`` (default) draws that decision independently for every token, as
Google's ``create_masked_lm_predictions`` and HFL's Chinese-BERT-wwm do (whole-word masking
changes which tokens are *chosen*, not how each is replaced: Chinese-BERT-wwm issues #4, #33).
A chosen two-character word is then mixed -- e.g. one [MASK] and one kept character -- with
probability 1 - (0.8² + 0.1² + 0.1²) = 34%. ``word`` draws once per unit, so a whole word /
entity / n-gram is all [MASK], all random or all kept (an option, not a published recipe)::

    分词          使用 语言 模型 来 预测
    chosen        语言 预测
    token (默认)  使 用 [MASK] 言 模 型 来 [MASK] [MASK]   (言 kept: its own 10% draw)
    word          使 用 [MASK] [MASK] 模 型 来 [MASK] [MASK]

Speed: :func:`mask_batch` works on a padded (B, T) batch with whole-batch numpy operations;
only the "skip a unit that overflows" tail of the walk and the n-gram walk are Python loops per
row. :func:`mask_sequence` is the same code on a batch of one (per-call numpy overhead
dominates there, so the collator masks whole batches).

Config: every function takes ``cfg``, a ``zhbert.config.MaskingConfig`` or any object with its
fields, that has passed ``zhbert.config.validate_masking`` (``load_config`` and the collator
call it); nothing here checks it again, apart from asserts against programming errors.

Randomness always arrives as an explicit ``numpy.random.Generator``; the same generator state
gives the same mask. The collator (zhbert/train/collator.py) is handed a fresh generator per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from zhbert.config import MASKING_STRATEGIES
from zhbert.errors import ConfigError, DataError

IGNORE_INDEX = -100  # label of positions that are not predicted (HF / torch CrossEntropy default)
AUTO = "auto"  # masking.max_predictions: sized from max_seq_length (auto_max_predictions)


@dataclass(frozen=True, eq=False)
class VocabInfo:
    """The ids masking needs from the vocabulary.

    ``replacement_ids`` are the real tokens that may replace a chosen token in the "random
    token" branch (no specials, no [unused*]).
    """

    vocab_size: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    unk_id: int
    replacement_ids: np.ndarray
    # (vocab_size,) bool: True for ids that are never masked; derived, for one-gather lookups.
    never_mask: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rep = np.asarray(self.replacement_ids, dtype=np.int64).reshape(-1)
        if rep.size == 0:
            raise ConfigError("VocabInfo.replacement_ids is empty: no token can serve as a random replacement")
        if rep.min() < 0 or rep.max() >= self.vocab_size:
            raise ConfigError(f"VocabInfo.replacement_ids must lie in [0, {self.vocab_size})")
        specials = [self.pad_id, self.cls_id, self.sep_id, self.mask_id, self.unk_id]
        for name, i in zip(("pad_id", "cls_id", "sep_id", "mask_id", "unk_id"), specials):
            if not 0 <= i < self.vocab_size:
                raise ConfigError(f"VocabInfo.{name}={i} is outside the vocabulary (size {self.vocab_size})")
        never = np.zeros(self.vocab_size, dtype=bool)
        never[[self.pad_id, self.cls_id, self.sep_id, self.mask_id]] = True
        object.__setattr__(self, "replacement_ids", rep)
        object.__setattr__(self, "never_mask", never)

    @classmethod
    def from_tokenizer(cls, tok) -> "VocabInfo":
        """From a ``zhbert.prep.tokenizer.ChineseTokenizer`` (or anything with the same attributes)."""
        return cls(
            vocab_size=int(tok.vocab_size),
            pad_id=int(tok.pad_id),
            cls_id=int(tok.cls_id),
            sep_id=int(tok.sep_id),
            mask_id=int(tok.mask_id),
            unk_id=int(tok.unk_id),
            replacement_ids=np.asarray(tok.normal_token_ids(), dtype=np.int64),
        )


def mask_sequence(input_ids, word_ids, entity_ids, cfg, vocab: VocabInfo,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mask one unpadded instance; returns ``(masked_input_ids, labels)``, both (T,) int64.

    ``labels`` holds the original id at every chosen position and -100 elsewhere. ``word_ids``
    may be None for ``char``; ``entity_ids`` may be None except for ``entity``.
    """
    ids = np.asarray(input_ids, dtype=np.int64)[None]  # (1, T)
    out, labels = mask_batch(ids, _row(word_ids), _row(entity_ids), cfg, vocab, rng)
    return out[0], labels[0]


def mask_batch(input_ids, word_ids, entity_ids, cfg, vocab: VocabInfo,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mask a padded batch: (B, T) arrays in, ``(masked_input_ids, labels)`` (B, T) int64 out.

    Padding must use ``vocab.pad_id`` in ``input_ids`` (never masked); ``word_ids`` and
    ``entity_ids`` are ignored there. Each row gets its own budget and units, exactly as
    :func:`mask_sequence` would give it; the work is vectorised over the whole batch.
    """
    ids = np.asarray(input_ids, dtype=np.int64)
    if ids.ndim != 2:
        raise ValueError(f"mask_batch expects (B, T) input_ids, got shape {ids.shape}")
    pos, group, n_groups, _ = _choose(ids, word_ids, entity_ids, cfg, vocab, rng)
    flat = ids.reshape(-1)
    out = flat.copy()
    labels = np.full(flat.shape, IGNORE_INDEX, dtype=np.int64)
    labels[pos] = flat[pos]
    # The 80/10/10 decision: one uniform draw per chosen token (replace_unit="token", Google's
    # and HFL's recipe: the characters of a chosen word are treated independently), or one
    # per unit ("word": a whole word / n-gram / entity is all [MASK], all random or all kept).
    if cfg.replace_unit == "word":
        u = rng.random(n_groups)[group]  # (P,)
    else:
        u = rng.random(pos.size)  # (P,)
    # uniform index into replacement_ids (floor(u * K): cheaper than rng.integers for small draws)
    random_ids = vocab.replacement_ids[(rng.random(pos.size) * vocab.replacement_ids.size).astype(np.int64)]
    p_mask, p_rand = cfg.mask_token_prob, cfg.random_token_prob
    # 80% of the time, replace with [MASK]
    to_mask = u < p_mask
    out[pos[to_mask]] = vocab.mask_id
    # 10% of the time, replace with a random real token (each token of a unit gets its own)
    to_rand = (u >= p_mask) & (u < p_mask + p_rand)
    out[pos[to_rand]] = random_ids[to_rand]
    # 10% of the time, keep the original token (it is still predicted: its label is set)
    return out.reshape(ids.shape), labels.reshape(ids.shape)


def choose_units(input_ids, word_ids, entity_ids, cfg, vocab: VocabInfo,
                 rng: np.random.Generator) -> list[np.ndarray]:
    """The units chosen for prediction in one unpadded instance, in the order they were chosen:
    a list of token-position arrays (each one char / whole word / entity / n-gram). For
    inspection and tests; draws the same random numbers as the selection in mask_sequence."""
    ids = np.asarray(input_ids, dtype=np.int64)[None]
    pos, group, _, chosen = _choose(ids, _row(word_ids), _row(entity_ids), cfg, vocab, rng)
    return [pos[group == g] for g in chosen.tolist()]


def num_to_predict(n_maskable, cfg):
    """Google's budget: round(n * mask_prob), at least 1, at most max_predictions; 0 if n == 0.
    Works on an int or an array of per-row counts (round half to even, like Python's round).
    ``max_predictions: auto`` caps nothing (see the module docstring)."""
    n = np.asarray(n_maskable)
    cap = np.inf if cfg.max_predictions == AUTO else int(cfg.max_predictions)
    budget = np.where(n > 0, np.clip(np.rint(n * cfg.mask_prob), 1, cap), 0)
    return budget.astype(np.int64) if budget.ndim else int(budget)


def auto_max_predictions(mask_prob: float, max_seq_length: int) -> int:
    """What ``max_predictions: auto`` stands for: ceil(mask_prob * max_seq_length), 20 at 128
    and 77 at 512 for mask_prob 0.15 (Google's README: "around max_seq_length *
    masked_lm_prob", 20 at 128). Never below the budget of a sequence of max_seq_length tokens."""
    # round first: 0.15 * 100 is 15.000000000000002 in floating point, whose ceil is 16
    return max(1, math.ceil(round(mask_prob * max_seq_length, 9)))


def resolve_max_predictions(cfg, max_seq_length: int) -> int:
    """``cfg.max_predictions`` as a number for sequences of up to ``max_seq_length`` tokens."""
    if cfg.max_predictions == AUTO:
        return auto_max_predictions(cfg.mask_prob, max_seq_length)
    return int(cfg.max_predictions)


# ----------------------------------------------------------------------------- selection
#
# Everything works on the flattened batch: `maskable` lists the flat positions that may be
# predicted, units are runs of them, and units are ordered by row + uniform random priority with
# one argsort, which is a uniformly random order within every row.

def _choose(ids, word_ids, entity_ids, cfg, vocab, rng):
    """Select the predicted tokens of a (B, T) batch.

    Returns ``pos`` (P,) chosen flat positions (ascending), ``group`` (P,) the unit each
    belongs to, ``n_groups`` (units are numbered 0..n_groups-1) and ``chosen`` the unit numbers
    in the order they were chosen (row by row).
    """
    strategy = cfg.strategy
    assert strategy in MASKING_STRATEGIES, f"unvalidated masking config: strategy {strategy!r}"
    B, T = ids.shape
    maskable = np.flatnonzero(~vocab.never_mask[ids.reshape(-1)])  # (E,) flat positions
    row = maskable // T  # (E,)
    budget = num_to_predict(np.bincount(row, minlength=B), cfg)  # (B,)

    n_tok = maskable.size
    start = np.ones(n_tok + 1, dtype=bool)  # (E+1,) True where a new unit starts (+ sentinel)
    key = None
    if strategy != "char":  # char: every token is its own unit
        words = _column(word_ids, ids.shape, "word_ids", strategy)[maskable]
        if strategy == "entity":
            ents = _column(entity_ids, ids.shape, "entity_ids", strategy)[maskable]
            # entity tokens are keyed by their span (as -2 - entity id), the rest by their word
            key = np.where(ents >= 0, -2 - ents, words)
        else:
            key = words
        # a unit is a run of adjacent maskable tokens of one row with the same key;
        # a token without a word (key -1) is a unit of its own
        start[1:n_tok] = ~((maskable[1:] == maskable[:-1] + 1) & (row[1:] == row[:-1])
                           & (key[1:] == key[:-1]) & (key[1:] != -1))
    bounds = np.flatnonzero(start)  # (U+1,) index into maskable of each unit's first token, then E
    ustart = bounds[:-1]  # (U,)
    ulen = bounds[1:] - ustart  # (U,) tokens per unit
    urow = row[ustart]  # (U,) row of each unit (ascending)
    uid = np.cumsum(start[:n_tok]) - 1  # (E,) unit of each maskable token
    n_units = ustart.size

    if strategy == "ngram":
        unit_group, n_groups = _choose_ngrams(maskable, ustart, ulen, urow, budget, cfg, rng)
        chosen = np.arange(n_groups)
    else:
        priority = rng.random(n_units)  # (U,)
        if strategy == "entity":
            priority += key[ustart] > -2  # entity spans in [0, 1) come before words in [1, 2)
        order = np.argsort(urow * 3.0 + priority)  # (U,) row by row, random order within a row
        chosen = order[_greedy_fill(ulen[order], urow[order], budget)]
        unit_group = np.full(n_units, -1, dtype=np.int64)
        unit_group[chosen] = chosen
        n_groups = n_units
    group = unit_group[uid]  # (E,) group of each maskable token, -1 if not chosen
    keep = group >= 0
    return maskable[keep], group[keep], n_groups, chosen


def _greedy_fill(lens: np.ndarray, rows: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """Indices of the units taken when walking each row's units in order: a unit is skipped if
    it would overflow the row's budget, and the walk stops once the budget is met (Google's
    wwm rule). ``lens``/``rows`` (U,) are in walk order, rows ascending; ``budget`` is (B,)."""
    B = budget.size
    first = np.searchsorted(rows, np.arange(B))  # (B,) first unit of each row
    last = np.searchsorted(rows, np.arange(B), side="right")  # (B,) one past its last unit
    csum = np.cumsum(lens)  # (U,)
    before = np.concatenate([[0], csum])[first]  # (B,) tokens of all earlier rows
    # the prefix of each row that fits is taken at once (vectorised)...
    take = csum - before[rows] <= budget[rows]  # (U,)
    n_prefix = np.bincount(rows[take], minlength=B)  # (B,)
    rem = budget - np.bincount(rows[take], weights=lens[take], minlength=B).astype(np.int64)
    # ...then, past the first unit that overflowed, smaller units that still fit
    for b in np.flatnonzero(rem > 0).tolist():
        r, lo = int(rem[b]), int(first[b] + n_prefix[b] + 1)
        for j, n in enumerate(lens[lo:last[b]].tolist(), start=lo):
            if n <= r:
                take[j] = True
                r -= n
                if r == 0:
                    break
    return np.flatnonzero(take)


def _choose_ngrams(maskable, ustart, ulen, urow, budget, cfg, rng):
    """ALBERT-style n-gram selection over whole words (MacBERT's n-gram masking).

    Every word is a candidate start. Starts are visited in random order; for each, n is drawn
    from ``ngram_probs`` restricted to the n-grams that end before the end of the segment (an
    n-gram never spans [SEP]); if the n-gram overflows the budget, shorter n are tried;
    n-grams overlapping an earlier choice are skipped. Returns the n-gram of each word (-1 if
    none) and the number of n-grams.
    """
    n_words = ulen.size
    probs = np.asarray(cfg.ngram_probs, dtype=np.float64)
    cdf = np.cumsum(probs) / probs.sum()  # (N,)
    # the last word of the run of adjacent words (same row and segment) each word belongs to
    first_tok = maskable[ustart]  # (U,) flat position of each word's first token
    end_tok = first_tok + ulen  # (U,) one past its last token (words are contiguous runs)
    contiguous = (end_tok[:-1] == first_tok[1:]) & (urow[:-1] == urow[1:])  # (U-1,)
    breaks = np.append(np.flatnonzero(~contiguous), n_words - 1)
    idx = np.arange(n_words)
    avail = np.minimum(breaks[np.searchsorted(breaks, idx)] - idx + 1, cdf.size)  # (U,) max n
    # n ~ ngram_probs conditioned on n <= avail, by inverse CDF of the truncated distribution
    u = rng.random(n_words) * cdf[np.maximum(avail, 1) - 1]
    ns = np.minimum(np.searchsorted(cdf, u, side="right") + 1, avail).tolist()
    wcs = np.concatenate([[0], np.cumsum(ulen)]).tolist()  # token-count prefix sums over words
    order = np.argsort(urow + rng.random(n_words))  # row by row, random order within a row
    first = np.searchsorted(urow[order], np.arange(budget.size)).tolist() + [n_words]
    order = order.tolist()

    word_group = np.full(n_words, -1, dtype=np.int64)
    covered = bytearray(n_words)
    n_groups = 0
    for b, rem in enumerate(budget.tolist()):
        for s in order[first[b]:first[b + 1]]:
            if rem <= 0:
                break
            if covered[s]:
                continue
            n = ns[s]
            while n > 0 and wcs[s + n] - wcs[s] > rem:  # too long for what is left: try shorter
                n -= 1
            if n == 0 or any(covered[s:s + n]):
                continue
            covered[s:s + n] = b"\x01" * n
            word_group[s:s + n] = n_groups
            n_groups += 1
            rem -= wcs[s + n] - wcs[s]
    return word_group, n_groups


def _row(values):
    return None if values is None else np.asarray(values, dtype=np.int64)[None]


def _column(values, shape, name: str, strategy: str) -> np.ndarray:
    """``values`` as a flat int64 array matching ``input_ids`` of ``shape``."""
    if values is None:
        raise DataError(f"masking strategy {strategy!r} needs the {name!r} column, which this data lacks "
                        "(re-run `zhbert prepare`, or use masking.strategy=char)")
    arr = np.asarray(values, dtype=np.int64)
    if arr.shape != tuple(shape):
        raise DataError(f"{name!r} has shape {arr.shape} but input_ids has shape {tuple(shape)}")
    return arr.reshape(-1)
