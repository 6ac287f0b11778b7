"""CMRC 2018 span extraction (zhbert.clue.span): reading, windows, char<->token mapping, decoding.

Fixtures in tests/fixtures/clue/cmrc2018 are small hand-written files in the official SQuAD-style
layout (train/dev/trial/test.json). TRAIN_0's context is 150 Chinese characters and punctuation
marks, one token each (token i = character i), so that its windows can be worked out by hand:
with a 10-token question, max_seq_length=64 and doc_stride=32 a window holds 64 - 10 - 3 = 51
context tokens and the windows are [0, 51) [32, 83) [64, 115) [96, 147) [128, 150); in a window
starting at context token a, context token d sits at input position d - a + 12 ([CLS], 10 question
tokens, [SEP]). The tests against the real CLUE files (bert-base-chinese vocab, ../shared/data)
are skipped when those are absent.
"""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import numpy as np
import pytest

from zhbert.clue.span import (QAExample, best_answers, char_to_token_span, context_for_encoding, context_offsets,
                              doc_windows, load_cmrc, max_context_flags, qa_features, token_span_text,
                              write_predictions)
from zhbert.errors import DataError
from zhbert.prep.tokenizer import ChineseTokenizer, special_layout

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "clue" / "cmrc2018"
LONG = ("青石镇位于云岭山脉东麓，是一座有六百年历史的古镇。镇上的石桥建于明朝初年，全长八十米，由当地工匠用青石砌成。"
        "每年春天，镇民都会在桥头举办庙会，吸引周边村落的商贩前来。古镇以出产竹编闻名，工艺在清朝中期达到鼎盛，产品远销江南各地。"
        "近年来，镇政府修缮了老街的民居，并开设了竹编博物馆，向游客展示传统技艺。")
PHONE = "苹果公司于2018年9月发布了iPhone XS和iPhone XS Max，其中iPhone XS Max的起售价比上一代上涨了3.5%。"
WINDOWS = [(0, 51), (32, 83), (64, 115), (96, 147), (128, 150)]


def _fixture_chars() -> set[str]:
    chars = set()
    for f in FIX.glob("*.json"):
        for art in json.loads(f.read_text(encoding="utf-8"))["data"]:
            for para in art["paragraphs"]:
                chars |= set(para["context"])
                for qa in para["qas"]:
                    chars |= set(qa["question"])
    return chars


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> ChineseTokenizer:
    """Every non-ASCII character of the fixtures (+ 汉语模型叫什么很强, not 漢/語/麼), ASCII letters,
    digits and punctuation (also as ## pieces) and the words iphone, max, bert, 20, ##18.
    So "2018" -> 20 ##18, "XS" -> x ##s, "iPhone" -> iphone."""
    extra = set("汉语模型叫什么很强")
    cjk = sorted(c for c in _fixture_chars() | extra if not c.isascii() and not c.isspace())
    ascii_ = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
    tokens = special_layout() + cjk + ascii_ + pieces + ["iphone", "max", "bert", "20", "##18"]
    path = tmp_path_factory.mktemp("tiny") / "vocab.txt"
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return ChineseTokenizer.from_vocab(path)


@pytest.fixture(scope="module")
def bert(bert_chinese_vocab) -> ChineseTokenizer:
    return ChineseTokenizer.from_vocab(bert_chinese_vocab)


@pytest.fixture(scope="module")
def cmrc_dir(shared_data) -> Path:
    d = shared_data / "clue" / "cmrc2018"
    if not (d / "cmrc2018_dev.json").is_file():
        pytest.skip(f"{d} has no cmrc2018_dev.json")
    return d


def _by_id(examples) -> dict[str, QAExample]:
    return {e.id: e for e in examples}


# ------------------------------------------------------------------ reading


def test_fixture_files_load_with_answer_checks():
    train = load_cmrc(FIX / "train.json", train=True)
    # TRAIN_0_QUERY_5 ("两座", not in the context) is dropped with its only answer
    assert [e.id for e in train] == [f"TRAIN_0_QUERY_{k}" for k in (0, 1, 2, 3, 4, 6)] + [
        f"TRAIN_1_QUERY_{k}" for k in range(3)]
    assert (train.relocated, train.unlocated, train.dropped, train.dropped_questions) == (1, 0, 2, 1)
    t = _by_id(train)
    assert t["TRAIN_0_QUERY_4"].answer_starts == [68]  # "庙会" given at 70, occurs once: moved to 68
    # first answer "青石" at 10 (wrong) occurs twice (青石镇, 用青石): dropped; the second stays
    assert (t["TRAIN_0_QUERY_6"].answers, t["TRAIN_0_QUERY_6"].answer_starts) == (["青石"], [49])
    assert t["TRAIN_0_QUERY_1"].answer_starts == [49]  # the given start, not the first occurrence (0)
    assert t["TRAIN_1_QUERY_0"].answer_starts == [41]  # second "iPhone XS Max"
    assert t["TRAIN_0_QUERY_6"].where == f"{FIX / 'train.json'}: data[0].paragraphs[0].qas[6]"
    assert t["TRAIN_1_QUERY_2"].where.endswith("train.json: data[1].paragraphs[0].qas[2]")
    assert t["TRAIN_0_QUERY_0"].context == LONG and len(LONG) == 150

    as_dev = _by_id(load_cmrc(FIX / "train.json"))  # train=False: kept by text, start -1
    assert (as_dev["TRAIN_0_QUERY_5"].answers, as_dev["TRAIN_0_QUERY_5"].answer_starts) == (["两座"], [-1])
    assert as_dev["TRAIN_0_QUERY_6"].answer_starts == [-1, 49]

    dev = load_cmrc(FIX / "dev.json")
    assert (len(dev), dev.relocated, dev.unlocated, dev.dropped) == (4, 1, 1, 0)
    d = _by_id(dev)
    assert d["DEV_0_QUERY_0"].answers == ["Star Trek", " Star Trek", "Star Trek"]  # repeats kept, in file order
    assert d["DEV_0_QUERY_0"].answer_starts == [34, 33, 34]
    assert d["DEV_0_QUERY_1"].answer_starts == [15, 15, 15]  # "1966" given at 18: moved to 15
    assert (d["DEV_0_QUERY_2"].answers, d["DEV_0_QUERY_2"].answer_starts) == (["29集", "共29集", "29集"], [49, -1, 49])

    trial = load_cmrc(FIX / "trial.json")  # TRIAL_210's fault: starts one character too far
    assert trial.relocated == 2 and [e.answer_starts for e in trial] == [[17], [25], [6]]

    test = load_cmrc(FIX / "test.json", labeled=False)
    assert [(e.id, e.answers, e.answer_starts) for e in test] == [
        ("TEST_0_QUERY_0", [], []), ("TEST_0_QUERY_1", [], []), ("TEST_1_QUERY_0", [], [])]
    assert test[2].context == "外白渡桥位于苏州河与黄浦江交汇处，是中国第一座全钢结构铆接桥梁。"
    assert load_cmrc(FIX / "test.json").unlocated == 9  # FAKE_ANSWER_1..3: not spans (read with labeled=False)

    assert [e.id for e in load_cmrc(FIX / "train.json", limit=2)] == ["TRAIN_0_QUERY_0", "TRAIN_0_QUERY_1"]
    assert len(load_cmrc(FIX / "train.json", train=True, limit=6)) == 5  # the dropped question counts
    assert load_cmrc(FIX / "dev.json", limit=0) == []


def _doc(qas, context="北京是中国的首都。"):
    return {"version": "v1.0", "data": [{"id": "D0", "title": "t", "paragraphs": [
        {"id": "D0", "context": context, "qas": qas}]}]}


def _qa(qid, start, text="北京"):
    return {"question": "首都是哪里？", "id": qid, "answers": [{"text": text, "answer_start": start}]}


@pytest.mark.parametrize("content, where, message", [
    ('{"version": "v1.0",\n "data": [\n {"paragraphs": [}\n]}', ":3:", "malformed JSON"),
    (_doc([_qa("Q0", 0)]) | {"data": [{"paragraphs": [{"id": "D0", "qas": []}]}]},
     "data[0].paragraphs[0]", "missing key 'context'"),
    (_doc([_qa("Q0", 0), _qa("Q1", "0")]), "data[0].paragraphs[0].qas[1].answers[0].answer_start",
     "expected int, got str"),
    (_doc([_qa("Q0", 0), _qa("Q1", 99)]), "data[0].paragraphs[0].qas[1].answers[0]",
     "answer_start 99 is outside the context (9 characters"),
    (_doc([_qa("Q0", -2)]), "data[0].paragraphs[0].qas[0].answers[0]", "answer_start -2 is outside"),
    (_doc([_qa("Q0", True)]), "qas[0].answers[0].answer_start", "expected int, got bool"),
    (_doc([_qa("Q0", 0, " ")]), "data[0].paragraphs[0].qas[0].answers[0]", "blank answer text"),
    (_doc([{"question": "首都？", "id": "Q0", "answers": []}]), "data[0].paragraphs[0].qas[0]", "no answers"),
    (_doc([{"question": "首都？", "id": "Q0"}]), "data[0].paragraphs[0].qas[0]", "missing key 'answers'"),
    (_doc([{"id": "Q0", "answers": []}]), "data[0].paragraphs[0].qas[0]", "missing key 'question'"),
    (_doc([_qa("Q0", 0), _qa("Q0", 0)]), "data[0].paragraphs[0].qas[1]",
     "'Q0' already used at data[0].paragraphs[0].qas[0]"),
    ({"version": "v1.0"}, "top level", "missing key 'data'"),
    ([1, 2], "top level", "expected a JSON object, got list"),
])
def test_load_errors_name_file_and_json_path(tmp_path, content, where, message):
    path = tmp_path / "cmrc.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_cmrc(path)
    assert str(path) in str(e.value) and where in str(e.value) and message in str(e.value), str(e.value)


def test_unlabeled_reading_ignores_answers_and_missing_files_are_data_errors(tmp_path):
    path = tmp_path / "test.json"
    path.write_text(json.dumps(_doc([{"question": "首都？", "id": 7}])), encoding="utf-8")
    assert [(e.id, e.answers) for e in load_cmrc(path, labeled=False)] == [("7", [])]  # int ids become str
    with pytest.raises(DataError, match="missing key 'answers'"):
        load_cmrc(path)
    with pytest.raises(DataError, match="file not found"):
        load_cmrc(tmp_path / "nope.json")
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_doc([_qa("Q0", 0)])).encode())  # a BOM is fine
    assert load_cmrc(path)[0].answers == ["北京"]


# ------------------------------------------------------------------ windows and labels


def test_doc_windows_follow_run_squad():
    assert doc_windows(150, 51, 32) == WINDOWS  # the last window ends at the end, shorter
    assert doc_windows(51, 51, 32) == [(0, 51)]
    assert doc_windows(52, 51, 32) == [(0, 51), (32, 52)]
    assert doc_windows(0, 51, 32) == []
    assert doc_windows(10, 4, 8) == [(0, 4), (4, 8), (8, 10)]  # stride > window: step = window (min(length, stride))
    with pytest.raises(ValueError):
        doc_windows(10, 0, 8)


def test_max_context_rule_by_hand():
    flags = max_context_flags(WINDOWS)
    # token 40: [0,51) scores min(40, 10) + .51 = 10.51, [32,83) min(8, 42) + .51 = 8.51 -> first window
    assert flags[0][40] and not flags[1][40 - 32]
    # token 41: 9.51 in both -> tie -> the first window; token 42: 8.51 vs 10.51 -> the second
    assert flags[0][41] and not flags[1][41 - 32]
    assert not flags[0][42] and flags[1][42 - 32]
    # token 48 (min(48,2)=2 vs min(16,34)=16): second window; every token has exactly one window
    assert flags[1][48 - 32] and not flags[0][48]
    owners = [sum(f[p - a] for f, (a, b) in zip(flags, WINDOWS) if a <= p < b) for p in range(150)]
    assert owners == [1] * 150
    # last two windows [96,147) and [128,150): token 140 -> min(44, 6)+.51 vs min(12, 9)+.24 -> the last
    assert flags[4][140 - 128] and not flags[3][140 - 96]


# Hand-worked labels, window by window (0/0 = answer not wholly inside the window).
EXPECTED_POSITIONS = {
    # "八十米" = tokens 39..41, in the overlap of windows 0 and 1: 39+12=51..53 and 39-32+12=19..21
    "TRAIN_0_QUERY_0": [(51, 53), (19, 21), (0, 0), (0, 0), (0, 0)],
    # "青石" = tokens 49..50: 50 is the LAST token of window 0 (input position 62, then [SEP] at 63)
    "TRAIN_0_QUERY_1": [(61, 62), (29, 30), (0, 0), (0, 0), (0, 0)],
    # "清朝中期" = tokens 96..99: 96 is the FIRST context token of window 3 (input position 12)
    "TRAIN_0_QUERY_2": [(0, 0), (0, 0), (44, 47), (12, 15), (0, 0)],
    # "传统技艺" = tokens 145..148: window 3 ends at 146, holds half of it -> 0/0; only the last window
    "TRAIN_0_QUERY_3": [(0, 0), (0, 0), (0, 0), (0, 0), (29, 32)],
    # "庙会" relocated to 68..69: windows 1 and 2
    "TRAIN_0_QUERY_4": [(0, 0), (48, 49), (16, 17), (0, 0), (0, 0)],
    "TRAIN_0_QUERY_6": [(61, 62), (29, 30), (0, 0), (0, 0), (0, 0)],
}


@pytest.mark.parametrize("which", ["tiny", "bert"])
def test_windows_and_labels_by_hand(request, which):
    tok = request.getfixturevalue(which)
    examples = [e for e in load_cmrc(FIX / "train.json", train=True) if e.id.startswith("TRAIN_0")]
    ids, offsets = context_offsets(tok, [LONG])[0]
    assert offsets == [(i, i + 1) for i in range(150)]  # one token per character
    features = qa_features(tok, examples, max_seq_length=64, doc_stride=32, max_query_length=64, train=True)
    assert [f.example for f in features] == [i for i in range(6) for _ in range(5)]
    assert [f.window for f in features] == WINDOWS * 6
    for ei, ex in enumerate(examples):
        feats = [f for f in features if f.example == ei]
        assert [(f.start_position, f.end_position) for f in feats] == EXPECTED_POSITIONS[ex.id], ex.id
        for f in feats:
            if f.start_position:
                assert token_span_text(ex.context, f.offsets, f.start_position, f.end_position) == ex.answers[0]
    f = features[1]  # TRAIN_0_QUERY_0, window [32, 83)
    q = [tok.vocab[c] for c in "青石镇石桥全长多少？"]
    assert f.input_ids == [tok.cls_id, *q, tok.sep_id, *ids[32:83], tok.sep_id] and len(f.input_ids) == 64
    assert f.token_type_ids == [0] * 12 + [1] * 52 and f.attention_mask == [1] * 64
    assert f.offsets[:12] == [None] * 12 and f.offsets[12] == (32, 33) and f.offsets[62] == (82, 83)
    assert f.offsets[63] is None
    assert len(features[4].input_ids) == 12 + 22 + 1  # the last window: 22 tokens
    # without train=True nothing is labelled
    assert {(g.start_position, g.end_position) for g in qa_features(tok, examples, 64, 32)} == {(0, 0)}


def test_question_truncation_and_guards(tiny):
    ex = load_cmrc(FIX / "train.json")[0]
    f = qa_features(tiny, [ex], max_seq_length=64, doc_stride=32, max_query_length=4)
    assert f[0].input_ids[:6] == [tiny.cls_id, *[tiny.vocab[c] for c in "青石镇石"], tiny.sep_id]
    assert f[0].window == (0, 64 - 4 - 3)
    # max_seq_length=8 keeps at most 4 question tokens so that a window holds one token at least
    f = qa_features(tiny, [ex], max_seq_length=8, doc_stride=1)
    assert len(f) == 150 and f[0].input_ids[:6] == [tiny.cls_id, *[tiny.vocab[c] for c in "青石镇石"], tiny.sep_id]
    with pytest.raises(ValueError):
        qa_features(tiny, [ex], max_seq_length=4)
    with pytest.raises(ValueError, match="no answer with a position"):
        qa_features(tiny, load_cmrc(FIX / "dev.json")[2:3] + [QAExample("X", "问", "北京", ["上海"], [-1], "here")],
                    train=True)


# ------------------------------------------------------------------ characters <-> tokens


def test_latin_and_digit_answers_map_back_to_the_original_characters(tiny):
    assert tiny.tokenize(PHONE) == [
        "苹", "果", "公", "司", "于", "20", "##18", "年", "9", "月", "发", "布", "了",
        "iphone", "x", "##s", "和", "iphone", "x", "##s", "max", "，", "其", "中",
        "iphone", "x", "##s", "max", "的", "起", "售", "价", "比", "上", "一", "代", "上", "涨", "了",
        "3", ".", "5", "%", "。"]
    _, offsets = context_offsets(tiny, [PHONE])[0]
    # (answer, start char) -> token span -> original characters
    cases = {
        ("iPhone XS Max", 41): ((24, 27), "iPhone XS Max"),  # case and the spaces between tokens kept
        ("2018年9月", 5): ((5, 9), "2018年9月"),  # 20 ##18 年 9 月
        ("3.5%", 65): ((39, 42), "3.5%"),  # 3 . 5 %
        ("XS", 48): ((25, 26), "XS"),  # x ##s: two whole pieces
        ("S", 49): ((26, 26), "S"),  # the piece ##s alone
        ("18年", 7): ((6, 7), "18年"),  # ##18 年: whole pieces
        # half a piece cannot come back: the whole piece does
        ("Phone", 42): ((24, 24), "iPhone"),  # inside "iphone"
        ("8年", 8): ((6, 7), "18年"),  # half of ##18
        ("01", 6): ((5, 6), "2018"),  # halves of 20 and ##18
    }
    for (text, start), (span, back) in cases.items():
        assert PHONE[start:start + len(text)] == text
        got = char_to_token_span(offsets, start, start + len(text))
        assert got == span and token_span_text(PHONE, offsets, *got) == back, text
    assert char_to_token_span(offsets, 47, 48) is None  # the space between "iPhone" and "XS"
    assert char_to_token_span(offsets, 47, 50) == (25, 26)  # " XS": leading space dropped


def test_latin_answers_with_bert_base_chinese(bert):
    ids, offsets = context_offsets(bert, [PHONE])[0]
    toks = [bert.tokens[i] for i in ids]
    assert toks[5:8] == ["2018", "年", "9"] and toks[12:15] == ["iphone", "x", "##s"]
    for text, start in (("iPhone XS Max", 41), ("2018年9月", 5), ("3.5%", 65), ("XS", 48), ("S", 49)):
        span = char_to_token_span(offsets, start, start + len(text))
        assert token_span_text(PHONE, offsets, *span) == text
    # with this vocab 2018 is one token: "18年" gets "2018年" back
    assert token_span_text(PHONE, offsets, *char_to_token_span(offsets, 7, 10)) == "2018年"
    # the docstring example
    text = "iPhone XS Max的价格"
    ids, offsets = context_offsets(bert, [text])[0]
    assert [bert.tokens[i] for i in ids] == ["iphone", "x", "##s", "max", "的", "价", "格"]
    assert offsets == [(0, 6), (7, 8), (8, 9), (10, 13), (13, 14), (14, 15), (15, 16)]
    assert token_span_text(text, offsets, *char_to_token_span(offsets, 7, 13)) == "XS Max"
    assert token_span_text(text, offsets, *char_to_token_span(offsets, 1, 6)) == "iPhone"


def test_round_trip_of_every_answer_of_the_real_dev_and_trial_files(bert, cmrc_dir):
    """char span -> token span -> characters, for every answer of cmrc2018_dev.json and
    cmrc2018_trial.json. The exceptions are counted, class by class, so that any change of the
    mapping (or the tokenizer's offsets) shows up here."""
    results = {}
    for name in ("cmrc2018_dev.json", "cmrc2018_trial.json"):
        examples = load_cmrc(cmrc_dir / name)
        encoded = context_offsets(bert, [e.context for e in examples])
        counts = {"answers": 0, "no position": 0, "exact": 0, "whitespace": 0, "piece": 0, "no token": 0}
        pieces = []
        for ex, (_, offsets) in zip(examples, encoded):
            for text, start in zip(ex.answers, ex.answer_starts):
                counts["answers"] += 1
                if start < 0:
                    counts["no position"] += 1
                    continue
                span = char_to_token_span(offsets, start, start + len(text))
                if span is None:
                    counts["no token"] += 1
                    continue
                back = token_span_text(ex.context, offsets, *span)
                if back == text:
                    counts["exact"] += 1
                elif back == text.strip():
                    counts["whitespace"] += 1
                else:
                    counts["piece"] += 1
                    pieces.append((ex.id, text, back))
        results[name] = (len(examples), examples.relocated, examples.unlocated, counts, pieces)

    n, relocated, unlocated, counts, pieces = results["cmrc2018_dev.json"]
    assert (n, relocated, unlocated) == (3219, 7, 193)
    # 193 answers (start -1) are not in their context at all: annotators rewrote the span, e.g.
    # DEV_10_QUERY_2 "39764.0"; they are scored by text and have nothing to round-trip.
    # 13 answers start or end with a space (DEV_158_QUERY_1 " 1999年", DEV_570_QUERY_0 " E23 "):
    # no token covers a space, the tokens give the stripped text (the official scorer strips too).
    # 3 answers cut a wordpiece: DEV_379_QUERY_2's "4个" (twice) annotated inside "34个", and
    # DEV_1933_QUERY_4's "30米" annotated at 53, inside "4530米" (453 ##0), instead of at 299.
    assert counts == {"answers": 9657, "no position": 193, "exact": 9448, "whitespace": 13, "piece": 3,
                      "no token": 0}
    assert pieces == [("DEV_379_QUERY_2", "4个", "34个"), ("DEV_379_QUERY_2", "4个", "34个"),
                      ("DEV_1933_QUERY_4", "30米", "4530米")]

    n, relocated, unlocated, counts, pieces = results["cmrc2018_trial.json"]
    # 5 starts one character off (TRIAL_210), each text once in its context: moved
    assert (n, relocated, unlocated) == (1002, 5, 0)
    # 3 answers with a leading/trailing space, among them TRIAL_161_QUERY_2's " יִרְמְיָהוּ",
    # which ends with a combining mark (see the next test)
    assert counts == {"answers": 1002, "no position": 0, "exact": 999, "whitespace": 3, "piece": 0, "no token": 0}


def test_trailing_combining_marks_stay_with_their_token(bert, tiny):
    """BERT's accent stripping deletes combining marks and the tokenizer's span of a word then
    ends before its last mark; context_offsets extends the span over it."""
    word = "\u05d9\u05b4\u05e8\u05b0\u05de\u05b0\u05d9\u05b8\u05d4\u05d5\u05bc"  # TRIAL_161_QUERY_2's, ends with U+05BC
    text = f"他的名字是{word}。"
    start = text.index(word)
    raw = bert.encode(text)[1]
    assert raw[-2][1] == start + len(word) - 1  # the tokenizer's own span stops one short
    _, offsets = context_offsets(bert, [text])[0]
    assert token_span_text(text, offsets, *char_to_token_span(offsets, start, start + len(word))) == word
    assert offsets[:-2] == raw[:-2] and offsets[-1] == raw[-1]  # nothing else moves
    # e + U+0301 (decomposed é): tiny tokenizes "cafe" as c ##a ##f ##e, the mark joins ##e
    assert tiny.tokenize("Cafe\u0301") == ["c", "##a", "##f", "##e"]
    assert context_offsets(tiny, ["Cafe\u0301"])[0][1] == [(0, 1), (1, 2), (2, 3), (3, 5)]
    assert context_offsets(tiny, ["Café"])[0][1] == [(0, 1), (1, 2), (2, 3), (3, 4)]  # precomposed


# ------------------------------------------------------------------ normalization


def test_normalised_context_keeps_offsets_into_the_original(tmp_path, tiny):
    tok = ChineseTokenizer(tiny.tokens)
    assert "漢" not in tok.vocab and "語" not in tok.vocab
    assert context_for_encoding(tok, "漢語  模型") == "漢語  模型"  # no normalization recorded: identity
    tok.normalization = {"fullwidth": True, "t2s": True}
    v = tok.vocab
    # same length after normalisation (t2s and full-width folding, character for character)
    context = "漢語模型ＢＥＲＴ很强"
    assert context_for_encoding(tok, context) == "汉语模型BERT很强"
    # "  " collapses to " ": the length changes, the raw context is tokenized (漢/語 are not in the vocab)
    assert context_for_encoding(tok, "漢語  模型") == "漢語  模型"

    ex = QAExample("Q", "漢語模型叫什麼？", context, ["ＢＥＲＴ"], [4], "here")
    raw = QAExample("R", "漢語模型叫什麼？", "漢語  模型", ["模型"], [4], "here")
    f, g = qa_features(tok, [ex, raw], max_seq_length=64, train=True)
    question = [v[c] for c in "汉语模型叫什么"] + [v["?"]]  # normalised: t2s and "？" -> "?"
    assert f.input_ids == [tok.cls_id, *question, tok.sep_id, v["汉"], v["语"], v["模"], v["型"], v["bert"],
                           v["很"], v["强"], tok.sep_id]
    assert f.offsets[10:17] == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 8), (8, 9), (9, 10)]
    assert (f.start_position, f.end_position) == (14, 14)
    assert g.input_ids[10:14] == [tok.unk_id, tok.unk_id, v["模"], v["型"]]
    assert g.offsets[10:14] == [(0, 1), (1, 2), (4, 5), (5, 6)] and (g.start_position, g.end_position) == (12, 13)
    # the answer comes out in the original, full-width characters
    sl, el = np.full((2, 64), -5.0), np.full((2, 64), -5.0)
    sl[0, 14] = el[0, 14] = 3.0  # bert
    sl[1, 10] = el[1, 11] = 3.0  # [UNK] [UNK]
    assert best_answers([ex, raw], [f, g], sl, el) == {"Q": "ＢＥＲＴ", "R": "漢語"}


# ------------------------------------------------------------------ decoding


@pytest.fixture(scope="module")
def long_features(tiny):
    ex = load_cmrc(FIX / "train.json")[0]  # TRAIN_0_QUERY_0, 10-token question
    feats = qa_features(tiny, [ex], max_seq_length=64, doc_stride=32)
    assert [f.window for f in feats] == WINDOWS
    return ex, feats


def _decode(ex, feats, starts: dict, ends: dict, **kw) -> str:
    """starts/ends: {(window, input position): logit}, everything else -10."""
    sl = [np.full(len(f.input_ids), -10.0) for f in feats]
    el = [np.full(len(f.input_ids), -10.0) for f in feats]
    for marks, logits in ((starts, sl), (ends, el)):
        for (w, pos), value in marks.items():
            logits[w][pos] = value
    return best_answers([ex], feats, sl, el, **kw)[ex.id]


def _pos(w: int, token: int) -> int:
    """Input position of context token `token` in window w."""
    return token - WINDOWS[w][0] + 12


def test_best_answers_picks_the_best_valid_span(long_features):
    ex, feats = long_features
    # two valid spans: 八十米 (39..41, 5+5) beats 青石镇 (0..2, 3+3)
    assert _decode(ex, feats, {(0, _pos(0, 39)): 5, (0, _pos(0, 0)): 3},
                   {(0, _pos(0, 41)): 5, (0, _pos(0, 2)): 3}) == "八十米"
    # [CLS], question tokens, the final [SEP] and end < start are ignored, however high
    assert _decode(ex, feats, {(0, 0): 20, (0, 3): 20, (0, 63): 20, (0, _pos(0, 45)): 9, (0, _pos(0, 0)): 1},
                   {(0, 0): 20, (0, 5): 20, (0, 63): 20, (0, _pos(0, 44)): 9, (0, _pos(0, 2)): 1}) == "青石镇"
    # nothing valid: ""
    assert _decode(ex, feats, {(0, 0): 20}, {(0, 0): 20}, n_best_size=1) == ""
    assert best_answers([ex], [], [], []) == {ex.id: ""}  # no features at all


def test_best_answers_respects_max_answer_length(long_features):
    ex, feats = long_features
    starts, ends = {(0, _pos(0, 0)): 5}, {(0, _pos(0, 30)): 5, (0, _pos(0, 29)): 1}
    assert _decode(ex, feats, starts, ends) == LONG[:30]  # 0..30 is 31 tokens: too long
    assert _decode(ex, feats, starts, ends, max_answer_length=31) == LONG[:31]


def test_best_answers_prefers_the_max_context_window_and_merges_windows(long_features):
    ex, feats = long_features
    # token 48 has max context in window 1 (min(16, 34) > min(48, 2)): window 0's higher-scoring
    # start there (8 + 8) is not valid, window 1's (3 + 3) is
    starts = {(0, _pos(0, 48)): 8, (1, _pos(1, 48)): 3}
    ends = {(0, _pos(0, 49)): 8, (1, _pos(1, 50)): 3}
    assert _decode(ex, feats, starts, ends) == "用青石"  # window 1's 48..50, not window 0's 48..49 "用青"
    # token 40 has max context in window 0: there it wins over window 1's higher score
    starts = {(0, _pos(0, 40)): 3, (1, _pos(1, 40)): 8}
    ends = {(0, _pos(0, 41)): 3, (1, _pos(1, 42)): 8}
    assert _decode(ex, feats, starts, ends) == "十米"
    # an end token need not have max context (run_squad.py checks the start only)
    assert _decode(ex, feats, {(0, _pos(0, 40)): 3}, {(0, _pos(0, 50)): 3}) == LONG[40:51]
    # best over all windows of the example: the last window's 传统技艺 (4+4) over window 0's 八十米 (3+3)
    starts = {(0, _pos(0, 39)): 3, (4, _pos(4, 145)): 4}
    ends = {(0, _pos(0, 41)): 3, (4, _pos(4, 148)): 4}
    assert _decode(ex, feats, starts, ends) == "传统技艺"


def test_best_answers_several_examples_padding_and_original_text(tiny, long_features):
    ex, feats = long_features
    phone = load_cmrc(FIX / "train.json")[7]  # TRAIN_1_QUERY_0
    pf = qa_features(tiny, [ex, phone], max_seq_length=64, doc_stride=32)
    assert [f.example for f in pf] == [0] * 5 + [1]
    assert len(pf[5].input_ids) == 1 + 12 + 1 + 44 + 1  # question 哪款手机的起售价上涨了？ = 12 tokens
    pad = 64  # rows padded to 64; padding positions carry huge logits and must be ignored
    sl = np.full((6, pad), -10.0)
    el = np.full((6, pad), -10.0)
    sl[5, 14 + 24], el[5, 14 + 27] = 2, 2  # tokens 24..27 = iphone x ##s max
    sl[5, 60], el[5, 62] = 50, 50  # padding
    sl[2, _pos(2, 96)], el[2, _pos(2, 99)] = 1, 1
    assert best_answers([ex, phone], pf, sl, el) == {ex.id: "清朝中期", phone.id: "iPhone XS Max"}
    with pytest.raises(ValueError):
        best_answers([ex, phone], pf, sl[:5], el[:5])
    with pytest.raises(ValueError):
        best_answers([ex, phone], pf, sl[:, :20], el[:, :20])


def test_oracle_logits_on_the_real_dev_file(bert, cmrc_dir):
    """Windows, labels and decoding together on all of cmrc2018_dev.json (max_seq_length=512,
    doc_stride=128): logits 1 at each window's labelled start/end decode to the first answer."""
    examples = load_cmrc(cmrc_dir / "cmrc2018_dev.json")
    assert all(e.answer_starts[0] >= 0 for e in examples)  # every first answer has a position
    feats = qa_features(bert, examples, max_seq_length=512, doc_stride=128, train=True)
    # number of windows: 1 if the context fits, else 1 + ceil((n - L) / 128), L = 512 - len(q) - 3
    encoded = context_offsets(bert, [e.context for e in examples])
    q_tokens = [min(64, len(ids)) for ids, _ in bert.encode_batch([e.question for e in examples])]
    expected = [1 if len(ids) <= 509 - q else 1 + math.ceil((len(ids) - (509 - q)) / 128)
                for (ids, _), q in zip(encoded, q_tokens)]
    assert len(feats) == sum(expected) and max(len(f.input_ids) for f in feats) == 512
    sl = [np.zeros(len(f.input_ids)) for f in feats]
    el = [np.zeros(len(f.input_ids)) for f in feats]
    labelled = set()
    for f, s, e in zip(feats, sl, el):
        if f.start_position:
            s[f.start_position] = e[f.end_position] = 1.0
            labelled.add(f.example)
    assert labelled == set(range(len(examples)))  # every answer fits wholly in some window
    preds = best_answers(examples, feats, sl, el, max_answer_length=512)
    wrong = []
    for ex, (_, offsets) in zip(examples, encoded):
        text, start = ex.answers[0], ex.answer_starts[0]
        span = char_to_token_span(offsets, start, start + len(text))
        assert preds[ex.id] == token_span_text(ex.context, offsets, *span), ex.id
        if preds[ex.id] != text:
            wrong.append((ex.id, text, preds[ex.id]))
    # the one first answer that does not round-trip (see the round-trip test)
    assert wrong == [("DEV_379_QUERY_2", "4个", "34个")]


def test_write_predictions_is_the_clue_submission_format(tmp_path):
    path = tmp_path / "out" / "cmrc2018_predict.json"
    preds = {"TEST_0_QUERY_0": "提康德罗加级", "TEST_0_QUERY_1": "USS Port Royal", "TEST_1_QUERY_0": ""}
    write_predictions(path, preds)
    raw = path.read_text(encoding="utf-8")
    assert "提康德罗加级" in raw and "\\u" not in raw  # ensure_ascii=False
    assert json.loads(raw) == preds and list(json.loads(raw)) == list(preds)
