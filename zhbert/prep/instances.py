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
"""

from __future__ import annotations

import random
from typing import Protocol, Sequence

PAIR_MODES = ("nsp", "sop", "none")
IGNORE_LABEL = -100


class SentenceLike(Protocol):
    ids: list[int]
    word_ids: list[int]
    entity_ids: list[int]


class _Segment:
    """Token ids with their word/entity ids, offset so that sentences never share an index."""

    __slots__ = ("ids", "words", "ents", "n_words", "n_ents")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.words: list[int] = []
        self.ents: list[int] = []
        self.n_words = 0  # word / entity ids used so far: the next sentence starts after them
        self.n_ents = 0

    def extend(self, s: SentenceLike) -> None:
        # Per sentence, word ids are 0, 1, ... without gaps and entity ids likewise (-1 outside),
        # so offsetting by the counts so far keeps the whole segment gapless and in order.
        if not s.ids:
            return
        w0, e0 = self.n_words, self.n_ents
        self.ids.extend(s.ids)
        # (Shifts by 0 -- the first sentence of a segment -- need no per-token work.)
        self.words.extend(map(w0.__add__, s.word_ids) if w0 else s.word_ids)
        self.n_words = w0 + s.word_ids[-1] + 1  # word ids are non-decreasing: the last is the largest
        top = max(s.entity_ids)
        if top < 0 or e0 == 0:
            self.ents.extend(s.entity_ids)
        else:
            self.ents.extend([e + e0 if e >= 0 else -1 for e in s.entity_ids])
        if top >= 0:
            self.n_ents = e0 + top + 1

    def __len__(self) -> int:
        return len(self.ids)

    def cut(self, front: int, back: int) -> None:
        end = len(self.ids) - back
        self.ids = self.ids[front:end]
        self.words = self.words[front:end]
        self.ents = self.ents[front:end]

    def split(self, at: int) -> "_Segment":
        """Keep tokens [0, at) in self, return the rest as a new segment."""
        rest = _Segment()
        rest.ids, rest.words, rest.ents = self.ids[at:], self.words[at:], self.ents[at:]
        self.cut(0, len(self.ids) - at)
        return rest


def _segment(sentences: Sequence[SentenceLike]) -> _Segment:
    seg = _Segment()
    for s in sentences:
        seg.extend(s)
    return seg


def truncate_seq_pair(a: _Segment, b: _Segment, max_num_tokens: int, rng: random.Random) -> None:
    """Truncate the pair in place to at most ``max_num_tokens`` tokens in total.

    One token at a time from the longer segment (B on ties), from the front or the back with
    equal probability. Only the counts are decided in the loop (same rng draws as Google's
    token-by-token version); the slicing happens once at the end.
    """
    la, lb = len(a), len(b)
    cut = {"a": [0, 0], "b": [0, 0]}  # [front, back]
    while la + lb > max_num_tokens:
        side = "a" if la > lb else "b"
        cut[side][0 if rng.random() < 0.5 else 1] += 1
        if side == "a":
            la -= 1
        else:
            lb -= 1
    a.cut(*cut["a"])
    b.cut(*cut["b"])


def _rebase(vals: list[int], base: int) -> tuple[list[int], int]:
    """Shift a segment's ids (gapless and in order, -1 kept) to start at ``base``.

    Truncation may have removed the first words, and a random B has its own numbering, so
    each segment is shifted to continue where the previous one ended. Returns (ids, next base).
    """
    first = next((v for v in vals if v >= 0), None)
    if first is None:
        return vals, base
    shift = base - first
    if vals[0] >= 0 and min(vals) >= 0:
        # word ids: no -1 inside a segment, and non-decreasing, so the last is the largest
        return (list(map(shift.__add__, vals)) if shift else vals), vals[-1] + shift + 1
    if shift == 0:
        return vals, max(vals) + 1
    out = [v + shift if v >= 0 else -1 for v in vals]
    return out, max(out) + 1


def _instance(first: _Segment, second: _Segment | None, cls_id: int, sep_id: int, label: int) -> dict:
    words, nw = _rebase(first.words, 0)
    ents, ne = _rebase(first.ents, 0)
    ids = [cls_id, *first.ids, sep_id]
    words = [-1, *words, -1]
    ents = [-1, *ents, -1]
    types = [0] * len(ids)
    if second is not None:
        ids += [*second.ids, sep_id]
        words += [*_rebase(second.words, nw)[0], -1]
        ents += [*_rebase(second.ents, ne)[0], -1]
        types += [1] * (len(second) + 1)
    return {
        "input_ids": ids,
        "token_type_ids": types,
        "next_sentence_label": label,
        "word_ids": words,
        "entity_ids": ents,
    }


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
    """Instances from one document; ``all_documents`` is the pool random B segments come from.

    Sentences must be non-empty (callers drop sentences that tokenize to nothing).
    """
    if pair_mode not in PAIR_MODES:
        raise ValueError(f"pair_mode must be one of {PAIR_MODES}, got {pair_mode!r}")
    document = all_documents[document_index]

    # Account for [CLS], [SEP], [SEP] (one [SEP] less without a second segment).
    max_num_tokens = max_seq_length - (2 if pair_mode == "none" else 3)

    # Usually fill the whole sequence; sometimes (short_seq_prob) use a shorter random target
    # to reduce the pre-training / fine-tuning length mismatch. Drawn once per document.
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    if pair_mode == "none":
        return _pack_document(document, target_seq_length, max_num_tokens, cls_id, sep_id)

    instances = []
    current_chunk: list[SentenceLike] = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment.ids)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if pair_mode == "sop":
                instance = _sop_instance(current_chunk, max_num_tokens, rng, cls_id, sep_id)
                if instance is not None:
                    instances.append(instance)
            else:
                # `a_end` is how many chunk sentences go into A.
                a_end = 1
                if len(current_chunk) >= 2:
                    a_end = rng.randint(1, len(current_chunk) - 1)
                tokens_a = _segment(current_chunk[:a_end])

                if len(current_chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    # For a large corpus one draw almost always differs; 10 tries keep a
                    # one-document pool from looping (B then comes from the same document).
                    for _ in range(10):
                        random_document_index = rng.randint(0, len(all_documents) - 1)
                        if random_document_index != document_index:
                            break
                    random_document = all_documents[random_document_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    tokens_b = _Segment()
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    # The chunk's sentences after A were not used: "put them back" so that
                    # the next chunk starts with them and no text is wasted.
                    num_unused_segments = len(current_chunk) - a_end
                    i -= num_unused_segments
                else:
                    is_random_next = False
                    tokens_b = _segment(current_chunk[a_end:])
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                instances.append(_instance(tokens_a, tokens_b, cls_id, sep_id, int(is_random_next)))
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def _sop_instance(chunk, max_num_tokens, rng, cls_id, sep_id) -> dict | None:
    """Sentence-order pair from one chunk: A, B consecutive; swapped with probability 0.5."""
    if len(chunk) >= 2:
        a_end = rng.randint(1, len(chunk) - 1)
        tokens_a, tokens_b = _segment(chunk[:a_end]), _segment(chunk[a_end:])
    else:
        # One sentence (a long one, or the last of a document): the order task still needs
        # two consecutive pieces, so cut inside it rather than borrow from another document.
        tokens_a = _segment(chunk)
        if len(tokens_a) < 2:
            return None
        tokens_b = tokens_a.split(rng.randint(1, len(tokens_a) - 1))
    swapped = rng.random() < 0.5
    if swapped:
        tokens_a, tokens_b = tokens_b, tokens_a
    truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
    return _instance(tokens_a, tokens_b, cls_id, sep_id, int(swapped))


def _pack_document(document, target_seq_length, max_num_tokens, cls_id, sep_id) -> list[dict]:
    """pair_mode none: whole consecutive sentences packed up to the target, one segment each."""
    instances = []
    chunk = _Segment()
    for s in document:
        if len(chunk) and len(chunk) + len(s.ids) > target_seq_length:
            instances.append(_instance(chunk, None, cls_id, sep_id, IGNORE_LABEL))
            chunk = _Segment()
        chunk.extend(s)
        if len(chunk) > max_num_tokens:  # a single sentence longer than the hard limit
            chunk.cut(0, len(chunk) - max_num_tokens)
    if len(chunk):
        instances.append(_instance(chunk, None, cls_id, sep_id, IGNORE_LABEL))
    return instances


def create_instances(
    documents: Sequence[Sequence[SentenceLike]],
    max_seq_length: int,
    short_seq_prob: float,
    pair_mode: str,
    rng: random.Random,
    cls_id: int,
    sep_id: int,
) -> list[dict]:
    """One pass over ``documents`` (each also the random-B pool for the others), in order."""
    out: list[dict] = []
    for k in range(len(documents)):
        out.extend(create_instances_from_document(
            documents, k, max_seq_length, short_seq_prob, pair_mode, rng, cls_id, sep_id))
    return out
