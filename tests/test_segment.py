"""jieba whole-word segmentation aligned to character tokens (real jieba, real tokenizer)."""

import pytest

from zhbert.errors import ConfigError, DataError
from zhbert.prep.segment import AlignedSentence, Segmenter, _align_merging, align, segment_sentences, word_spans
from zhbert.prep.tokenizer import ChineseTokenizer


@pytest.fixture(scope="module")
def tok(bert_chinese_vocab):
    return ChineseTokenizer.from_vocab(bert_chinese_vocab)


@pytest.fixture(scope="module")
def seg():
    return Segmenter()


def run(text, tok, segmenter):
    (sent,) = segment_sentences([text], tok, segmenter)
    return tok.tokenize(text), sent


def test_beijing_tiananmen(tok, seg):
    # jieba: 我 / 爱 / 北京 / 天安门 (r v ns ns); the two place names form one noun-phrase span.
    assert seg.cut("我爱北京天安门") == [("我", "r"), ("爱", "v"), ("北京", "ns"), ("天安门", "ns")]
    tokens, sent = run("我爱北京天安门", tok, seg)
    assert tokens == ["我", "爱", "北", "京", "天", "安", "门"]
    assert sent.word_ids == [0, 1, 2, 2, 3, 3, 3]
    assert sent.entity_ids == [-1, -1, 0, 0, 0, 0, 0]
    assert sent.aligned and sent.num_words == 4
    assert sent.ids == tok.encode("我爱北京天安门")[0]


def test_mixed_latin_digits_hmm_on_and_off(tok, seg):
    text = "我用iPhone13拍了2023年的照片"
    tokens, sent = run(text, tok, seg)
    assert tokens == ["我", "用", "iphone", "##13", "拍", "了", "202", "##3", "年", "的", "照", "片"]
    # HMM joins 我用 into a new word: 我用 / iPhone13 / 拍 / 了 / 2023 / 年 / 的 / 照片
    assert sent.word_ids == [0, 0, 1, 1, 2, 3, 4, 4, 5, 6, 7, 7]
    _, no_hmm = run(text, tok, Segmenter(hmm=False))  # 我 / 用 / iPhone13 / ...
    assert no_hmm.word_ids == [0, 1, 2, 2, 3, 4, 5, 5, 6, 7, 8, 8]


def test_bert_on_gpu(tok, seg):
    tokens, sent = run("BERT模型在GPU上训练", tok, seg)
    assert tokens == ["be", "##rt", "模", "型", "在", "gpu", "上", "训", "练"]
    assert sent.word_ids == [0, 0, 1, 1, 2, 3, 4, 5, 5]


def test_wordpiece_across_jieba_boundary_is_one_word(tok, seg):
    # jieba cuts "naïve" into na / ï / ve and "Café" into Caf / é; tokens are na ##ive, cafe.
    assert [w for w, _ in seg.cut("naïve Café")] == ["na", "ï", "ve", " ", "Caf", "é"]
    tokens, sent = run("naïve Café", tok, seg)
    assert tokens == ["na", "##ive", "cafe"]
    assert sent.word_ids == [0, 0, 1] and sent.aligned
    # A "##" piece joins its head even when the words say otherwise.
    ids, offsets = tok.encode("iphone13")
    assert align("iphone13", ids, offsets, [("iphone", "eng"), ("13", "m")], tok).word_ids == [0, 0]


def test_unk_and_whitespace(tok, seg):
    assert "犇" not in tok.vocab
    tokens, sent = run("我爱😀你 犇犇 hello  world", tok, seg)
    assert tokens == ["我", "爱", "[UNK]", "你", "[UNK]", "[UNK]", "hello", "world"]
    # jieba: 我 / 爱 / 😀 / 你 / ' ' / 犇犇 / ' ' / hello / ' ' / ' ' / world; spaces have no token
    assert [w for w, _ in seg.cut("我爱😀你 犇犇 hello  world")][5] == "犇犇"
    assert sent.word_ids == [0, 1, 2, 3, 4, 4, 5, 6]


def test_entities_person_and_organisation(tok, seg):
    text = "毛泽东去了清华大学。"
    assert seg.cut(text) == [("毛泽东", "nr"), ("去", "v"), ("了", "ul"), ("清华大学", "nt"), ("。", "")]
    _, sent = run(text, tok, seg)
    assert sent.word_ids == [0, 0, 0, 1, 2, 3, 3, 3, 3, 4]
    assert sent.entity_ids == [0, 0, 0, -1, -1, 1, 1, 1, 1, -1]


def test_noun_phrase_span(tok, seg):
    _, sent = run("人工智能技术发展迅速", tok, seg)  # 人工智能/n 技术/n 发展/vn 迅速/ad
    assert sent.word_ids == [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]
    assert sent.entity_ids == [0] * 8 + [-1, -1]


def test_entity_modes(tok):
    text = "毛泽东去了清华大学。"
    _, posseg = run(text, tok, Segmenter(entity_mode="posseg"))
    assert posseg.entity_ids == [0, 0, 0, -1, -1, 1, 1, 1, 1, -1]
    none = Segmenter(entity_mode="none")
    assert none.cut(text)[0] == ("毛泽东", "")
    _, sent = run(text, tok, none)
    assert sent.entity_ids == [-1] * 10 and sent.word_ids == [0, 0, 0, 1, 2, 3, 3, 3, 3, 4]


def test_dict_mode_tags_unknown_hmm_words_as_proper_nouns(tok, seg):
    # 李小福 is not in jieba's dictionary: HMM finds it, "dict" mode tags it nz -> entity.
    assert seg.cut("李小福是创新办主任")[0] == ("李小福", "nz")
    _, sent = run("李小福是创新办主任", tok, seg)
    assert sent.entity_ids[:4] == [0, 0, 0, -1]


def test_user_dictionary_changes_segmentation(tok, seg, tmp_path):
    text = "李小福是创新办主任"
    assert [w for w, _ in seg.cut(text)][2:4] == ["创新", "办"]
    user_dict = tmp_path / "user.txt"
    user_dict.write_text("创新办 3 nt\n", encoding="utf-8")
    custom = Segmenter(user_dict=user_dict)
    assert custom.cut(text)[2] == ("创新办", "nt")  # the user tag makes it an entity
    _, sent = run(text, tok, custom)
    assert sent.word_ids == [0, 0, 0, 1, 2, 2, 2, 3, 3]
    assert sent.entity_ids == [0, 0, 0, -1, 1, 1, 1, -1, -1]
    assert seg.cut(text)[2] == ("创新", "v")  # the default segmenter is unaffected


def test_fallback_is_counted(tok):
    class Broken(Segmenter):  # a segmenter whose words lose a character
        def cut_codes(self, text):
            words, codes = super().cut_codes(text)
            return words[1:], codes[1:]

    broken = Broken()
    sents = segment_sentences(["我用iPhone13拍照", "北京"], tok, broken)
    assert [s.aligned for s in sents] == [False, False] and broken.align_failures == 2
    # char-level groups: each token its own word, "##13" joins "iphone"
    assert sents[0].word_ids == [0, 1, 2, 2, 3, 4] and sents[0].entity_ids == [-1] * 6
    ids, offsets = tok.encode("北京")
    direct = align("北京", ids, offsets, [("北", "ns")], tok)
    assert direct == AlignedSentence(ids, [0, 1], [-1, -1], aligned=False)


def test_empty_and_whitespace_only(tok, seg):
    assert segment_sentences(["", "   "], tok, seg) == [AlignedSentence([], [], [], True)] * 2


def test_word_spans_rules():
    assert word_spans(["ns", "n", "n", "p", "nr"]) == [(0, 3), (4, 5)]  # 中国 人民 银行 在 张三
    assert word_spans(["a", "n"]) == [(0, 2)]  # adjective + noun
    assert word_spans(["n", "a"]) == []  # must end in a noun
    assert word_spans(["n"] * 6) == [(0, 4), (4, 6)]  # at most 4 words per phrase
    assert word_spans(["v", "nz", "uj"]) == [(1, 2)]  # a lone proper noun


def test_bad_arguments():
    with pytest.raises(ConfigError, match="entity_mode"):
        Segmenter(entity_mode="ner")
    with pytest.raises(DataError, match="not found"):
        Segmenter(user_dict="/nonexistent/user_dict.txt")



def test_batch_fast_path_equals_general_alignment(tok, seg, shared_corpus_sample):
    """segment_sentences' fast path == align() == the token-by-token merging alignment, on real text."""
    texts = [line[:200] for line in shared_corpus_sample(60)]
    texts += ["naïve Café", "C++和C#", "3.14亿元", "e-mail：a.b@c.com"]
    batch = segment_sentences(texts, tok, seg)
    cont = tok.continuation_flags().__getitem__
    for text, sent in zip(texts, batch):
        ids, offsets = tok.encode(text)
        words_tags = seg.cut(text)
        assert sent == align(text, ids, offsets, words_tags, tok), text
        char_word = [i for i, (w, _) in enumerate(words_tags) for _ in w]
        merged = _align_merging(ids, [s for s, _ in offsets], [e for _, e in offsets], char_word, cont, len(text))
        assert merged is not None and merged[0] == sent.word_ids, text
        # invariants: ids match the tokenizer, word ids count 0, 1, 2, ... without gaps
        assert sent.ids == ids and sent.aligned
        assert all(b - a in (0, 1) for a, b in zip(sent.word_ids, sent.word_ids[1:]))
        assert not sent.word_ids or sent.word_ids[0] == 0
        spans = [e for e in sent.entity_ids if e >= 0]
        assert all(b - a in (0, 1) for a, b in zip(spans, spans[1:])) and (not spans or spans[0] == 0)
    assert seg.align_failures == 0


def test_joined_batch_equals_per_sentence_reference(tok, shared_corpus_sample):
    """The batched path (texts joined by "\\n", one jieba pass, numpy ranks, han-block cache)
    gives the same ids / word_ids / entity_ids as one jieba cut + alignment per sentence, on
    whole real sentences and on texts with newlines, carriage returns and odd characters."""
    import jieba

    from zhbert.prep.segment import _segment_joined, segment_sentences_reference

    texts = shared_corpus_sample(300)
    texts += ["naïve Café", "C++和C#", "a\nb 北京\n\n上海", "行尾\r", "\r\n中国", "  ", "", "x##y ##13",
              "𠀀𪜀丽\u3000全角　空格", "[MASK]北京[UNK]", "😀" * 3 + "犇犇", "email：a.b@c.com 3.14亿元"]
    texts += texts[:50]  # repeated sentences: served from the han-block cache the second time
    fast, ref = Segmenter(), Segmenter()
    joined = [t for t in texts if "\r" not in t]
    batch = _segment_joined(joined, tok, fast)  # the fast path itself, no fallback to the reference
    assert batch is not None and batch.sentences() == segment_sentences_reference(joined, tok, ref)
    assert fast.align_failures == ref.align_failures
    assert segment_sentences(texts, tok, fast) == segment_sentences_reference(texts, tok, ref)  # "\r": per sentence
    dt = jieba.Tokenizer()  # the block cache gives jieba's own words
    assert all(fast.cut_words(t) == dt.lcut(t) for t in texts[:200])


def test_cut_codes_gives_jiebas_words_on_short_and_long_text(seg, shared_corpus_sample):
    """cut_codes cuts short text with jieba's lcut and long text (a joined batch) with
    cut_words; both are jieba's words."""
    import jieba

    from zhbert.prep.segment import _CUT_WORDS_MIN_CHARS

    dt = jieba.Tokenizer()
    texts = shared_corpus_sample(20) + ["naïve Café", "C++和C#", "a\nb 北京\n\n上海", "行尾\r", "\r\n中国", "", "😀犇犇"]
    long = "\n".join(texts)
    assert len(long) >= _CUT_WORDS_MIN_CHARS > max(map(len, texts[-7:]))
    for t in [*texts, long]:
        assert seg.cut_codes(t)[0] == dt.lcut(t), t[:40]
    no_hmm = Segmenter(hmm=False)
    assert no_hmm.cut_codes(long)[0] == dt.lcut(long, HMM=False)


# --- data.segmenter: the cut engine (issue 15) ---------------------------------------------

def _rjieba():
    pytest.importorskip("rjieba")
    return Segmenter(engine="rjieba")


def test_the_jieba_engine_is_jiebas_lcut_and_fastcut_gives_the_same_words(seg, shared_corpus_sample):
    import jieba

    dt = jieba.Tokenizer()
    ref = Segmenter(engine="jieba")
    long = "\n".join(shared_corpus_sample(20))
    assert ref.cut_codes(long)[0] == dt.lcut(long) == seg.cut_codes(long)[0]
    assert ref.cut_codes(long)[1] == seg.cut_codes(long)[1]


def test_rjieba_cuts_chinese_like_jieba_and_aligns_the_same(tok, seg):
    fast = _rjieba()
    texts = ["我爱北京天安门", "李小福是创新办主任也是云计算方面的专家", "BERT模型在GPU上训练",
             "我用iPhone13拍了2023年的照片", "上海是中国最大的城市之一。"]
    for t in texts:
        assert fast.cut_codes(t) == seg.cut_codes(t), t
    assert segment_sentences(texts, tok, fast) == segment_sentences(texts, tok, seg)
    # where jieba-rs differs (benchmarks/segmenter_agreement.py): ASCII runs joined by - or .
    assert fast.cut_codes("0771-2756565")[0] == ["0771-2756565"]
    assert seg.cut_codes("0771-2756565")[0] == ["0771", "-", "2756565"]


def test_rjieba_reads_the_user_dictionary(tok, tmp_path):
    pytest.importorskip("rjieba")
    user_dict = tmp_path / "user.txt"
    user_dict.write_text("\ufeff创新办 3 nt\n云计算\n", encoding="utf-8")
    custom = Segmenter(user_dict=user_dict, engine="rjieba")
    words, codes = custom.cut_codes("李小福是创新办主任")
    assert words[2] == "创新办" and codes[2] == "E"  # the user tag makes it an entity
    _, sent = run("李小福是创新办主任", tok, custom)
    assert sent.entity_ids == [0, 0, 0, -1, 1, 1, 1, -1, -1]


def test_engine_errors(monkeypatch):
    import zhbert.prep.segment as segment
    from zhbert.config import DataConfig

    with pytest.raises(ConfigError, match="segmenter='hanlp': must be one of fastcut, jieba, rjieba"):
        Segmenter(engine="hanlp")
    with pytest.raises(ConfigError, match="posseg cuts with jieba"):
        Segmenter(engine="rjieba", entity_mode="posseg")
    with pytest.raises(ConfigError, match="data.segmenter"):
        DataConfig(segmenter="rjieba", entity_mode="posseg").validate("test")
    # not installed: one line saying what to install
    monkeypatch.setitem(__import__("sys").modules, "rjieba", None)
    monkeypatch.setattr(segment, "_RJIEBA_CACHE", {})
    with pytest.raises(ConfigError, match=r"needs the rjieba package: pip install rjieba"):
        Segmenter(engine="rjieba")


def test_the_segmenter_is_recorded_and_a_mismatch_is_detected(tmp_path):
    import json

    from test_prepare import config, write_corpus

    from zhbert.prep.prepare import CONFIG_FILE, check_prepared_matches, prepare

    pytest.importorskip("rjieba")
    vocab = __import__("pathlib").Path(__file__).parent / "golden" / "sample_vocab.txt"
    write_corpus(tmp_path / "corpus.txt")
    cfg = config(tmp_path, vocab)
    prepare(cfg)
    meta_path = tmp_path / "out" / CONFIG_FILE
    assert json.loads(meta_path.read_text())["config"]["segmenter"] == "fastcut"
    other = cfg.__class__(**{**cfg.__dict__, "segmenter": "rjieba"})
    with pytest.raises(DataError, match=r"differs in data\.segmenter\)"):
        prepare(other)  # a resume / re-run with another engine
    with pytest.raises(DataError, match=r"differs in data\.segmenter\)"):
        check_prepared_matches(other)  # a training run asking for another engine
    # an output from before data.segmenter existed was cut with jieba's words: same as fastcut
    meta = json.loads(meta_path.read_text())
    del meta["config"]["segmenter"]
    meta_path.write_text(json.dumps(meta))
    assert prepare(cfg)["already_prepared"] is True
    assert check_prepared_matches(cfg).segmenter == "fastcut"


def test_prepare_without_rjieba_stops_in_one_line_before_any_work(tmp_path, monkeypatch):
    import importlib.util

    from test_prepare import config, write_corpus

    from zhbert.prep.prepare import prepare

    vocab = __import__("pathlib").Path(__file__).parent / "golden" / "sample_vocab.txt"
    write_corpus(tmp_path / "corpus.txt")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rjieba" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^data.segmenter=rjieba needs the rjieba package: pip install rjieba"):
        prepare(config(tmp_path, vocab, segmenter="rjieba", workers=2))
    assert not (tmp_path / "out").exists()


def test_span_array_equals_the_greedy_rule_word_by_word():
    """The numpy span finder (whole runs at once) against word_spans' rule applied run by
    run in plain Python, on random code strings."""
    import random
    import re

    from zhbert.prep.segment import MAX_PHRASE_WORDS, _span_array

    def reference(codes):
        spans = []
        for m in re.finditer(r"[ENA]{2,}|E", codes):
            i, end = m.span()
            while i < end:
                j = min(end, i + MAX_PHRASE_WORDS)
                while j > i and codes[j - 1] == "A":
                    j -= 1
                if j - i >= 2:
                    spans.append((i, j))
                    i = j
                elif codes[i] == "E":
                    spans.append((i, i + 1))
                    i += 1
                else:
                    i += 1
        return spans

    rng = random.Random(0)
    cases = ["", "x", "E", "N", "A", "AE", "EA", "NNNNN", "AAAAN", "EAAAAAE", "ENANANAN"]
    cases += ["".join(rng.choice("ENAxx") for _ in range(rng.randint(0, 60))) for _ in range(3000)]
    for codes in cases:
        assert [tuple(x) for x in _span_array(codes).tolist()] == reference(codes), codes
