"""zhbert.clue.cmrc_eval: the official CMRC 2018 scorer (v6) and its nltk-free word tokenizer.

Expected values are worked out by hand from the official script's rules (the working is in
the comments), not produced by running the module. Where nltk is importable, the tokenizer
is also compared with nltk's own NLTKWordTokenizer and PunktSentenceTokenizer (given the same
stand-in abbreviation list, since punkt's English model cannot be downloaded here).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zhbert.clue.cmrc_eval import (
    PUNKT_ABBREVIATIONS,
    SP_CHARS,
    calc_em_score,
    calc_f1_score,
    evaluate,
    evaluate_files,
    find_lcs,
    gold_answers,
    mixed_segmentation,
    official_summary,
    remove_punctuation,
    sent_tokenize,
    treebank_tokenize,
    word_tokenize,
)
from zhbert.errors import DataError

CMRC_DIR = Path("/work/shared/data/clue/cmrc2018")
DEV = CMRC_DIR / "cmrc2018_dev.json"


# ------------------------------------------------------------------ segmentation, punctuation


def test_mixed_segmentation_splits_cjk_and_tokenizes_runs():
    # lowercase first; each CJK char alone; "2018" and "fifa" are runs ended by a CJK char
    assert mixed_segmentation("2018年FIFA世界杯") == ["2018", "年", "fifa", "世", "界", "杯"]
    # the run "iphone 6s" is split by the word tokenizer at the space
    assert mixed_segmentation("  iPhone 6s ") == ["iphone", "6s"]
    # a run of only a space tokenizes to nothing
    assert mixed_segmentation("中 国") == ["中", "国"]
    # listed marks are tokens of their own, or dropped with rm_punc
    assert mixed_segmentation("《三国》") == ["《", "三", "国", "》"]
    assert mixed_segmentation("《三国》", rm_punc=True) == ["三", "国"]


def test_dropped_mark_does_not_end_the_run():
    # '-' is listed: kept it ends the run ("a" | "-" | "b"); dropped, the run goes on as "ab"
    assert mixed_segmentation("a-b") == ["a", "-", "b"]
    assert mixed_segmentation("a-b", rm_punc=True) == ["ab"]


def test_remove_punctuation_uses_the_script_list_only():
    assert remove_punctuation(" 《战国无双3》 ") == "战国无双3"
    assert remove_punctuation("A-B：c") == "abc"  # lowercased, '-' and '：' listed
    # ASCII . , ( ) and the ellipsis '…' are not in the list ("……" there is 2 characters)
    assert remove_punctuation("a.b,(c)…") == "a.b,(c)…"
    assert "……" in SP_CHARS and "…" not in SP_CHARS


# ------------------------------------------------------------------ EM and F1


def test_chinese_only_answer():
    # gold 北/京/大/学 (4), pred 北/京 (2); LCS 2 -> P = 2/2 = 1, R = 2/4 = 0.5
    # F1 = 2 * 1 * 0.5 / 1.5 = 2/3
    assert calc_f1_score(["北京大学"], "北京") == pytest.approx(2 / 3)
    assert calc_em_score(["北京大学"], "北京") == 0.0
    assert calc_em_score(["北京大学"], "北京大学") == 1.0
    assert calc_f1_score(["北京大学"], "北京大学") == 1.0


def test_latin_words_and_digits():
    # gold "iphone 6s" -> iphone/6s (2), pred iphone (1); LCS 1 -> P = 1, R = 1/2, F1 = 2/3
    assert calc_f1_score(["iPhone 6s"], "iphone") == pytest.approx(2 / 3)
    # EM compares "iphone 6s" with "iphone": different
    assert calc_em_score(["iPhone 6s"], "iphone") == 0.0
    # EM lowercases both sides
    assert calc_em_score(["iPhone 6s"], "IPHONE 6S") == 1.0


def test_mixed_answer():
    # gold 2018/年/fifa/世/界/杯 (6), pred fifa/世/界/杯 (4), contiguous in gold: LCS 4
    # P = 4/4 = 1, R = 4/6 = 2/3, F1 = 2 * (2/3) / (5/3) = 4/5
    assert calc_f1_score(["2018年FIFA世界杯"], "FIFA世界杯") == pytest.approx(0.8)
    assert calc_em_score(["2018年FIFA世界杯"], "FIFA世界杯") == 0.0


def test_punctuation_is_removed_for_em_and_f1():
    # 《 》 are listed: "《战国无双3》" -> "战国无双3" for EM; for F1 both are 战/国/无/双/3
    assert calc_em_score(["《战国无双3》"], "战国无双3") == 1.0
    assert calc_f1_score(["《战国无双3》"], "战国无双3") == 1.0


def test_unlisted_punctuation_counts():
    # '.' is not listed: EM "美国" != "美国."; F1 pred 美/国/. (the run "." is one token)
    # LCS 2 -> P = 2/3, R = 2/2 = 1, F1 = 2 * (2/3) / (5/3) = 4/5
    assert calc_em_score(["美国"], "美国.") == 0.0
    assert calc_f1_score(["美国"], "美国.") == pytest.approx(0.8)
    # '…' (U+2026) is not removed either: pred 等/等/… -> the same 4/5
    assert calc_em_score(["等等"], "等等…") == 0.0
    assert calc_f1_score(["等等"], "等等…") == pytest.approx(0.8)


def test_max_over_gold_answers():
    golds = ["北京", "北京大学"]
    # vs 北/京: LCS 2, P = 2/3, R = 1 -> 4/5; vs 北/京/大/学: LCS 3, P = 1, R = 3/4 -> 6/7
    assert calc_f1_score(golds, "北京大") == pytest.approx(6 / 7)
    assert calc_em_score(golds, "北京大") == 0.0
    assert calc_em_score(golds, "北京大学") == 1.0
    assert calc_f1_score(golds, "北京大学") == 1.0


def test_empty_prediction_scores_zero():
    # "" -> no segments: LCS 0 -> F1 0; "" != "北京" -> EM 0
    assert calc_f1_score(["北京"], "") == 0.0
    assert calc_em_score(["北京"], "") == 0.0
    # a prediction of listed marks only is empty after removal too
    assert calc_f1_score(["北京"], "《》") == 0.0


def test_lcs_is_contiguous_and_ties_keep_the_first_in_s1():
    # common runs "ab" and "cd" (length 2): "ab" ends at s1[1], found first; "cd" (ending at
    # s1[4]) would have to be longer to replace it
    assert find_lcs(list("abxcd"), list("cdyab")) == (list("ab"), 2)
    assert find_lcs(list("cdxab"), list("abycd")) == (list("cd"), 2)
    # contiguous, not a subsequence: a/b/c vs a/x/c share only runs of 1 (the first: "a")
    assert find_lcs(list("abc"), list("axc")) == (list("a"), 1)
    assert find_lcs([], ["a"]) == ([], 0)
    # F1 is order sensitive: 甲/乙 vs 乙/甲 -> LCS 1, P = R = 1/2, F1 = 1/2
    assert calc_f1_score(["甲乙"], "乙甲") == pytest.approx(0.5)


# ------------------------------------------------------------------ totals


def test_evaluate_counts_missing_predictions_as_skip_and_zero():
    gold = {"q1": ["北京"], "q2": ["上海"], "q3": ["北京大学"]}
    preds = {"q1": "北京", "q3": "北京", "extra": "ignored"}
    # q1: EM 1, F1 1; q2 missing: 0/0, skip; q3: EM 0, F1 2/3 (see test_chinese_only_answer)
    result = evaluate(gold, preds)
    assert result["total"] == 3 and result["skip"] == 1
    assert result["em"] == pytest.approx(1 / 3)
    assert result["f1"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    # the same from (id, answers) pairs, answers as a tuple
    assert evaluate([("q1", ("北京",)), ("q2", ["上海"])], {"q1": "北京"}) == {
        "em": 0.5, "f1": 0.5, "total": 2, "skip": 1}


def test_official_summary_prints_percentages():
    # EM 50 %, F1 75 % -> AVERAGE (50 + 75) / 2 = 62.5
    summary = official_summary({"em": 0.5, "f1": 0.75, "total": 4, "skip": 1})
    assert summary == {"AVERAGE": "62.500", "F1": "75.000", "EM": "50.000", "TOTAL": 4, "SKIP": 1}


def test_user_errors_raise_data_error_naming_the_question():
    with pytest.raises(DataError, match="q7.*not a string"):
        evaluate({"q7": ["北京"]}, {"q7": None})
    with pytest.raises(DataError, match="q8.*no gold answer"):
        evaluate({"q8": []}, {"q8": "北京"})
    with pytest.raises(DataError, match="q9"):
        evaluate({"q9": "北京"}, {"q9": "北京"})  # answers must be a list, not one string
    with pytest.raises(DataError, match="no gold questions"):
        evaluate({}, {})
    with pytest.raises(DataError, match="predictions"):
        evaluate({"q1": ["北京"]}, ["北京"])


def test_gold_answers_reads_both_layouts():
    squad = {"data": [{"paragraphs": [{"qas": [{"id": "a", "answers": [{"text": "北京"}]}]}]}]}
    original = [{"qas": [{"query_id": "b", "answers": ["上海", "上海市"]}]}]
    assert gold_answers(squad) == [("a", ["北京"])]
    assert gold_answers(original) == [("b", ["上海", "上海市"])]
    with pytest.raises(DataError, match="not a CMRC 2018 dataset"):
        gold_answers({"data": [{"paragraphs": [{"questions": []}]}]})


def test_evaluate_files(tmp_path):
    data = tmp_path / "dev.json"
    data.write_text(json.dumps({"data": [{"paragraphs": [{"qas": [
        {"id": "a", "answers": [{"text": "北京"}]}, {"id": "b", "answers": [{"text": "上海"}]}]}]}]},
        ensure_ascii=False), encoding="utf-8")
    preds = tmp_path / "pred.json"
    preds.write_text(json.dumps({"a": "北京"}, ensure_ascii=False), encoding="utf-8")
    assert evaluate_files(data, preds) == {"em": 0.5, "f1": 0.5, "total": 2, "skip": 1}
    preds.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="pred.json"):
        evaluate_files(data, preds)
    with pytest.raises(DataError, match="missing.json"):
        evaluate_files(tmp_path / "missing.json", preds)


@pytest.mark.skipif(not DEV.exists(), reason="CMRC 2018 dev set not present")
def test_real_dev_set_first_gold_answer_scores_100():
    gold = gold_answers(json.loads(DEV.read_text(encoding="utf-8")))
    assert len(gold) == 3219  # the published dev set
    perfect = evaluate(gold, {qid: answers[0] for qid, answers in gold})
    assert perfect == {"em": 1.0, "f1": 1.0, "total": 3219, "skip": 0}
    assert official_summary(perfect)["AVERAGE"] == "100.000"
    empty = evaluate(gold, {qid: "" for qid, _ in gold})
    assert (empty["em"], empty["f1"], empty["skip"]) == (0.0, 0.0, 0)


# ------------------------------------------------------------------ nltk-free word_tokenize

# (text, expected tokens, why): hand-traced through NLTKWordTokenizer's rules
WORD_CASES = [
    ("don't", ["do", "n't"], "clitic rule: ([^' ])(n't) followed by the added space"),
    ("can't", ["ca", "n't"], "same rule; 'ca' is what nltk leaves"),
    ("it's", ["it", "'s"], "clitic rule for 's"),
    ("cannot", ["can", "not"], "MacIntyre contraction \\b(can)(not)\\b"),
    ("gonna", ["gon", "na"], "MacIntyre contraction"),
    ("$3.5", ["$", "3.5"], "[;@#$%&] padded; the period is not final, 3.5 stays"),
    ("2.5%", ["2.5", "%"], "% padded"),
    ("U.S.", ["U.S", "."], "final-period rule splits the last '.' only"),
    ("u.s.a.", ["u.s.a", "."], "same"),
    ("hello world.", ["hello", "world", "."], "final period split off"),
    ('"hello" world', ["``", "hello", "''", "world"], 'leading " -> ``, other " -> \'\''),
    ("e-mail", ["e-mail"], "single hyphen is not split"),
    ("a--b", ["a", "--", "b"], "double dash padded"),
    ("(a)", ["(", "a", ")"], "parens padded"),
    ("a, b: c", ["a", ",", "b", ":", "c"], "[:,] before a non-digit padded"),
    ("3,000", ["3,000"], "comma before a digit kept"),
    ("iphone 6s", ["iphone", "6s"], "whitespace split"),
    ("hey! say! jump", ["hey", "!", "say", "!", "jump"], "[?!] padded"),
    ("1—2", ["1", "—", "2"], "em dash (U+2014) padded in nltk >= 3.9"),
    ("«a»", ["«", "a", "»"], "guillemets are starting / ending quotes"),
    ("x... y", ["x", "...", "y"], "\\.{2,} padded"),
    # punkt: a non-abbreviation word ending in '.' before a space ends a sentence, and each
    # sentence's final period is split off
    ("hello world. foo", ["hello", "world", ".", "foo"], "punkt splits after 'world.'"),
    ("st. john", ["st.", "john"], "'st' is an abbreviation: no sentence break"),
    ("terry a. gates", ["terry", "a.", "gates"], "initial before a lowercase word: no break"),
    ("3. foo", ["3.", "foo"], "number before a lowercase word: no break"),
    ("s.g. tallentyre", ["s.g.", "tallentyre"], "inner period: treated as an abbreviation"),
]


@pytest.mark.parametrize("text,expected,why", WORD_CASES, ids=[c[0] for c in WORD_CASES])
def test_word_tokenize_table(text, expected, why):
    assert word_tokenize(text) == expected, why


def test_sentence_split_only_matters_for_inner_periods():
    assert sent_tokenize("hello world. foo bar.") == ["hello world.", "foo bar."]
    assert treebank_tokenize("hello world. foo") == ["hello", "world.", "foo"]  # no punkt
    assert sent_tokenize("  ") == [] and word_tokenize("") == []
    assert "mr" in PUNKT_ABBREVIATIONS


# ------------------------------------------------------------------ against nltk, when installed

_EXTRA_NLTK_CASES = ["'tis", "rock 'n' roll", "i'm gonna", "o'neill", "a. 1", "(sent1.) sent2.",
                     'hi." he said', "what? yes. no!", "last six (hours)——", "40 °15 ′37 ″—40",
                     "J. Bach", "a\nb. c\n\nd.", "approx. 5", "‘a’", "x [y] {z} <w>"]
_NLTK_CASES = [c[0] for c in WORD_CASES] + _EXTRA_NLTK_CASES


def _nltk_reference(text: str) -> list[str]:
    """nltk's Punkt (our stand-in abbreviations, no model) + NLTKWordTokenizer."""
    punkt = pytest.importorskip("nltk.tokenize.punkt")
    from nltk.tokenize import NLTKWordTokenizer

    params = punkt.PunktParameters()
    params.abbrev_types = set(PUNKT_ABBREVIATIONS)
    splitter = punkt.PunktSentenceTokenizer(params)
    for word in splitter._lang_vars.word_tokenize(text):  # dotted words count as abbreviations
        word = word.lower()[:-1] if word.endswith(".") else word.lower()
        params.abbrev_types.update(w for w in (word, word.split("-")[-1]) if "." in w)
    return [t for s in splitter.tokenize(text) for t in NLTKWordTokenizer().tokenize(s)]


@pytest.mark.parametrize("text", _NLTK_CASES)
def test_treebank_matches_nltk(text):
    pytest.importorskip("nltk")
    from nltk.tokenize import NLTKWordTokenizer

    assert treebank_tokenize(text) == NLTKWordTokenizer().tokenize(text)


@pytest.mark.parametrize("text", _NLTK_CASES)
def test_word_tokenize_matches_nltk_punkt_pipeline(text):
    assert word_tokenize(text) == _nltk_reference(text)


@pytest.mark.skipif(not DEV.exists(), reason="CMRC 2018 dev set not present")
def test_dev_answer_runs_match_nltk():
    """Every non-CJK run the script would tokenize in the dev gold answers."""
    pytest.importorskip("nltk")
    gold = gold_answers(json.loads(DEV.read_text(encoding="utf-8")))
    runs = set()
    for _, answers in gold:
        for answer in answers:
            run = ""
            for char in answer.lower().strip() + "中":
                if "\u4e00" <= char <= "\u9fa5" or char in SP_CHARS:
                    runs.add(run)
                    run = ""
                else:
                    run += char
    runs.discard("")
    assert len(runs) > 100
    mismatches = [r for r in sorted(runs) if word_tokenize(r) != _nltk_reference(r)]
    assert mismatches == []
