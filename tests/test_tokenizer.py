"""Character tokenizer: parity with transformers' BertTokenizer, offsets, save/load, vocab builder."""

import hashlib
import json
import random
import unicodedata
from pathlib import Path

import pytest
from tokenizers import normalizers

from zhbert.errors import DataError
from zhbert.prep.tokenizer import ChineseTokenizer, build_vocab, special_layout

transformers = pytest.importorskip("transformers")

TRICKY = [
    "我爱北京天安门",
    "我用iPhone13拍了2023年的照片",
    "BERT模型在GPU上训练，loss降到0.35。",
    "Café naïve résumé ÉCOLE Ångström",
    "ＡＢＣ１２３全角字符，（括号）",
    "emoji 😀👍🏻 和符号 ©®™ ★☆",
    "控制\x00字符\x07\x1b和\u200b零宽\ufeff",
    "tabs\tand\nnewlines\r\n  多个   空格\u3000全角空格",
    "C++ 和 C# 以及 node.js、e-mail: a.b@c.com https://x.y/z?q=1",
    "超长单词" + "a" * 150 + "结束",
    "[MASK] 和 [CLS] 写在文本里 [mask]",
    "İstanbul straße ﬁ ligature",
    "ΣΊΣΥΦΟΣ",  # Python's lower() gives a final ς here, Rust's a σ: differs from the legacy class
    "繁體中文與簡體中文混排，兼容字符：豈更車",
    "日本語のひらがなとカタカナ、한국어 텍스트",
    "数学公式 x² + y² = z²，½ ¼ ①②③",
    "",
    "   ",
]


@pytest.fixture(scope="module")
def tok(bert_chinese_vocab):
    return ChineseTokenizer.from_vocab(bert_chinese_vocab)


@pytest.fixture(scope="module")
def hf_ref(bert_chinese_vocab):
    # transformers 5's BertTokenizer (tokenizers-backed); BertTokenizerFast(vocab_file=...) is broken there.
    return transformers.BertTokenizer(str(bert_chinese_vocab), do_lower_case=True)


@pytest.fixture(scope="module")
def hf_legacy(bert_chinese_vocab):
    legacy = pytest.importorskip("transformers.models.bert.tokenization_bert_legacy")
    return legacy.BertTokenizerLegacy(str(bert_chinese_vocab), do_lower_case=True)  # pure Python, Google's algorithm


@pytest.fixture(scope="module")
def corpus_lines(shared_corpus_sample):
    """~4000 non-blank lines spread over every pretraining corpus file."""
    return shared_corpus_sample(500)


def test_corpus_parity_with_transformers(tok, hf_ref, hf_legacy, corpus_lines):
    assert len(corpus_lines) > 3000
    ours = [ids for ids, _ in tok.encode_batch(corpus_lines)]
    assert ours == hf_ref(corpus_lines, add_special_tokens=False)["input_ids"]
    legacy = [hf_legacy.convert_tokens_to_ids(hf_legacy.tokenize(s)) for s in corpus_lines]
    assert ours == legacy


def test_tricky_strings_parity(tok, hf_ref, hf_legacy):
    for s in TRICKY:
        ids, offsets = tok.encode(s)
        assert ids == hf_ref(s, add_special_tokens=False)["input_ids"], s
        if s != "ΣΊΣΥΦΟΣ":
            assert ids == hf_legacy.convert_tokens_to_ids(hf_legacy.tokenize(s)), s
        enc = tok.backend.encode(s, add_special_tokens=False)
        assert (ids, offsets) == (enc.ids, enc.offsets), s  # fast path == Rust pipeline


def test_hand_worked_tokens(tok):
    assert tok.tokenize("我用iPhone13拍了Café的照片") == ["我", "用", "iphone", "##13", "拍", "了", "cafe", "的", "照", "片"]
    assert tok.tokenize("😀") == ["[UNK]"]
    assert tok.tokenize("[MASK]我") == ["[MASK]", "我"]
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert tok.vocab_size == 21128


def test_fast_path_matches_backend_on_unicode_sample(tok):
    """The dict fast path equals the Rust pipeline, ids and offsets (sample of all code points)."""
    rng = random.Random(0)
    cps = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
    sample = rng.sample(cps, 20000) + list(range(0x2000, 0x3100)) + list(range(0x2B800, 0x2B940)) + list(range(0xFF00, 0xFFF0))
    texts = [f"a{chr(c)}b中{chr(c)}文 x{chr(c)}，{chr(c)}[MASK]{chr(c)}1" for c in sample]
    for text, (ids, offsets), enc in zip(texts, tok.encode_batch(texts), tok.backend.encode_batch(texts, add_special_tokens=False)):
        assert (ids, offsets) == (enc.ids, enc.offsets), ascii(text)


def test_fast_path_tables(bert_chinese_vocab):
    """The public fast-path object: its code-point array agrees with its dict, it is built once,
    and a new normalisation (another backend) gets new tables (full-width "，" folds to "," and
    stops being fast)."""
    tok = ChineseTokenizer.from_vocab(bert_chinese_vocab)
    fast = tok.fast_path()
    assert tok.fast_path() is fast
    assert fast.ids["中"] == tok.vocab["中"] and fast.ids["，"] == tok.vocab["，"]
    assert all(fast.code_ids[ord(c)] == i for c, i in fast.ids.items())
    assert fast.code_ids[ord("a")] == -1 and fast.code_ids[0x9FFF] == tok.unk_id  # CJK, not in the vocab
    assert [m.group() for m in fast.slow_re.finditer("我用iPhone13\nx拍")] == ["iPhone13\nx"]
    assert [m.group() for m in fast.runs_re.finditer("我用iPhone13\nx拍")] == ["iPhone13", "x"]  # stops at "\n"
    tok.normalization = {"fullwidth": True, "t2s": False}
    assert tok.fast_path() is not fast and "，" not in tok.fast_path().ids
    assert tok.encode("北京，上海")[0] == tok.backend.encode("北京，上海", add_special_tokens=False).ids


def test_offsets_index_the_original_text(tok, corpus_lines):
    assert tok.encode("Café 😀") == ([8377, 100], [(0, 4), (5, 6)])
    text = "ÉCOLE的Straße，ＡＢＣ"
    ids, offsets = tok.encode(text)
    assert tok.tokenize(text)[:2] == ["eco", "##le"]
    assert [text[s:e] for s, e in offsets][:2] == ["ÉCO", "LE"]  # spans of the original, accented text
    assert "".join(text[s:e] for s, e in offsets) == text
    norm = normalizers.BertNormalizer(lowercase=True)
    for line in [text, *TRICKY, *corpus_lines[::10]]:
        ids, offsets = tok.encode(line)
        for tid, (s, e) in zip(ids, offsets):
            if tid not in (tok.unk_id, tok.mask_id, tok.cls_id):  # (special tokens match unnormalised)
                assert tok.tokens[tid].removeprefix("##") in norm.normalize_str(line[s:e])  # (Hangul: jamo of a syllable)


def test_encode_batch_equals_encode(tok):
    assert tok.encode_batch(TRICKY) == [tok.encode(s) for s in TRICKY]


def test_encode_pair_and_truncation_match_transformers(tok, tmp_path):
    tok.save(tmp_path)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    a, b = "今天天气很好，我们去公园散步吧。", "好的，iPhone13在哪里买？"
    for max_length in (None, 40, 20, 11, 8, 5, 3):
        kw = {} if max_length is None else {"truncation": True, "max_length": max_length}
        for pair in ((a, b), (b, a), (a, None)):
            ref = fast(*[x for x in pair if x is not None], return_token_type_ids=True, **kw)
            ours = tok.encode_pair(*pair, max_length=max_length)
            assert ours == {k: ref[k] for k in ours}, (pair, max_length)
    assert tok.encode_pair("我", "你") == {
        "input_ids": [101, 2769, 102, 872, 102], "token_type_ids": [0, 0, 0, 1, 1], "attention_mask": [1] * 5,
    }
    with pytest.raises(ValueError):
        tok.encode_pair(a, b, max_length=2)


def test_save_loads_in_transformers(tok, tmp_path, corpus_lines):
    tok.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"vocab.txt", "tokenizer.json", "tokenizer_config.json"}
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    again = ChineseTokenizer.from_dir(tmp_path)
    lines = corpus_lines[:300] + TRICKY
    ours = [ids for ids, _ in tok.encode_batch(lines)]
    assert [auto(s, add_special_tokens=False)["input_ids"] for s in lines] == ours
    assert [fast(s, add_special_tokens=False)["input_ids"] for s in lines] == ours
    assert [ids for ids, _ in again.encode_batch(lines)] == ours
    assert auto("我爱你", "好")["input_ids"] == tok.encode_pair("我爱你", "好")["input_ids"]
    assert auto.mask_token_id == 103 and auto.pad_token_id == 0
    assert again.vocab_sha256() == tok.vocab_sha256() == hashlib.sha256((tmp_path / "vocab.txt").read_bytes()).hexdigest()


def test_cased_tokenizer_round_trip(bert_chinese_vocab, tmp_path):
    cased = ChineseTokenizer.from_vocab(bert_chinese_vocab, lowercase=False)
    assert cased.tokenize("Café") != ChineseTokenizer.from_vocab(bert_chinese_vocab).tokenize("Café")
    cased.save(tmp_path)
    assert ChineseTokenizer.from_dir(tmp_path).lowercase is False


def test_decode_and_normal_ids(tok):
    ids, _ = tok.encode("我用iPhone13拍了照片")
    assert tok.decode(ids) == "我用iphone13拍了照片"
    assert tok.decode([101, *ids, 102], skip_special_tokens=True) == "我用iphone13拍了照片"
    normal = tok.normal_token_ids()
    assert len(normal) == 21128 - 106  # [PAD], [unused1-99], [UNK], [CLS], [SEP], [MASK], <S>, <T>
    assert normal.min() == 106 and tok.vocab["我"] in set(normal.tolist())


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        ("", "empty"),
        ("[PAD]\n[CLS]\n[SEP]\n[MASK]\n我\n", "[UNK]"),
        ("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n我\n我\n", ":7: token '我' already listed on line 6"),
    ],
)
def test_bad_vocab_raises_data_error(tmp_path, content, message):
    path = tmp_path / "vocab.txt"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=None) as err:
        ChineseTokenizer.from_vocab(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_bad_vocab_binary_and_dir(tmp_path):
    (tmp_path / "vocab.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="UTF-8"):
        ChineseTokenizer.from_vocab(tmp_path / "vocab.txt")
    with pytest.raises(DataError, match="directory"):
        ChineseTokenizer.from_vocab(tmp_path)
    with pytest.raises(DataError, match="not found"):
        ChineseTokenizer.from_dir(tmp_path / "nope")


# -- vocab builder ---------------------------------------------------------------------

CORPUS = """\
北京是中国的首都，也是一座历史悠久的城市。
我用iPhone13拍了2023年的照片，效果很好。
Transformer模型在自然语言处理中非常流行，transformers库也很好用。
机器学习和深度学习是人工智能的重要分支。
今天天气晴朗，我们去颐和园划船。
"""


def _write_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS * 3, encoding="utf-8")
    return path


def test_build_vocab_layout_and_coverage(tmp_path):
    out = build_vocab([_write_corpus(tmp_path)], tmp_path / "v" / "vocab.txt", size=2000, fmt="plain")
    tokens = out.read_text(encoding="utf-8").splitlines()
    assert tokens[:104] == special_layout()
    assert tokens[0] == "[PAD]" and tokens[1] == "[unused1]" and tokens[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(tokens) == len(set(tokens)) <= 2000
    assert {"!", ",", "0", "9", "a", "##3"} <= set(tokens)  # ASCII always present
    assert {"，", "。", "《", "颐", "iphone13", "transformer"} <= set(tokens)  # "，" even though the corpus reader made it ","
    tok = ChineseTokenizer.from_vocab(out)
    held_out = "北京的天气很好,我用Transformer模型处理照片2023。"  # only characters seen in the corpus
    ids, _ = tok.encode(held_out)
    assert tok.unk_id not in ids
    assert tok.tokenize("颐和园") == ["颐", "和", "园"]
    assert tok.encode("鑫")[0] == [tok.unk_id]  # unseen character


def test_build_vocab_size_and_frequency_order(tmp_path):
    corpus = _write_corpus(tmp_path)
    out = build_vocab(corpus, tmp_path / "small.txt", size=260, fmt="plain")
    tokens = out.read_text(encoding="utf-8").splitlines()
    assert len(tokens) == 260  # 104 special + 128 always-included + 28 characters
    cjk = [t for t in tokens[104:] if len(t) == 1 and unicodedata.name(t, "").startswith("CJK")]
    assert cjk and cjk[0] in "的是好我"  # most frequent characters come first
    counted = build_vocab(corpus, tmp_path / "minfreq.txt", size=5000, fmt="plain", min_freq=4)
    assert "颐" not in counted.read_text(encoding="utf-8").splitlines()  # seen 3 times only


def test_build_vocab_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no documents"):
        build_vocab(empty, tmp_path / "v.txt", fmt="plain")
    with pytest.raises(ValueError, match="too small"):
        build_vocab(_write_corpus(tmp_path), tmp_path / "v.txt", size=50)


def test_build_vocab_on_wiki_sample(shared_data, tmp_path):
    wiki = shared_data / "pretrain_corpus" / "zhwiki_sample" / "wiki_00"
    if not wiki.is_file():
        pytest.skip(f"{wiki} not present")
    out = build_vocab(wiki, tmp_path / "vocab.txt", size=6000)
    tok = ChineseTokenizer.from_vocab(out)
    assert tok.vocab_size == 6000 and tok.tokens[:104] == special_layout()
    assert tok.tokenize("数学是利用符号语言研究数量") == list("数学是利用符号语言研究数量")


def test_vocab_build_is_reproducible_and_matches_the_committed_sample_vocab(tmp_path):
    """`zhbert vocab build` on corpora/sample gives byte-identical output run after run, and
    the committed configs/vocab/sample_vocab.txt is exactly what it builds."""
    repo = Path(__file__).resolve().parents[1]
    a = build_vocab([repo / "corpora" / "sample"], tmp_path / "a.txt")
    b = build_vocab([repo / "corpora" / "sample"], tmp_path / "b.txt")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() == (repo / "configs" / "vocab" / "sample_vocab.txt").read_bytes()
    tok = ChineseTokenizer.from_vocab(a)
    assert "[UNK]" not in tok.tokenize("BERT模型在GPU上训练")


@pytest.mark.parametrize("fullwidth", [False, True])
def test_auto_tokenizer_on_an_export_gives_the_pretraining_ids_on_every_clue_dev_line(
        bert_chinese_vocab, shared_data, tmp_path, fullwidth):
    """Pretraining ids of a raw line = ids of the corpus-normalised line (what `zhbert prepare`
    and `zhbert eval clue` feed the model); AutoTokenizer on the export must give them on the
    raw line, with the full-width folding on and off."""
    from zhbert.clue.data import dev_strings

    strings = dev_strings(shared_data / "clue")
    assert len(strings) > 50_000
    tok = ChineseTokenizer.from_vocab(bert_chinese_vocab)
    tok.normalization = {"fullwidth": fullwidth, "t2s": False}
    tok.save(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    pretraining = [ids for ids, _ in tok.encode_batch([tok.normalize(s) for s in strings])]
    assert auto(strings, add_special_tokens=False)["input_ids"] == pretraining
    assert [ids for ids, _ in tok.encode_batch(strings)] == pretraining  # zhbert on raw text too
    if fullwidth:  # the folding is really there, and it matters on this text
        assert "Replace" in (tmp_path / "tokenizer.json").read_text()
        plain = ChineseTokenizer.from_vocab(bert_chinese_vocab)
        changed = sum(a != b for a, b in zip(pretraining, (ids for ids, _ in plain.encode_batch(strings))))
        assert changed > len(strings) // 10
