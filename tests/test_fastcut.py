"""zhbert.prep.fastcut against jieba itself (the reference): same words, same ties, same HMM states."""

import random
from pathlib import Path

import jieba
import pytest
from jieba import finalseg

from zhbert.prep import fastcut
from zhbert.prep.fastcut import FastCut, Viterbi

REPO = Path(__file__).resolve().parents[1]


def han_blocks(texts):
    return [b for t in texts for b in jieba.re_han_default.split(t) if b and jieba.re_han_default.match(b)]


def repo_sample_lines():
    lines = []
    for f in sorted((REPO / "corpora" / "sample").rglob("*")):
        if f.is_file():
            lines += [x for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]
    return lines


@pytest.fixture(scope="module")
def dt():
    tok = jieba.Tokenizer()
    tok.initialize()
    return tok


def assert_same_cuts(dt, fast, blocks):
    ref_hmm, ref_plain = dt._Tokenizer__cut_DAG, dt._Tokenizer__cut_DAG_NO_HMM
    blocks = list(blocks)
    # The batched path (all HMM runs decoded together), as zhbert.prep.segment uses it.
    for b, got in zip(blocks, fast.cut_hmm_many(blocks)):
        assert got == list(ref_hmm(b)), b
    for b in blocks:
        assert fast.cut_no_hmm(b) == list(ref_plain(b)), b
    for b in blocks[:200]:  # one block at a time, no batch
        assert fast.cut_hmm(b) == list(ref_hmm(b)), b


def test_hand_worked_examples(dt):
    fast = FastCut(dt)
    # 杭研 is no dictionary word: the route leaves 杭 and 研 alone and the HMM joins them.
    assert fast.cut_hmm("他来到了网易杭研大厦") == ["他", "来到", "了", "网易", "杭研", "大厦"]
    assert fast.cut_no_hmm("他来到了网易杭研大厦") == ["他", "来到", "了", "网易", "杭", "研", "大厦"]
    # Without the HMM, single Latin/digit characters the route leaves alone are joined.
    assert fast.cut_no_hmm("我用iPhone13") == list(dt._Tokenizer__cut_DAG_NO_HMM("我用iPhone13"))


def test_equals_jieba_on_sample_corpus(dt):
    assert_same_cuts(dt, FastCut(dt), han_blocks(repo_sample_lines()))


def test_equals_jieba_on_shared_corpus(dt, shared_corpus_sample):
    blocks = han_blocks(shared_corpus_sample(1500))
    assert sum(map(len, blocks)) > 100_000
    assert_same_cuts(dt, FastCut(dt), blocks)


def test_route_ties_go_to_the_longer_word(tmp_path):
    # 甲乙|丙 and 甲|乙丙 score exactly the same (three words of equal frequency, two per
    # route); jieba's max over (score, end) takes the larger end at position 0: 甲乙 / 丙.
    d = tmp_path / "dict.txt"
    d.write_text("甲乙 5\n乙丙 5\n甲 5\n乙 5\n丙 5\n丁 1000\n", encoding="utf-8")
    tok = jieba.Tokenizer(dictionary=str(d))
    tok.initialize()
    fast = FastCut(tok)
    assert list(tok._Tokenizer__cut_DAG_NO_HMM("甲乙丙")) == ["甲乙", "丙"]
    assert fast.cut_no_hmm("甲乙丙") == ["甲乙", "丙"]
    assert fast.route("甲乙丙") == [2, 3, 3]
    assert_same_cuts(tok, fast, ["甲乙丙", "丁甲乙丙丙甲", "甲乙丙戊己"])


def test_user_dictionary_and_forced_split(dt, tmp_path):
    user = tmp_path / "user.txt"
    user.write_text("杭研大厦 10 nt\n", encoding="utf-8")
    tok = jieba.Tokenizer()
    tok.initialize()
    tok.load_userdict(str(user))
    fast = FastCut(tok)  # built after the user dictionary: sees its words
    assert fast.cut_hmm("他来到了网易杭研大厦") == list(tok._Tokenizer__cut_DAG("他来到了网易杭研大厦"))
    assert "杭研大厦" in fast.cut_hmm("他来到了网易杭研大厦")
    saved = set(finalseg.Force_Split_Words)
    try:
        finalseg.add_force_split("杭研")  # an HMM word that must be split again
        assert fast.hmm_cut("杭研") == list(finalseg.cut("杭研")) == ["杭", "研"]
    finally:
        finalseg.Force_Split_Words.clear()
        finalseg.Force_Split_Words.update(saved)


def test_viterbi_equals_jieba_with_ties():
    # Small integer log-probabilities make equal sums (ties) common; every tie must go the
    # way jieba's max over (prob, state) tuples sends it. Characters outside the emission
    # table take MIN_FLOAT, where sums absorb each other and tie too.
    rng = random.Random(0)
    chars = "甲乙丙丁"
    for _ in range(300):
        start = {y: float(rng.randint(-3, 0)) for y in "BMES"}
        trans = {a: {b: float(rng.randint(-3, 0)) for b in "BMES"} for a in "BMES"}
        emit = {y: {c: float(rng.randint(-2, 0)) for c in chars if rng.random() < 0.8} for y in "BMES"}
        obs = "".join(rng.choice(chars + "戊") for _ in range(rng.randint(1, 12)))
        _, ref = finalseg.viterbi(obs, "BMES", start, trans, emit)
        viterbi = Viterbi(start, trans, emit, finalseg.MIN_FLOAT)
        assert viterbi(obs) == "".join(ref), obs
        words = fastcut._hmm_words(obs, "".join(ref))
        assert viterbi.words_many([obs, obs]) == [words, words], obs
