"""Stage 5: sentence-pair training instances, after google-research/bert create_pretraining_data.py.

Input: documents as lists of *aligned sentences* (anything with ``ids``, ``word_ids`` and
``entity_ids``, e.g. ``zhbert.prep.segment.AlignedSentence``): the token ids of one real sentence
plus, per token, the jieba word it belongs to and the entity/phrase span (-1 outside). Output:
one dict per instance with the columns of the public instance format (``zhbert.prep.format``)::

    input_ids            [CLS] A [SEP] B [SEP]            ([CLS] X [SEP] for pair_mode none)
    token_type_ids       0 ... 0 for [CLS] A [SEP], 1 ... 1 for B [SEP]
    next_sentence_label  nsp: 0 = B follows A, 1 = B random; sop: 0 in order, 1 swapped; none: -100
    word_ids             whole-word index per token, 0, 1, 2, ... across the instance; -1 on [CLS]/[SEP]
    entity_ids           entity/phrase index per token, 0, 1, ... across the instance; -1 outside

How pairs are cut (the reasoning is Google's; the code follows theirs step by step):

* **Real sentence boundaries.** We accumulate whole sentences into a chunk until it reaches the
  target length, then cut the chunk at a random sentence boundary into A and B. Segments are
  therefore made of complete sentences ("sentence" in the NSP sense means an arbitrary span of
  contiguous text, not one linguistic sentence), which is what the next-sentence task is about:
  whether B continues A. Cutting at arbitrary token positions would make the task trivial (a
  word or sentence cut in half across [SEP]) and teach the model nothing useful.
* **Mostly full, sometimes short.** We pad to ``max_seq_length`` anyway, so short sequences are
  mostly wasted computation and the target is normally ``max_seq_length - 3`` (room for
  [CLS], [SEP], [SEP]). But with probability ``short_seq_prob`` (10% by default) a document gets
  a random shorter target in [2, max] so that the model also sees short inputs, which lowers
  the mismatch with fine-tuning on short sentences. As in Google's code the target is drawn once
  per document and is only a rough target; ``max_seq_length`` is the hard limit.
* **Random next, with put-back.** Half of the time (always when the chunk is one sentence) B is
  taken from a random *other* document (10 tries to draw a different one), starting at a random
  sentence, filling the rest of the target. The part of the chunk after A was then not used, so
  it is "put back": the sentence index steps back by the number of unused sentences and they
  start the next chunk. Without this, every random-next instance would throw away text.
* **Truncation.** A chunk may overshoot the target (its last sentence is taken whole), and a
  random B is filled up to the target. ``truncate_seq_pair`` removes one token at a time from
  the longer segment, from the front or the back at random (so the model does not learn that
  truncated text always ends abruptly), until both fit in ``max_seq_length - 3`` tokens.

Pair modes: ``nsp`` is the above. ``sop`` (ALBERT's sentence-order prediction) always takes A
and B consecutively from the same chunk and swaps them half of the time (label 1); a chunk of a
single sentence is split inside that sentence at a random token instead of borrowing from
another document, so B always comes from the same text. ``none`` (RoBERTa-style) packs whole
consecutive sentences of one document into a single segment ``[CLS] X [SEP]`` of up to
``max_seq_length - 2`` tokens; a sentence longer than that is truncated (its tail dropped).

Word and entity ids travel with their tokens: each sentence's ids (0, 1, ... without gaps,
as ``zhbert.prep.segment`` makes them) are offset by the words/entities before it, truncation
removes them with the tokens (a word cut in half by truncation stays a word), and each
segment is shifted to continue the numbering of the one before, so ``word_ids`` reads
0, 1, 2, ... across the instance and [CLS]/[SEP] get -1. A word split between A and B (sop,
one long sentence) counts as two words, one on each side.

All randomness comes from the explicit ``rng`` (a ``random.Random``), consumed in the same
order as Google's code, so an instance set is reproducible from (documents, seed).

How it is computed: every segment above is a run of whole consecutive sentences of one
document, later trimmed at its two ends, so it is a *token range* of that document. The
documents of a pool are laid end to end in one array of tokens (``DocTokens``), the
algorithm runs on sentence offsets alone and yields one ``Plan`` per instance -- the token
ranges of A and B and the label, no token copied -- and ``gather`` builds all instances'
columns in a few numpy operations: one index array into the pool, with [CLS]/[SEP] as two
extra entries at its end, and per segment one shift that renumbers its word and entity ids
(numbered across the whole document in ``DocTokens``) to continue where the previous
segment stopped. Per-token Python work was ~25% of ``zhbert prepare``; this is ~5x faster
and gives the same instances (tests/test_instances.py works cases by hand).
"""

from __future__ import annotations

import random
from bisect import bisect_left
from dataclasses import dataclass
from itertools import chain
from typing import NamedTuple, Protocol, Sequence

import numpy as np

PAIR_MODES = ("nsp", "sop", "none")
IGNORE_LABEL = -100


class SentenceLike(Protocol):
    ids: list[int]
    word_ids: list[int]
    entity_ids: list[int]


class Plan(NamedTuple):
    """One instance as token ranges of a ``DocTokens`` pool: A = [a0, a1), B = [b0, b1)
    (empty, b0 == b1, when ``label`` is IGNORE_LABEL: pair mode none)."""

    a0: int
    a1: int
    b0: int
    b1: int
    label: int


@dataclass
class DocTokens:
    """The documents of a pool laid end to end (T = tokens of all documents).

    ids: (T,) token ids.
    words: (T,) word ids numbered across each document: sentence k's word ids are offset by
        the words of sentences 0..k-1 of its document, so any run of sentences (and any
        token range of one document) has gapless, non-decreasing word ids.
    ents: (T,) entity/phrase ids numbered the same way, -1 outside any span.
    offsets: per document, the positions in T where its sentences start, plus its end
        (len = sentences + 1): what the pairing algorithm works on.
    """

    ids: np.ndarray
    words: np.ndarray
    ents: np.ndarray
    offsets: list[list[int]]

    @classmethod
    def from_documents(cls, documents: Sequence[Sequence[SentenceLike]]) -> "DocTokens":
        ids, words, ents, starts = flatten_sentences([s for doc in documents for s in doc])
        doc_sizes = np.fromiter(map(len, documents), dtype=np.int64, count=len(documents))
        return cls.from_arrays(ids, words, ents, starts, doc_sizes)

    @classmethod
    def from_arrays(cls, ids, words, ents, starts, doc_sizes) -> "DocTokens":
        """From sentences end to end (``zhbert.prep.segment.Segmented``'s arrays: ids, word
        and entity ids numbered per sentence, (n + 1,) sentence starts), grouped into
        documents of ``doc_sizes`` consecutive sentences."""
        lens = starts[1:] - starts[:-1]
        n = len(lens)
        # Words / entities each sentence uses: last word id + 1 (word ids end at the largest),
        # largest entity id + 1 (0 for a sentence without entity or without token).
        full = lens > 0
        n_words = np.zeros(n, dtype=np.int64)
        n_ents = np.zeros(n, dtype=np.int64)
        if full.any():
            n_words[full] = words[starts[1:][full] - 1] + 1
            n_ents[full] = np.maximum(np.maximum.reduceat(ents, starts[:-1][full]) + 1, 0)
        # Offsets: the words of the sentences before, within the same document.
        doc_sizes = np.asarray(doc_sizes, dtype=np.int64)
        doc_first = np.zeros(len(doc_sizes) + 1, dtype=np.int64)
        np.cumsum(doc_sizes, out=doc_first[1:])
        some = doc_sizes > 0

        def within_doc(counts):
            before = np.cumsum(counts) - counts  # over all sentences
            return before - np.repeat(before[doc_first[:-1][some]], doc_sizes[some])

        words = words + np.repeat(within_doc(n_words), lens)
        ents = np.where(ents >= 0, ents + np.repeat(within_doc(n_ents), lens), -1)
        bounds = starts.tolist()
        first = doc_first.tolist()
        offsets = [bounds[first[d]:first[d + 1] + 1] for d in range(len(doc_sizes))]
        return cls(ids, words, ents, offsets)


def flatten_sentences(sents: Sequence[SentenceLike]):
    """Sentences end to end: (ids, word_ids, entity_ids) (T,) int64 and starts (n + 1,)."""
    lens = np.fromiter((len(s.ids) for s in sents), dtype=np.int64, count=len(sents))
    starts = np.zeros(len(sents) + 1, dtype=np.int64)
    np.cumsum(lens, out=starts[1:])

    def flat(field):
        return np.fromiter(chain.from_iterable(getattr(s, field) for s in sents), dtype=np.int64,
                           count=int(starts[-1]))

    return flat("ids"), flat("word_ids"), flat("entity_ids"), starts


def truncate_seq_pair(len_a: int, len_b: int, max_num_tokens: int,
                      rng: random.Random) -> tuple[tuple[int, int], tuple[int, int]]:
    """How many tokens to cut from the (front, back) of A and of B so that the pair has at
    most ``max_num_tokens`` tokens.

    One token at a time from the longer segment (B on ties), from the front or the back with
    equal probability: the same rng draws as Google's token-by-token version.
    """
    cut = [[0, 0], [0, 0]]  # A, B: [front, back]
    while len_a + len_b > max_num_tokens:
        side = 0 if len_a > len_b else 1
        cut[side][0 if rng.random() < 0.5 else 1] += 1
        if side == 0:
            len_a -= 1
        else:
            len_b -= 1
    return (cut[0][0], cut[0][1]), (cut[1][0], cut[1][1])


def _pair(a0, a1, b0, b1, label, max_num_tokens, rng) -> Plan:
    (fa, ba), (fb, bb) = truncate_seq_pair(a1 - a0, b1 - b0, max_num_tokens, rng)
    return Plan(a0 + fa, a1 - ba, b0 + fb, b1 - bb, label)


def plan_document(offsets: Sequence[Sequence[int]], document_index: int, max_seq_length: int,
                  short_seq_prob: float, pair_mode: str, rng: random.Random) -> list[Plan]:
    """The instances of one document as ``Plan`` s; ``offsets`` (``DocTokens.offsets``) are
    the documents of the pool random B segments come from."""
    if pair_mode not in PAIR_MODES:
        raise ValueError(f"pair_mode must be one of {PAIR_MODES}, got {pair_mode!r}")
    off = offsets[document_index]
    n = len(off) - 1  # sentences

    # Account for [CLS], [SEP], [SEP] (one [SEP] less without a second segment).
    max_num_tokens = max_seq_length - (2 if pair_mode == "none" else 3)

    # Usually fill the whole sequence; sometimes (short_seq_prob) use a shorter random target
    # to reduce the pre-training / fine-tuning length mismatch. Drawn once per document.
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    if pair_mode == "none":
        return _pack_document(off, target_seq_length, max_num_tokens)

    plans = []
    start = 0  # the current chunk is sentences [start, i]
    i = 0
    while i < n:
        if i == n - 1 or off[i + 1] - off[start] >= target_seq_length:
            chunk = i + 1 - start
            if pair_mode == "sop":
                plan = _sop_plan(off, start, i + 1, max_num_tokens, rng)
                if plan is not None:
                    plans.append(plan)
            else:
                # `a_end` is how many chunk sentences go into A.
                a_end = 1
                if chunk >= 2:
                    a_end = rng.randint(1, chunk - 1)
                a0, a1 = off[start], off[start + a_end]
                if chunk == 1 or rng.random() < 0.5:
                    target_b_length = target_seq_length - (a1 - a0)
                    # For a large corpus one draw almost always differs; 10 tries keep a
                    # one-document pool from looping (B then comes from the same document).
                    for _ in range(10):
                        random_document_index = rng.randint(0, len(offsets) - 1)
                        if random_document_index != document_index:
                            break
                    r_off = offsets[random_document_index]
                    random_start = rng.randint(0, len(r_off) - 2)
                    # B: whole sentences from random_start until it reaches the target (at
                    # least one sentence), or the end of that document.
                    b0 = r_off[random_start]
                    b1 = r_off[min(bisect_left(r_off, b0 + target_b_length, random_start + 1), len(r_off) - 1)]
                    # The chunk's sentences after A were not used: "put them back" so that
                    # the next chunk starts with them and no text is wasted.
                    i -= chunk - a_end
                    plans.append(_pair(a0, a1, b0, b1, 1, max_num_tokens, rng))
                else:
                    plans.append(_pair(a0, a1, a1, off[i + 1], 0, max_num_tokens, rng))
            start = i + 1
        i += 1
    return plans


def _sop_plan(off, start, end, max_num_tokens, rng) -> Plan | None:
    """Sentence-order pair from the chunk of sentences [start, end): A, B consecutive;
    swapped with probability 0.5."""
    if end - start >= 2:
        a_end = start + rng.randint(1, end - start - 1)
        a0, a1, b0, b1 = off[start], off[a_end], off[a_end], off[end]
    else:
        # One sentence (a long one, or the last of a document): the order task still needs
        # two consecutive pieces, so cut inside it rather than borrow from another document.
        a0, b1 = off[start], off[end]
        if b1 - a0 < 2:
            return None
        a1 = b0 = a0 + rng.randint(1, b1 - a0 - 1)
    swapped = rng.random() < 0.5
    if swapped:
        a0, a1, b0, b1 = b0, b1, a0, a1
    return _pair(a0, a1, b0, b1, int(swapped), max_num_tokens, rng)


def _pack_document(off, target_seq_length, max_num_tokens) -> list[Plan]:
    """pair_mode none: whole consecutive sentences packed up to the target, one segment each."""
    plans = []
    c0 = c1 = off[0]  # the chunk's token range
    for s0, s1 in zip(off, off[1:]):
        if s1 == s0:
            continue
        if c1 > c0 and (c1 - c0) + (s1 - s0) > target_seq_length:
            plans.append(Plan(c0, c1, c1, c1, IGNORE_LABEL))
            c0 = s0
        c1 = min(s1, c0 + max_num_tokens)  # a single sentence longer than the hard limit: its tail dropped
    if c1 > c0:
        plans.append(Plan(c0, c1, c1, c1, IGNORE_LABEL))
    return plans


def plan_instances(offsets: Sequence[Sequence[int]], max_seq_length: int, short_seq_prob: float, pair_mode: str,
                   rng: random.Random) -> list[Plan]:
    """One pass over the documents of the pool (each also the random-B pool for the others)."""
    out: list[Plan] = []
    for k in range(len(offsets)):
        out.extend(plan_document(offsets, k, max_seq_length, short_seq_prob, pair_mode, rng))
    return out


def _ragged_arange(lengths):
    """[0, 1, .., l0-1, 0, 1, .., l1-1, ...] for an array of lengths."""
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1]) if len(ends) else 0, dtype=np.int64) - np.repeat(ends - lengths, lengths)


def _first_last(positions, a, b):
    """For ranges [a, b): the first and last entry of the sorted ``positions`` inside each,
    and whether there is one."""
    i = np.searchsorted(positions, a, side="left")
    j = np.searchsorted(positions, b, side="left") - 1
    has = j >= i
    top = max(len(positions) - 1, 0)
    return np.minimum(i, top), np.clip(j, 0, top), has


def gather(tokens: DocTokens, plans: Sequence[Plan], cls_id: int, sep_id: int) -> dict:
    """The columns of ``plans``' instances (N instances, L tokens in all).

    Returns {"input_ids", "token_type_ids", "word_ids", "entity_ids": (values (L,),
    offsets (N + 1,)), "next_sentence_label": (N,)}, int64. Each instance is
    ``[CLS] A [SEP] B [SEP]`` (``[CLS] A [SEP]`` without B): 5 pieces gathered from the pool
    with [CLS]/[SEP] appended at its end, word/entity ids shifted per piece so that A starts
    at 0 and B continues after A (the pool numbers them across each document).
    """
    n = len(plans)
    p = np.array(plans, dtype=np.int64).reshape(n, 5)
    a0, a1, b0, b1, label = p.T
    T = len(tokens.ids)
    pair = label != IGNORE_LABEL
    na, nb = a1 - a0, np.where(pair, b1 - b0, 0)
    one, cls_pos, sep_pos = np.ones(n, dtype=np.int64), np.full(n, T), np.full(n, T + 1)
    starts = np.stack([cls_pos, a0, sep_pos, b0, sep_pos], axis=1)
    lens = np.stack([one, na, one, nb, pair.astype(np.int64)], axis=1)
    idx = np.repeat(starts.ravel(), lens.ravel()) + _ragged_arange(lens.ravel())

    # Words: A from 0 (word ids hold no -1 inside a document), B right after A's last word.
    words = np.concatenate([tokens.words, [-1, -1]])
    w_a = np.where(na > 0, words[np.minimum(a0, T + 1)], 0)
    nw_a = np.where(na > 0, words[np.maximum(a1 - 1, 0)] - w_a + 1, 0)
    w_b = words[np.minimum(b0, T + 1)]
    # Entities: the same with the first / last entity inside each segment, if any.
    ents = np.concatenate([tokens.ents, [-1, -1]])
    pos = np.flatnonzero(tokens.ents >= 0)
    vals = tokens.ents[pos] if len(pos) else np.zeros(1, dtype=np.int64)
    fa, la, has_a = _first_last(pos, a0, a1)
    fb, _, _ = _first_last(pos, b0, b1)
    ne_a = np.where(has_a, vals[la] - vals[fa] + 1, 0)
    zero = np.zeros(n, dtype=np.int64)
    word_shift = np.stack([zero, -w_a, zero, nw_a - w_b, zero], axis=1)
    ent_shift = np.stack([zero, -vals[fa], zero, ne_a - vals[fb], zero], axis=1)

    def shifted(values, shift):
        v = values[idx]
        return np.where(v >= 0, v + np.repeat(shift.ravel(), lens.ravel()), -1)

    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens.sum(axis=1), out=offsets[1:])
    types = np.repeat(np.tile(np.array([0, 0, 0, 1, 1], dtype=np.int64), n), lens.ravel())
    return {
        "input_ids": (np.concatenate([tokens.ids, [cls_id, sep_id]])[idx], offsets),
        "token_type_ids": (types, offsets),
        "next_sentence_label": label.copy(),
        "word_ids": (shifted(words, word_shift), offsets),
        "entity_ids": (shifted(ents, ent_shift), offsets),
    }


def to_dicts(columns: dict) -> list[dict]:
    """``gather``'s columns as one dict of Python lists per instance."""
    labels = columns["next_sentence_label"].tolist()
    per_token = {k: (columns[k][0].tolist(), columns[k][1].tolist())
                 for k in ("input_ids", "token_type_ids", "word_ids", "entity_ids")}
    out = []
    for i, label in enumerate(labels):
        inst = {}
        for k in ("input_ids", "token_type_ids"):
            v, o = per_token[k]
            inst[k] = v[o[i]:o[i + 1]]
        inst["next_sentence_label"] = label
        for k in ("word_ids", "entity_ids"):
            v, o = per_token[k]
            inst[k] = v[o[i]:o[i + 1]]
        out.append(inst)
    return out


def create_instances_from_document(
    all_documents: Sequence[Sequence[SentenceLike]],
    document_index: int,
    max_seq_length: int,
    short_seq_prob: float,
    pair_mode: str,
    rng: random.Random,
    cls_id: int,
    sep_id: int,
) -> list[dict]:
    """Instances from one document (dicts of lists); ``all_documents`` is the pool random B
    segments come from."""
    tokens = DocTokens.from_documents(all_documents)
    plans = plan_document(tokens.offsets, document_index, max_seq_length, short_seq_prob, pair_mode, rng)
    return to_dicts(gather(tokens, plans, cls_id, sep_id))


def create_instances(
    documents: Sequence[Sequence[SentenceLike]],
    max_seq_length: int,
    short_seq_prob: float,
    pair_mode: str,
    rng: random.Random,
    cls_id: int,
    sep_id: int,
) -> list[dict]:
    """One pass over ``documents`` (each also the random-B pool for the others), in order,
    as dicts of lists (``zhbert prepare`` uses ``plan_instances`` + ``gather`` directly)."""
    if pair_mode not in PAIR_MODES:
        raise ValueError(f"pair_mode must be one of {PAIR_MODES}, got {pair_mode!r}")
    tokens = DocTokens.from_documents(documents)
    plans = plan_instances(tokens.offsets, max_seq_length, short_seq_prob, pair_mode, rng)
    return to_dicts(gather(tokens, plans, cls_id, sep_id))
