"""Sentence-pair instances (zhbert/prep/instances.py) on hand-built documents with a seeded rng."""

import random
from dataclasses import dataclass

import pytest

from zhbert.prep.instances import create_instances, create_instances_from_document, truncate_seq_pair

CLS, SEP = 101, 102


@dataclass
class S:
    ids: list
    word_ids: list
    entity_ids: list


def sent(ids, words=None, ents=None):
    return S(list(ids), list(words if words is not None else range(len(ids))),
             list(ents if ents is not None else [-1] * len(ids)))


def split_pair(inst):
    """(A, B) token lists from [CLS] A [SEP] B [SEP]."""
    ids = inst["input_ids"]
    assert ids[0] == CLS and ids[-1] == SEP
    k = ids.index(SEP)
    return ids[1:k], ids[k + 1:-1]


def numbered_docs(n_docs, n_sents, rng, lengths=(1, 1)):
    """Token id = 10000*doc + 100*sentence + position: every token says where it came from."""
    docs = []
    for d in range(n_docs):
        doc = []
        for s in range(rng.randint(*n_sents)):
            length = rng.randint(*lengths)
            doc.append(sent([10000 * d + 100 * s + p + 1000_000 for p in range(length)]))
        docs.append(doc)
    return docs


def where(tok):
    t = tok - 1000_000
    return t // 10000, (t % 10000) // 100  # (doc, sentence)


# ------------------------------------------------------------------------------------------
# A case worked out by hand


DOC0 = [
    sent([10, 11, 12], words=[0, 0, 1], ents=[0, 0, -1]),  # a two-token word (an entity) + one
    sent([20, 21, 22], words=[0, 1, 1]),
    sent([30, 31, 32], words=[0, 1, 2]),
    sent([40, 41], words=[0, 0]),
]
DOC1 = [
    sent([50, 51, 52, 53], words=[0, 0, 1, 1], ents=[-1, 0, 0, -1]),
    sent([60, 61], words=[0, 1]),
]


def test_hand_worked_nsp_instance_with_put_back_and_truncation():
    # max_seq_length 10 -> max_num_tokens = target = 7; short_seq_prob 0 (the draw still happens).
    got = create_instances_from_document([DOC0, DOC1], 0, 10, 0.0, "nsp", random.Random(0), CLS, SEP)

    # Replay the draws of random.Random(0) in the order the algorithm makes them.
    r = random.Random(0)
    assert r.random() >= 0.0  # 1. short-target draw: never short -> target 7
    # Chunk: DOC0[0] (3 tokens), [1] (6), [2] (9 >= 7) -> three sentences.
    assert r.randint(1, 2) == 2  # 2. a_end = 2: A = sentences 0, 1 (6 tokens)
    assert r.random() < 0.5  # 3. random next. target_b_length = 7 - 6 = 1
    assert r.randint(0, 1) == 1  # 4. random document 1 (differs from 0: no retry)
    assert r.randint(0, 1) == 1  # 5. random_start = 1: B = DOC1[1] = [60, 61] (2 >= 1, stop)
    #    Sentence 2 of DOC0 was not used: put back (i -= 1), it starts the next chunk.
    assert r.random() >= 0.5  # 6. truncate 6 + 2 = 8 > 7 from the longer side (A), at the back
    #    -> A = [10, 11, 12, 20, 21]
    # Next chunk: DOC0[2] (3), DOC0[3] (5, end of document) -> two sentences.
    assert r.randint(1, 1) == 1  # 7. a_end = 1: A = DOC0[2]
    assert r.random() >= 0.5  # 8. actual next: B = DOC0[3]; 3 + 2 <= 7, no truncation
    first = {
        "input_ids": [CLS, 10, 11, 12, 20, 21, SEP, 60, 61, SEP],
        "token_type_ids": [0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
        "next_sentence_label": 1,
        # words: 10 11 | 12 | 20 | 21 (22 truncated away, 21 stays a word) | 60 | 61
        "word_ids": [-1, 0, 0, 1, 2, 3, -1, 4, 5, -1],
        "entity_ids": [-1, 0, 0, -1, -1, -1, -1, -1, -1, -1],
    }
    second = {
        "input_ids": [CLS, 30, 31, 32, SEP, 40, 41, SEP],
        "token_type_ids": [0, 0, 0, 0, 0, 1, 1, 1],
        "next_sentence_label": 0,
        "word_ids": [-1, 0, 1, 2, -1, 3, 3, -1],
        "entity_ids": [-1] * 8,
    }
    assert got == [first, second]
    # Same seed, same result.
    assert got == create_instances_from_document([DOC0, DOC1], 0, 10, 0.0, "nsp", random.Random(0), CLS, SEP)


def test_entity_ids_renumbered_across_segments():
    # B from DOC1[0] carries entity 0 of its sentence; it becomes entity 1 after A's entity 0.
    insts = create_instances_from_document([DOC0, DOC1], 0, 10, 0.0, "nsp", random.Random(2), CLS, SEP)
    first = insts[0]
    assert first["input_ids"] == [CLS, 10, 11, 12, SEP, 50, 51, 52, 53, SEP]
    assert first["word_ids"] == [-1, 0, 0, 1, -1, 2, 2, 3, 3, -1]
    assert first["entity_ids"] == [-1, 0, 0, -1, -1, -1, 1, 1, -1, -1]


def test_truncate_seq_pair_takes_from_longer_side():
    (fa, ba), (fb, bb) = truncate_seq_pair(10, 3, 8, random.Random(0))
    # Only A (the longer) loses tokens, 5 of them, split between its front and back by coin
    # flips: the same draws as Google's loop over rng.random() < 0.5.
    rng = random.Random(0)
    fronts = sum(rng.random() < 0.5 for _ in range(5))
    assert (fb, bb) == (0, 0) and (fa, ba) == (fronts, 5 - fronts)
    # Ties go to B, then alternate: 4 + 4 -> 3 + 3 takes one from each.
    (fa, ba), (fb, bb) = truncate_seq_pair(4, 4, 6, random.Random(1))
    assert (fa + ba, fb + bb) == (1, 1)
    assert truncate_seq_pair(3, 3, 6, random.Random(1)) == ((0, 0), (0, 0))


# ------------------------------------------------------------------------------------------
# Properties over many random documents


@pytest.mark.parametrize("short_seq_prob", [0.0, 0.3])
def test_put_back_loses_no_sentence(short_seq_prob):
    # One-token sentences: chunks never overshoot, so nothing is truncated and each sentence of
    # a document must appear exactly once, in order, in the document's own segments (A for
    # random-next instances, A + B for actual-next ones).
    rng = random.Random(7)
    docs = numbered_docs(6, (1, 40), rng)
    for d in range(len(docs)):
        insts = create_instances_from_document(docs, d, 16, short_seq_prob, "nsp", rng, CLS, SEP)
        own = []
        for inst in insts:
            a, b = split_pair(inst)
            own += a if inst["next_sentence_label"] == 1 else a + b
        assert own == [s.ids[0] for s in docs[d]]


@pytest.mark.parametrize("mode", ["nsp", "sop", "none"])
def test_lengths_and_layout(mode):
    rng = random.Random(3)
    docs = numbered_docs(8, (1, 12), rng, lengths=(1, 30))
    for max_len in (8, 16, 64):
        insts = create_instances(docs, max_len, 0.2, mode, rng, CLS, SEP)
        assert insts
        for inst in insts:
            ids, types, words, ents = (inst[k] for k in ("input_ids", "token_type_ids", "word_ids", "entity_ids"))
            assert len(ids) <= max_len
            assert len(types) == len(words) == len(ents) == len(ids)
            specials = [i for i, t in enumerate(ids) if t in (CLS, SEP)]
            if mode == "none":
                assert specials == [0, len(ids) - 1]
                assert set(types) == {0}
                assert inst["next_sentence_label"] == -100
            else:
                a, b = split_pair(inst)
                assert a and b
                assert types == [0] * (len(a) + 2) + [1] * (len(b) + 1)
                assert inst["next_sentence_label"] in (0, 1)
            # word ids: -1 exactly on specials, else dense 0, 1, 2, ... non-decreasing
            assert [i for i, w in enumerate(words) if w == -1] == specials
            real = [w for w in words if w >= 0]
            assert real[0] == 0 and all(y - x in (0, 1) for x, y in zip(real, real[1:]))
            # numbered_docs gives every token its own word: one word per token here
            assert real == list(range(len(real)))


def test_nsp_labels_mean_what_they_say():
    rng = random.Random(11)
    docs = numbered_docs(5, (2, 30), rng)  # one-token sentences: no truncation
    insts = create_instances(docs, 12, 0.1, "nsp", rng, CLS, SEP)
    for inst in insts:
        a, b = split_pair(inst)
        (da, sa), (db, sb) = where(a[-1]), where(b[0])
        if inst["next_sentence_label"] == 0:
            assert (db, sb) == (da, sa + 1)  # B's first sentence is the one right after A's last
        else:
            assert db != da  # B from another document
    frac = sum(i["next_sentence_label"] for i in insts) / len(insts)
    assert 0.4 < frac < 0.7


def test_nsp_random_fraction_about_half():
    rng = random.Random(5)
    docs = numbered_docs(200, (5, 20), rng, lengths=(5, 20))
    insts = create_instances(docs, 128, 0.1, "nsp", rng, CLS, SEP)
    frac = sum(i["next_sentence_label"] for i in insts) / len(insts)
    assert len(insts) > 300
    # 0.5 plus the single-sentence chunks, which are always random-next (Google's rule).
    assert 0.45 < frac < 0.6


def test_sop_pairs_are_consecutive_and_swapped_half_the_time():
    rng = random.Random(13)
    docs = numbered_docs(20, (2, 30), rng)
    insts = create_instances(docs, 12, 0.0, "sop", rng, CLS, SEP)
    for inst in insts:
        a, b = split_pair(inst)
        first, second = (a, b) if inst["next_sentence_label"] == 0 else (b, a)
        (d1, s1), (d2, s2) = where(first[-1]), where(second[0])
        assert d1 == d2 and s2 == s1 + 1
    frac = sum(i["next_sentence_label"] for i in insts) / len(insts)
    assert 0.35 < frac < 0.65


def test_sop_single_sentence_is_split_inside():
    doc = [sent(range(1, 9), words=[0, 0, 1, 1, 2, 2, 3, 3])]
    (inst,) = create_instances_from_document([doc], 0, 16, 0.0, "sop", random.Random(0), CLS, SEP)
    a, b = split_pair(inst)
    first, second = (a, b) if inst["next_sentence_label"] == 0 else (b, a)
    assert first + second == list(range(1, 9))
    # A one-token document cannot make a pair and gives nothing.
    assert create_instances_from_document([[sent([5])]], 0, 16, 0.0, "sop", random.Random(0), CLS, SEP) == []


def test_sop_split_word_becomes_two_words():
    doc = [sent(range(1, 5), words=[0, 0, 0, 0])]
    rng = random.Random(0)
    (inst,) = create_instances_from_document([doc], 0, 16, 0.0, "sop", rng, CLS, SEP)
    words = inst["word_ids"]
    k = inst["input_ids"].index(SEP)
    # One word cut in two by the split: the pieces on either side of [SEP] are words 0 and 1.
    assert set(words[1:k]) == {0} and set(words[k + 1:-1]) == {1}


def test_none_packs_whole_sentences_and_truncates_long_ones():
    doc = [sent([1, 2, 3]), sent([4, 5]), sent([6, 7, 8, 9]), sent(range(10, 30)), sent([30])]
    insts = create_instances_from_document([doc], 0, 8, 0.0, "none", random.Random(0), CLS, SEP)
    # target 6: [1..5] (5; +4 would be 9 > 6) | [6..9] (4; +20 > 6) | [10..15] (20 cut to 6) | [30]
    assert [i["input_ids"] for i in insts] == [
        [CLS, 1, 2, 3, 4, 5, SEP],
        [CLS, 6, 7, 8, 9, SEP],
        [CLS, 10, 11, 12, 13, 14, 15, SEP],
        [CLS, 30, SEP],
    ]
    assert all(i["next_sentence_label"] == -100 and set(i["token_type_ids"]) == {0} for i in insts)
    assert insts[0]["word_ids"] == [-1, 0, 1, 2, 3, 4, -1]


def test_bad_pair_mode():
    with pytest.raises(ValueError):
        create_instances_from_document([DOC0], 0, 16, 0.0, "xyz", random.Random(0), CLS, SEP)


# ------------------------------------------------------------------------------------------
# gather against a per-token reference


def _random_sentence(rng, token0):
    """A sentence with random whole words (1-3 tokens) and entity spans (unions of 1-2 whole
    words), numbered per sentence as segment.py makes them."""
    n = rng.randint(1, 12)
    words, w = [], 0
    while len(words) < n:
        words += [w] * rng.randint(1, 3)
        w += 1
    words = words[:n]
    word_ent, e, k = {}, 0, 0
    while k <= words[-1]:
        if rng.random() < 0.4:
            span = rng.randint(1, 2)
            for j in range(k, k + span):
                word_ent[j] = e
            e += 1
            k += span
        else:
            k += 1
    ents = [word_ent.get(x, -1) for x in words]
    return sent(range(token0, token0 + n), words, ents)


def _reference_instance(docs, plan, cls, sep):
    """What an instance must hold, token by token in Python: each document's sentences joined
    with their word / entity ids offset by the sentences before, each segment cut out and
    renumbered to continue the one before (-1 stays -1)."""
    flat = []  # (doc, position in doc, token, word, entity) over the pool
    for d, doc in enumerate(docs):
        nw = ne = 0
        for s in doc:
            for t, w, e in zip(s.ids, s.word_ids, s.entity_ids):
                flat.append((t, w + nw, e + ne if e >= 0 else -1))
            nw += s.word_ids[-1] + 1
            ne += max(max(s.entity_ids) + 1, 0)
    ids, types, words, ents = [cls], [0], [-1], [-1]
    next_w = next_e = 0
    segments = [(plan.a0, plan.a1, 0)] + ([(plan.b0, plan.b1, 1)] if plan.label != -100 else [])
    for a, b, typ in segments:
        part = flat[a:b]
        w0 = part[0][1]
        e_first = next((e for _, _, e in part if e >= 0), None)
        for t, w, e in part:
            ids.append(t)
            types.append(typ)
            words.append(w - w0 + next_w)
            ents.append(-1 if e < 0 else e - e_first + next_e)
        next_w = max(words) + 1
        next_e = max(ents) + 1
        ids.append(sep)
        types.append(typ)
        words.append(-1)
        ents.append(-1)
    return {"input_ids": ids, "token_type_ids": types, "next_sentence_label": plan.label,
            "word_ids": words, "entity_ids": ents}


@pytest.mark.parametrize("mode", ["nsp", "sop", "none"])
def test_gather_equals_a_per_token_reference(mode):
    from zhbert.prep.instances import DocTokens, gather, plan_instances, to_dicts

    rng = random.Random(7)
    docs, token = [], 1000
    for _ in range(40):
        doc = []
        for _ in range(rng.randint(1, 8)):
            doc.append(_random_sentence(rng, token))
            token += 100
        docs.append(doc)
    pool = DocTokens.from_documents(docs)
    for max_len in (8, 24, 64):
        plans = plan_instances(pool.offsets, max_len, 0.3, mode, random.Random(max_len))
        assert len(plans) > 20
        got = to_dicts(gather(pool, plans, CLS, SEP))
        assert got == [_reference_instance(docs, p, CLS, SEP) for p in plans]
