"""Masking strategies and the collator, on hand-built vocabularies (no tokenizer needed).

Exact tests pick probabilities / budgets that make the result predictable by hand;
statistical tests check the rates over a few thousand synthetic sequences.
"""

import subprocess
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from _pretrain_fixtures import REPO, SAMPLE, cpu_env
from zhbert.train.collator import PretrainingCollator, batch_rng
from zhbert.config import MaskingConfig, load_config
from zhbert.errors import ConfigError, DataError
from zhbert.train.masking import (VocabInfo, auto_max_predictions, choose_units, mask_batch, mask_sequence,
                            num_to_predict)

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4  # 5..9 are [unused*]
SPECIAL = (PAD, CLS, SEP, MASK)


def make_vocab(size=1010):
    return VocabInfo(vocab_size=size, pad_id=PAD, cls_id=CLS, sep_id=SEP, mask_id=MASK, unk_id=UNK,
                     replacement_ids=np.arange(10, size))


VOCAB = make_vocab()


@dataclass
class Cfg:  # same fields as zhbert.config.MaskingConfig
    strategy: str = "wwm"
    mask_prob: float = 0.15
    max_predictions: int = 20
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    replace_unit: str = "word"
    ngram_probs: list = field(default_factory=lambda: [0.4, 0.3, 0.2, 0.1])


def instance(word_lens, entities=(), second=None, start_id=10):
    """[CLS] words [SEP] (second words [SEP]); chars get ids start_id, start_id+1, ...
    ``entities``: list of (first_word, n_words) spans over the global word numbering."""
    ids, wids = [CLS], [-1]
    w, nxt = 0, start_id
    for seg in ([word_lens] if second is None else [word_lens, second]):
        for n in seg:
            ids += list(range(nxt, nxt + n))
            wids += [w] * n
            nxt += n
            w += 1
        ids.append(SEP)
        wids.append(-1)
    wids = np.array(wids)
    ents = np.full(len(ids), -1)
    for k, (first, n) in enumerate(entities):
        ents[(wids >= first) & (wids < first + n)] = k
    return np.array(ids), wids, ents


# 使用 语言 模型 来 预测 下 一个 词 的 概率 。 -> 17 char tokens in 11 words
SENT_LENS = [2, 2, 2, 1, 2, 1, 2, 1, 1, 2, 1]


def words_of(wids):
    return {w: np.flatnonzero(wids == w) for w in np.unique(wids) if w >= 0}


# ----------------------------------------------------------------------------- exact

@pytest.mark.parametrize("strategy", ["char", "wwm", "entity", "ngram"])
def test_full_budget_masks_every_real_token(strategy):
    ids, wids, ents = instance(SENT_LENS, entities=[(1, 2)])
    cfg = Cfg(strategy=strategy, mask_prob=0.99, max_predictions=100, mask_token_prob=1.0, random_token_prob=0.0)
    out, labels = mask_sequence(ids, wids, ents, cfg, VOCAB, np.random.default_rng(0))
    assert out.tolist() == [CLS] + [MASK] * 17 + [SEP]
    assert labels.tolist() == [-100] + ids[1:-1].tolist() + [-100]


def test_budget_rule_hand_worked():
    # 17 tokens * 0.15 = 2.55 -> 3 predictions; words 2,2,2,2,1 tokens and budget 3: whatever the
    # order, a 2-token word and the 1-token word are taken (a second 2-token word never fits).
    assert num_to_predict(17, Cfg()) == 3
    assert num_to_predict(0, Cfg()) == 0 and num_to_predict(2, Cfg()) == 1
    assert num_to_predict(1000, Cfg()) == 20
    ids, wids, ents = instance([2, 2, 2, 2, 1])
    cfg = Cfg(mask_prob=0.34, mask_token_prob=1.0, random_token_prob=0.0)  # 9 * 0.34 = 3.06 -> 3
    for seed in range(50):
        out, labels = mask_sequence(ids, wids, ents, cfg, VOCAB, np.random.default_rng(seed))
        chosen = np.flatnonzero(labels != -100)
        assert len(chosen) == 3 and chosen[-1] == 9  # the 1-token word is always predicted
        assert chosen[1] == chosen[0] + 1 and wids[chosen[0]] == wids[chosen[1]]
        assert (out[chosen] == MASK).all()


def test_entity_span_chosen_first_exactly():
    # 语言模型 (words 1, 2) is an entity of 4 tokens; budget round(17 * 0.25) = 4 = the entity
    ids, wids, ents = instance(SENT_LENS, entities=[(1, 2)])
    cfg = Cfg(strategy="entity", mask_prob=0.25, mask_token_prob=1.0, random_token_prob=0.0)
    for seed in range(20):
        out, labels = mask_sequence(ids, wids, ents, cfg, VOCAB, np.random.default_rng(seed))
        assert out.tolist() == [CLS, 10, 11, MASK, MASK, MASK, MASK] + list(range(16, 27)) + [SEP]
        assert np.flatnonzero(labels != -100).tolist() == [3, 4, 5, 6]


def test_keep_and_random_branches_exact():
    ids, wids, ents = instance(SENT_LENS)
    keep = Cfg(strategy="char", mask_token_prob=0.0, random_token_prob=0.0)
    out, labels = mask_sequence(ids, wids, ents, keep, VOCAB, np.random.default_rng(1))
    assert (out == ids).all() and (labels != -100).sum() == 3
    assert (labels[labels != -100] == ids[labels != -100]).all()
    rand = Cfg(strategy="wwm", mask_token_prob=0.0, random_token_prob=1.0, mask_prob=0.5)
    # replacements 27..29 are disjoint from the sentence's ids 10..26: every chosen token changes
    disjoint = VocabInfo(vocab_size=30, pad_id=PAD, cls_id=CLS, sep_id=SEP, mask_id=MASK, unk_id=UNK,
                         replacement_ids=np.array([27, 28, 29]))
    out, labels = mask_sequence(ids, wids, ents, rand, disjoint, np.random.default_rng(2))
    chosen = labels != -100
    assert chosen.sum() == 8  # round(17 * 0.5) = 8 (half to even), reachable with 1-token words
    assert np.isin(out[chosen], [27, 28, 29]).all()
    assert (out[~chosen] == ids[~chosen]).all()


def test_ngram_units_are_contiguous_within_a_segment():
    ids, wids, ents = instance([1] * 10, second=[1] * 10)  # 20 one-char words, [SEP] at 11
    cfg = Cfg(strategy="ngram", mask_prob=0.4, ngram_probs=[0, 0, 0, 1.0])  # budget 8: always 4-grams
    sep = 11
    for seed in range(30):
        units = choose_units(ids, wids, ents, cfg, VOCAB, np.random.default_rng(seed))
        taken = np.concatenate(units)
        assert len(taken) == 8 and len(set(taken.tolist())) == 8
        rem = 8
        for u in units:
            assert (np.diff(u) == 1).all() and ((u < sep).all() or (u > sep).all())
            # shorter than 4 only at a segment end, or shortened to exactly what is left of the budget
            assert len(u) == 4 or u[-1] in (10, 21) or len(u) == rem
            rem -= len(u)


def test_padding_does_not_change_the_mask():
    ids, wids, ents = instance([1, 2, 3, 1, 2, 2, 1, 4, 1], second=[2, 2, 1, 3])
    for strategy in ["char", "wwm", "entity", "ngram"]:
        cfg = Cfg(strategy=strategy, mask_prob=0.3)
        a = mask_sequence(ids, wids, ents, cfg, VOCAB, np.random.default_rng(7))
        pad = 13
        b = mask_batch(np.pad(ids, (0, pad), constant_values=PAD)[None], np.pad(wids, (0, pad), constant_values=-1)[None],
                       np.pad(ents, (0, pad), constant_values=-1)[None], cfg, VOCAB, np.random.default_rng(7))
        assert (b[0][0, :len(ids)] == a[0]).all() and (b[1][0, :len(ids)] == a[1]).all()
        assert (b[1][0, len(ids):] == -100).all() and (b[0][0, len(ids):] == PAD).all()


def test_missing_word_ids_is_a_data_error():
    ids, _, _ = instance(SENT_LENS)
    with pytest.raises(DataError, match="word_ids"):
        mask_sequence(ids, None, None, Cfg(strategy="wwm"), VOCAB, np.random.default_rng(0))
    with pytest.raises(DataError, match="entity_ids"):
        mask_sequence(ids, np.zeros(len(ids)), None, Cfg(strategy="entity"), VOCAB, np.random.default_rng(0))
    out, labels = mask_sequence(ids, None, None, Cfg(strategy="char"), VOCAB, np.random.default_rng(0))
    assert (labels != -100).sum() == 3


def test_vocab_info_from_tokenizer_duck_typed():
    class Tok:
        vocab_size, pad_id, cls_id, sep_id, mask_id, unk_id = 30, 0, 2, 3, 4, 1

        def normal_token_ids(self):
            return np.arange(10, 30)

    v = VocabInfo.from_tokenizer(Tok())
    assert v.mask_id == 4 and v.replacement_ids.tolist() == list(range(10, 30))
    assert v.never_mask[[0, 2, 3, 4]].all() and not v.never_mask[1]


# ----------------------------------------------------------------------------- statistical

def random_corpus(n, T=128, seed=0):
    """n pair instances of exactly T tokens: random word lengths 1..4, ~10% of words in
    entity spans of 1..3 words. Returns (n, T) ids, word_ids, entity_ids."""
    rng = np.random.default_rng(seed)
    I = np.empty((n, T), dtype=np.int64)
    W = np.empty_like(I)
    E = np.empty_like(I)
    for r in range(n):
        cut = int(rng.integers(20, T - 20))
        lens_a, lens_b = [], []
        for lens, total in ((lens_a, cut - 2), (lens_b, T - cut - 1)):
            while sum(lens) < total:
                lens.append(int(min(rng.choice([1, 1, 2, 2, 2, 3, 4]), total - sum(lens))))
        n_words = len(lens_a) + len(lens_b)
        spans, w = [], 0
        while w < n_words:
            if rng.random() < 0.05:
                k = int(rng.integers(1, 4))
                spans.append((w, min(k, n_words - w)))
                w += k
            else:
                w += 1
        ids, wids, ents = instance(lens_a, spans, second=lens_b)
        I[r] = rng.integers(10, VOCAB.vocab_size, size=T)
        I[r][ids < 10] = ids[ids < 10]
        W[r], E[r] = wids, ents
    return I, W, E


CORPUS = random_corpus(2000)


def run(cfg, seed=0, corpus=CORPUS):
    I, W, E = corpus
    out, labels = mask_batch(I, W, E, cfg, VOCAB, np.random.default_rng(seed))
    return I, W, E, out, labels


@pytest.mark.parametrize("strategy", ["char", "wwm", "entity", "ngram"])
@pytest.mark.parametrize("replace_unit", ["word", "token"])
def test_rates_and_invariants(strategy, replace_unit):
    cfg = Cfg(strategy=strategy, replace_unit=replace_unit, max_predictions=100)
    I, W, E, out, labels = run(cfg)
    chosen = labels != -100
    maskable = ~np.isin(I, SPECIAL)
    budget = num_to_predict(maskable.sum(1), cfg)
    n_pred = chosen.sum(1)
    # budget: never exceeded; char meets it exactly, whole units almost always get there
    assert (n_pred <= budget).all()
    if strategy == "char":
        assert (n_pred == budget).all()
    assert chosen.sum() / maskable.sum() == pytest.approx(0.15, abs=0.01)
    # specials are never predicted nor changed; labels are the original ids
    assert not chosen[~maskable].any() and (out[~maskable] == I[~maskable]).all()
    assert (labels[chosen] == I[chosen]).all() and (out[~chosen] == I[~chosen]).all()
    # 80 / 10 / 10 (a random replacement equals the original with p = 1/1000)
    is_mask = out[chosen] == MASK
    is_same = out[chosen] == I[chosen]
    assert is_mask.mean() == pytest.approx(0.8, abs=0.02)
    assert is_same.mean() == pytest.approx(0.1, abs=0.015)
    assert (~is_mask & ~is_same).mean() == pytest.approx(0.1, abs=0.015)
    assert np.isin(out[chosen & (out != MASK)], VOCAB.replacement_ids).all()
    # whole words: every word is predicted entirely or not at all
    if strategy != "char":
        mixed_pred = mixed_branch = 0
        for r in range(200):
            for pos in words_of(W[r]).values():
                mixed_pred += 0 < chosen[r, pos].sum() < len(pos)
                if chosen[r, pos].all() and len(pos) > 1:
                    mixed_branch += 0 < (out[r, pos] == MASK).sum() < len(pos)
        assert mixed_pred == 0
        # replace_unit=word: one decision per unit; token: decisions differ inside words
        assert (mixed_branch == 0) == (replace_unit == "word")


def test_budget_capped_by_max_predictions():
    cfg = Cfg(strategy="wwm", mask_prob=0.5, max_predictions=5)
    _, _, _, _, labels = run(cfg)
    n_pred = (labels != -100).sum(1)
    assert n_pred.max() == 5 and n_pred.min() >= 4  # a 4-token word can leave at most 1 unfilled


def test_entities_are_chosen_first():
    cfg = Cfg(strategy="entity", max_predictions=100)
    I, W, E, out, labels = run(cfg)
    chosen = labels != -100
    in_ent = E >= 0
    rate_ent = chosen[in_ent].mean()
    rate_other = chosen[~in_ent & ~np.isin(I, SPECIAL)].mean()
    assert rate_ent > 0.6 and rate_ent > 5 * rate_other
    for r in range(200):  # spans are whole units
        for k in np.unique(E[r][E[r] >= 0]):
            c = chosen[r, E[r] == k]
            assert c.all() or not c.any()


def test_ngram_length_distribution():
    # one-char words and a low density, so overlaps and budget ends barely bias the draw;
    # the last unit of each sequence (possibly shortened to fit) and segment ends are excluded
    I, W, E = random_corpus(1, T=512, seed=3)
    T = I.shape[1]
    W = np.where(W >= 0, np.cumsum(W >= 0) - 1, -1)  # every token its own word
    cfg = Cfg(strategy="ngram", mask_prob=0.05, max_predictions=1000)
    seps = set(np.flatnonzero(I[0] == SEP).tolist())
    counts = np.zeros(4)
    rng = np.random.default_rng(0)
    for _ in range(400):
        units = choose_units(I[0], W[0], E[0], cfg, VOCAB, rng)
        for u in units[:-1]:
            if not any(p in seps for p in range(u[0], min(u[0] + 4, T))):
                counts[len(u) - 1] += 1
    dist = counts / counts.sum()
    assert counts.sum() > 3000
    np.testing.assert_allclose(dist, [0.4, 0.3, 0.2, 0.1], atol=0.03)


def test_dynamic_and_reproducible():
    cfg = Cfg(strategy="wwm")
    small = tuple(x[:50] for x in CORPUS)
    a = run(cfg, seed=1, corpus=small)
    b = run(cfg, seed=1, corpus=small)
    c = run(cfg, seed=2, corpus=small)
    assert (a[3] == b[3]).all() and (a[4] == b[4]).all()
    differ = ((a[4] != -100) != (c[4] != -100)).any(1)
    assert differ.mean() > 0.95


# ----------------------------------------------------------------------------- collator

def make_instances():
    ids1, w1, e1 = instance([2, 1, 2], second=[1, 1])  # 10 tokens
    ids2, w2, e2 = instance([1, 2, 2, 1], entities=[(1, 1)])  # 8 tokens; entity = word 1 (2 tokens)
    return [
        {"input_ids": ids1.tolist(), "token_type_ids": [0] * 7 + [1] * 3, "word_ids": w1.tolist(),
         "entity_ids": e1.tolist(), "next_sentence_label": 1},
        {"input_ids": ids2.astype(np.int32), "token_type_ids": np.zeros(8, np.int8), "word_ids": w2.astype(np.int32),
         "entity_ids": e2.astype(np.int32), "next_sentence_label": -100},
    ]


def test_collator_pads_and_masks():
    insts = make_instances()
    col = PretrainingCollator(VOCAB, Cfg(strategy="entity", mask_prob=0.3, max_predictions="auto"), max_seq_length=128)
    batch = col(insts, batch_rng(42, 0, 0, 0))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "next_sentence_label"}
    assert all(t.dtype == torch.long for t in batch.values())
    assert batch["input_ids"].shape == (2, 16)  # longest 10, rounded up to a multiple of 8
    assert batch["attention_mask"].tolist() == [[1] * 10 + [0] * 6, [1] * 8 + [0] * 8]
    assert batch["token_type_ids"][0].tolist() == [0] * 7 + [1] * 3 + [0] * 6
    assert batch["token_type_ids"][1].sum() == 0
    assert batch["next_sentence_label"].tolist() == [1, -100]
    assert (batch["input_ids"][0, 10:] == PAD).all() and (batch["input_ids"][1, 8:] == PAD).all()
    labels = batch["labels"]
    assert (labels[batch["attention_mask"] == 0] == -100).all()
    assert (labels[0] != -100).sum() == 2 and (labels[1] != -100).sum() == 2  # round(8*.3), round(6*.3)
    assert (labels[1, 2:4] != -100).all()  # the entity (2 tokens) fills the budget of row 2
    for i, inst in enumerate(insts):
        sel = labels[i] != -100
        assert (labels[i][sel] == torch.as_tensor(np.asarray(inst["input_ids"]), dtype=torch.long)[sel[:len(inst["input_ids"])]]).all()
    again = col(insts, batch_rng(42, 0, 0, 0))
    assert all(torch.equal(batch[k], again[k]) for k in batch)


def test_collator_lengths_and_errors():
    insts = make_instances()
    cfg = Cfg(strategy="wwm")
    assert col_len(PretrainingCollator(VOCAB, cfg, 12), insts) == 12  # capped by max_seq_length
    assert col_len(PretrainingCollator(VOCAB, cfg, 128, pad_to_multiple_of=None), insts) == 10
    assert col_len(PretrainingCollator(VOCAB, cfg, 128, pad_to_multiple_of=4), insts) == 12
    with pytest.raises(DataError, match="max_seq_length"):
        PretrainingCollator(VOCAB, cfg, 9)(insts, batch_rng(0, 0, 0, 0))
    no_words = [{k: v for k, v in x.items() if k != "word_ids"} for x in insts]
    with pytest.raises(DataError, match="word_ids"):
        PretrainingCollator(VOCAB, cfg, 128)(no_words, batch_rng(0, 0, 0, 0))
    # char needs no word_ids; a missing next_sentence_label is -100
    bare = [{"input_ids": x["input_ids"]} for x in insts]
    batch = PretrainingCollator(VOCAB, Cfg(strategy="char"), 128)(bare, batch_rng(0, 0, 0, 0))
    assert batch["next_sentence_label"].tolist() == [-100, -100]
    bad = [dict(insts[0], input_ids=[CLS, 5000, SEP], token_type_ids=[0, 0, 0], word_ids=[-1, 0, -1],
                entity_ids=[-1, -1, -1])]
    with pytest.raises(DataError, match="vocab"):
        PretrainingCollator(VOCAB, cfg, 128)(bad, batch_rng(0, 0, 0, 0))


def col_len(col, insts):
    return col(insts, batch_rng(0, 0, 0, 0))["input_ids"].shape[1]


def test_batch_rng_streams_differ():
    draws = {tuple(batch_rng(*c).integers(0, 2**31, 4)) for c in [(1, 0, 0, 0), (1, 0, 0, 1), (1, 1, 0, 0), (1, 0, 1, 0), (2, 0, 0, 0)]}
    assert len(draws) == 5
    assert batch_rng(1, 2, 3, 4).random() == np.random.default_rng([1, 2, 3, 4]).random()


# ----------------------------------------------------------------------------- max_predictions

def test_max_predictions_auto_hand_worked():
    # ceil(0.15 * 128) = ceil(19.2) = 20 (Google's run_pretraining example), ceil(76.8) = 77 at 512;
    # 0.15 * 100 is 15.000000000000002 in floating point and must still give 15
    assert auto_max_predictions(0.15, 128) == 20 and auto_max_predictions(0.15, 512) == 77
    assert auto_max_predictions(0.15, 100) == 15 and auto_max_predictions(0.2, 64) == 13
    assert MaskingConfig().max_predictions == "auto"
    # auto never caps: a 1000-token row gets round(150) even though 20 is the 128-token cap
    assert num_to_predict(1000, Cfg(max_predictions="auto")) == 150
    assert num_to_predict(1000, Cfg(max_predictions=20)) == 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto, or an explicit cap that is not below it: silent
        assert PretrainingCollator(VOCAB, MaskingConfig(), 512).max_predictions == 77
        assert PretrainingCollator(VOCAB, MaskingConfig(), 128).max_predictions == 20
        assert PretrainingCollator(VOCAB, MaskingConfig(max_predictions=20), 128).max_predictions == 20
    with pytest.warns(UserWarning, match=r"masking\.max_predictions=20 .* 77.*3\.9% .*instead of 15%"):
        assert PretrainingCollator(VOCAB, MaskingConfig(max_predictions=20), 512).max_predictions == 20


def test_max_predictions_config_values():
    assert load_config(None, ["masking.max_predictions=auto"]).masking.max_predictions == "auto"
    assert load_config(None, ["masking.max_predictions=80"]).masking.max_predictions == 80
    for bad in ("0", "many", "true", "2.5"):
        with pytest.raises(ConfigError, match="masking.max_predictions"):
            load_config(None, [f"masking.max_predictions={bad}"])
    with pytest.raises(ConfigError, match="masking.max_predictions"):
        PretrainingCollator(VOCAB, Cfg(max_predictions="lots"), 128)


@pytest.mark.parametrize("key, value", [("strategy", "span"), ("replace_unit", "char"), ("mask_prob", 1.0),
                                        ("max_predictions", 0), ("mask_token_prob", 0.95),
                                        ("ngram_probs", [0.5, 0.4])])
def test_one_set_of_masking_rules_for_files_and_the_collator(key, value):
    # zhbert.config.validate_masking is the only place the rules are written: a config file and
    # a config built in code (handed to the collator) are refused for the same values.
    with pytest.raises(ConfigError, match=rf"masking\.{key}"):
        load_config(None, [f"masking.{key}={value}"])
    with pytest.raises(ConfigError, match=rf"PretrainingCollator: masking\.{key}"):
        PretrainingCollator(VOCAB, Cfg(**{key: value}), 128)
    assert PretrainingCollator(VOCAB, Cfg(max_predictions=np.int64(20)), 128).max_predictions == 20


# ----------------------------------------------------------------------------- real prepared data
#
# corpora/sample through `zhbert prepare` and the collator exactly as the trainer builds it
# (PretrainingCollator(VocabInfo.from_tokenizer(tok), cfg.masking, cfg.data.max_seq_length)).

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """``prepared(max_seq_length)`` -> (train rows, VocabInfo) of corpora/sample, prepared once per
    length. For 512 the sample's short documents are joined ten at a time (one sentence per
    line, bert format), so that instances reach 512 tokens as Wikipedia articles do."""
    from zhbert.prep.prepare import load_prepared
    from zhbert.prep.tokenizer import ChineseTokenizer

    root = tmp_path_factory.mktemp("masking_data")
    cache = {}

    def get(max_len: int):
        if max_len not in cache:
            src, fmt = SAMPLE, []
            if max_len > 128:
                src, fmt = root / "long", ["--format", "bert"]
                src.mkdir(exist_ok=True)
                docs = [d for d in (SAMPLE / "sample_bert.txt").read_text(encoding="utf-8").split("\n\n") if d.strip()]
                joined = ["\n".join(docs[i:i + 10]) for i in range(0, len(docs), 10)]
                (src / "long.txt").write_text("\n\n".join(joined) + "\n", encoding="utf-8")
            out = root / f"data{max_len}"
            subprocess.run([sys.executable, "-m", "zhbert.cli", "prepare", "--input", str(src), "--output", str(out),
                            "--vocab", str(REPO / "configs" / "vocab" / "sample_vocab.txt"),
                            "--max-seq-length", str(max_len), *fmt, "data.dupe_factor=2",
                            "data.validation_fraction=0"], check=True, env=cpu_env(), capture_output=True)
            rows = list(load_prepared(out)["train"])
            cache[max_len] = rows, VocabInfo.from_tokenizer(ChineseTokenizer.from_dir(out))
        return cache[max_len]

    return get


def collate_all(rows, collator, epochs: int, micro: int = 16):
    """(instances, batch) for every batch of ``epochs`` passes, each with its own batch_rng."""
    for epoch in range(epochs):
        for b in range(0, len(rows), micro):
            yield rows[b:b + micro], collator(rows[b:b + micro], batch_rng(0, epoch, 0, b // micro))


@pytest.mark.parametrize("max_len", [128, 512])
def test_predicted_share_is_mask_prob_on_real_data(prepared, max_len):
    rows, vocab = prepared(max_len)
    lengths = np.array([len(r["input_ids"]) for r in rows])
    assert lengths.max() == max_len and (lengths > 0.9 * max_len).mean() > 0.3  # long rows exist

    def share(masking):
        col = PretrainingCollator(vocab, masking, max_len)
        pred = real = 0
        for _, batch in collate_all(rows, col, epochs=2):
            pred += int((batch["labels"] != -100).sum())
            real += int(batch["attention_mask"].sum())
        return pred / real

    assert 0.14 <= share(MaskingConfig(strategy="wwm")) <= 0.16  # the defaults: max_predictions auto
    # the old default, a 128-token cap of 20, starves the 512 phase
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = share(MaskingConfig(strategy="wwm", max_predictions=20))
    warned = [w for w in caught if "masking.max_predictions" in str(w.message)]
    if max_len == 128:
        assert 0.14 <= old <= 0.16 and not warned
    else:
        assert old < 0.07 and len(warned) == 1


def _treatments(batch, mask_id):
    """Per chosen token: "M" shown as [MASK], "S" shown as itself (kept, or a random draw that hit
    the original), "R" another token; with the original ids (labels) and row / word ids."""
    labels = batch["labels"].numpy()
    shown = batch["input_ids"].numpy()
    chosen = labels != -100
    kind = np.where(shown == mask_id, "M", np.where(shown == labels, "S", "R"))
    return chosen, kind, labels


@pytest.mark.parametrize("replace_unit", ["token", "word"])
def test_replace_unit_on_real_whole_words(prepared, replace_unit):
    """token (the default): the characters of a chosen word get independent 80/10/10 draws, so a
    multi-character word is mixed (e.g. one [MASK], one kept) as often as independent draws
    predict for the observed word lengths; word: never mixed."""
    rows, vocab = prepared(128)
    cfg = MaskingConfig(strategy="wwm", replace_unit=replace_unit)
    assert MaskingConfig().replace_unit == "token"
    col = PretrainingCollator(vocab, cfg, 128)
    K = vocab.replacement_ids.size
    is_rep = np.zeros(vocab.vocab_size, dtype=bool)
    is_rep[vocab.replacement_ids] = True
    mixed = mixed_mask = n_words = 0
    expected = variance = 0.0
    lengths = []
    for instances, batch in collate_all(rows, col, epochs=6):
        chosen, kind, labels = _treatments(batch, vocab.mask_id)
        for i, inst in enumerate(instances):
            wids = np.full(chosen.shape[1], -1)
            wids[:len(inst["word_ids"])] = inst["word_ids"]
            for word in np.unique(wids[chosen[i] & (wids >= 0)]):
                pos = np.flatnonzero(wids == word)
                if pos.size < 2:
                    continue
                assert chosen[i, pos].all()  # whole-word masking: all characters chosen
                k = kind[i, pos]
                n_words += 1
                lengths.append(pos.size)
                mixed += len(set(k)) > 1
                mixed_mask += ("M" in k) and len(set(k)) > 1
                # independent draws: [MASK] 0.8; shown as itself 0.1 kept + 0.1 x P(random draw
                # = original) = 0.1/K for a replaceable original; another token the rest
                p_same = 0.1 + 0.1 * is_rep[labels[i, pos]] / K
                p_uniform = 0.8 ** pos.size + np.prod(p_same) + np.prod(0.2 - p_same)
                expected += 1 - p_uniform
                variance += p_uniform * (1 - p_uniform)
    assert n_words > 1000 and max(lengths) >= 3
    if replace_unit == "token":
        # e.g. 2 characters: 1 - (0.8² + 0.1² + 0.1²) = 0.34 of the words are mixed
        assert mixed / n_words > 0.3
        assert abs(mixed - expected) <= 4 * variance ** 0.5 + 1, (mixed, expected, n_words)
    else:
        # one draw per word: [MASK] never mixes with anything; a "random" word can only look
        # mixed where a random draw hits its original character (p = 1/K per character)
        assert mixed_mask == 0
        assert mixed <= 0.002 * n_words
