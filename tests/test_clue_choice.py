"""C3 and ChID as multiple-choice data (zhbert.clue.choice): loading, encoding, joint decoding.

Fixtures (hand-written, CLUE formats):
  tests/fixtures/clue/c3/            CLUE c3_public names: d-/m-train.json, d-/m-dev.json, test1.1.json
                                     (the original release's c3-d-dev.json names are made in tmp_path)
  tests/fixtures/clue/chid/          CLUE chid_public: dev.json (2 lines: one passage with 3 blanks;
                                     two passages with 1 blank each) + dev_answer.json
  tests/fixtures/clue/chid_fewclue/  FewCLUE: dev_few_all.json (3 rows, 7 candidates), test.json (no answers)
Expected values are worked out by hand from the CLUE baselines' rules (see the module docstring).
"""

from __future__ import annotations

import json
import random
import shutil
import string
from pathlib import Path

import numpy as np
import pytest

from zhbert.clue.choice import (BLANK, C3_FILLER, ChoiceExample, c3_files, choice_features, joint_decode,
                                load_c3, load_chid_clue, load_chid_fewclue, majority_position_rate,
                                truncate_tuple_lengths)
from zhbert.errors import DataError

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "clue"
C3 = FIX / "c3"
CHID = FIX / "chid"
FEW = FIX / "chid_fewclue"
M4 = ["[MASK]"] * 4


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """A vocab of every character of the fixtures, plus ASCII punctuation and the C3 filler."""
    from zhbert.prep.tokenizer import ChineseTokenizer, special_layout

    chars = set(string.punctuation + C3_FILLER)
    for d in (C3, CHID, FEW):
        for f in d.rglob("*.json"):
            chars.update(c for c in f.read_text(encoding="utf-8") if not c.isspace())
    tokens = special_layout() + sorted(chars - set(special_layout()))
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return ChineseTokenizer.from_vocab(vocab)


def strs(tok, ids):
    return [tok.tokens[i] for i in ids]


def chars(text):
    return list(text)


# ------------------------------------------------------------------ C3 loading


def test_c3_clue_files_load_d_then_m_with_padding_and_labels():
    files = c3_files(C3, "dev")
    assert files == [C3 / "d-dev.json", C3 / "m-dev.json"]
    ex = load_c3(files)
    assert len(ex) == 4  # 1 + 2 questions in d-dev, 1 in m-dev
    # 3 choices -> one filler; answer "看电影" is choice 0
    assert ex[0].context == "男：你明天有空吗？\n女：有空，我们去看电影吧。"  # lines joined with "\n"
    assert ex[0].question == "他们明天要做什么？"
    assert ex[0].options == ["看电影", "去上班", "去吃饭", "无效答案"]
    assert (ex[0].label, ex[0].id, ex[0].group) == (0, "1-1-0", None)
    assert ex[0].where == f"{C3 / 'd-dev.json'}: [0] question 0"
    # 4 choices: untouched; "二十块" is choice 1; second question of the item -> "1-2-1"
    assert ex[1].options == ["十块", "二十块", "三十块", "四十块"] and ex[1].label == 1 and ex[1].id == "1-2-0"
    assert ex[2].id == "1-2-1" and ex[2].label == 0
    # m file after d; 2 choices -> two fillers, "跑步" is choice 1
    assert ex[3].options == ["睡觉", "跑步", C3_FILLER, C3_FILLER] and ex[3].label == 1 and ex[3].id == "m1-1-0"
    assert ex[3].where == f"{C3 / 'm-dev.json'}: [0] question 0"
    assert C3_FILLER == "无效答案"
    assert [e.label for e in load_c3(files, limit=3)] == [0, 1, 0]
    assert load_c3(files, limit=0) == []
    assert majority_position_rate(ex) == 0.5  # labels 0, 1, 0, 1


def test_c3_clue_test_file_has_ids_and_no_answers():
    assert c3_files(C3, "test") == [C3 / "test1.1.json"]
    assert c3_files(C3, "train") == [C3 / "d-train.json", C3 / "m-train.json"]
    ex = load_c3(c3_files(C3, "test"), labeled=False)
    assert [e.id for e in ex] == [0, 1, 2]  # the questions' own ids
    assert [e.label for e in ex] == [None] * 3
    assert ex[2].options == ["苹果", "香蕉", C3_FILLER, C3_FILLER]
    with pytest.raises(DataError, match=r"test1\.1\.json: \[0\] question 0: missing field 'answer'"):
        load_c3(c3_files(C3, "test"), labeled=True)
    with pytest.raises(ValueError):
        c3_files(C3, "validation")


def test_c3_original_release_names_load_the_same(tmp_path):
    for sub in ("d", "m"):
        shutil.copy(C3 / f"{sub}-dev.json", tmp_path / f"c3-{sub}-dev.json")
    assert c3_files(tmp_path, "dev") == [tmp_path / "c3-d-dev.json", tmp_path / "c3-m-dev.json"]
    assert c3_files(tmp_path, "train") == [] and c3_files(tmp_path, "test") == []
    shutil.copy(C3 / "d-dev.json", tmp_path / "c3-d-test.json")
    assert c3_files(tmp_path, "test") == [tmp_path / "c3-d-test.json"]  # the release's test has answers
    key = lambda e: (e.id, e.context, e.question, e.options, e.label)  # noqa: E731
    assert [key(e) for e in load_c3(c3_files(tmp_path, "dev"))] == [key(e) for e in load_c3(c3_files(C3, "dev"))]
    # both namings present: CLUE's wins
    shutil.copy(C3 / "d-dev.json", tmp_path / "d-dev.json")
    assert c3_files(tmp_path, "dev") == [tmp_path / "d-dev.json"]


def test_c3_answer_matching_follows_baseline(tmp_path):
    f = tmp_path / "d-dev.json"
    f.write_text(json.dumps([[["甲"], [
        {"question": "问", "choice": ["AB", "cd", "AB"], "answer": "ab"},  # lower-cased, last match
    ], "x"]], ensure_ascii=False), encoding="utf-8")
    (e,) = load_c3([f])
    assert e.label == 2 and e.options == ["AB", "cd", "AB", C3_FILLER]


def test_c3_errors_name_file_and_item(tmp_path):
    data = json.loads((C3 / "d-dev.json").read_text(encoding="utf-8"))
    data[1][1][1]["answer"] = "超市"
    bad = tmp_path / "d-dev.json"
    bad.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_c3([bad])
    assert str(e.value) == (f"{bad}: [1] question 1: answer '超市' is not among the choices "
                            "['书店', '医院', '学校', '机场']")
    assert load_c3([bad], labeled=False)[2].label is None  # test-style loading ignores answers

    bad.write_text('[\n [["a"], [{"question": "q", "choice": ["x"], "answer": "x"}], "1"],\n oops\n]',
                   encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{bad}:3: malformed JSON"):
        load_c3([bad])
    bad.write_text('{"a": 1}', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{bad}: expected a JSON list"):
        load_c3([bad])
    bad.write_text('[[["a"], [{"question": "q", "answer": "x"}], "1"]]', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{bad}: \[0\] question 0: missing field 'choice'"):
        load_c3([bad])
    bad.write_text('[["not a list of lines", [], "1"]]', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{bad}: \[0\]: expected a C3 item"):
        load_c3([bad])
    with pytest.raises(DataError, match="file not found"):
        load_c3([tmp_path / "missing.json"])


# ------------------------------------------------------------------ C3 encoding


def test_c3_pair_layout_matches_baseline(tok):
    (e,) = load_c3([C3 / "d-train.json"])
    assert e.context == "男：你好吗？\n女：我很好。" and e.options == ["很好", "不好", "很累", "无效答案"]
    (f,) = choice_features(tok, [e], 64, "c3")
    assert set(f) == {"input_ids", "token_type_ids", "attention_mask"} and len(f["input_ids"]) == 4
    # [CLS] passage [SEP] question [SEP] option [SEP]; segment 0 up to the first [SEP]
    assert strs(tok, f["input_ids"][0]) == (["[CLS]"] + chars("男：你好吗？女：我很好。") + ["[SEP]"]
                                            + chars("女的怎么样？") + ["[SEP]"] + chars("很好") + ["[SEP]"])
    assert f["token_type_ids"][0] == [0] * 14 + [1] * 10
    assert f["attention_mask"][0] == [1] * 24
    assert strs(tok, f["input_ids"][3])[-6:] == ["[SEP]", "无", "效", "答", "案", "[SEP]"]
    # max_seq_length 20: budget 16 for 12 + 2 + 6 -> 4 off the end of the passage
    (f,) = choice_features(tok, [e], 20, "c3")
    assert strs(tok, f["input_ids"][0]) == (["[CLS]"] + chars("男：你好吗？女：") + ["[SEP]"]
                                            + chars("女的怎么样？") + ["[SEP]", "很", "好", "[SEP]"])
    assert f["token_type_ids"][0] == [0] * 10 + [1] * 10
    # the 4-token filler: 12 + 4 + 6 = 22 -> passage cut to 6
    assert strs(tok, f["input_ids"][3])[:8] == ["[CLS]"] + chars("男：你好吗？") + ["[SEP]"]
    assert all(len(ids) <= 20 for ids in f["input_ids"])


def test_c3_truncation_takes_the_passage_first_then_ties(tok):
    e = load_c3([C3 / "d-dev.json"])[0]  # passage 9 + 13 = 22 tokens, question 9, option 3
    (f,) = choice_features(tok, [e], 24, "c3")
    # budget 20, 14 too many: 13 off the passage (22 -> 9 = question), then the tie goes to the passage
    assert strs(tok, f["input_ids"][0]) == (["[CLS]"] + chars("男：你明天有空吗") + ["[SEP]"]
                                            + chars("他们明天要做什么？") + ["[SEP]"] + chars("看电影") + ["[SEP]"])
    (f,) = choice_features(tok, [e], 20, "c3")
    # budget 16, 18 too many: passage -> 9 (13), then passage/question alternate: 6 and 7
    assert strs(tok, f["input_ids"][0]) == (["[CLS]"] + chars("男：你明天有") + ["[SEP]"]
                                            + chars("他们明天要做什") + ["[SEP]"] + chars("看电影") + ["[SEP]"])
    assert f["token_type_ids"][0] == [0] * 8 + [1] * 12


def test_truncate_tuple_lengths_equals_the_baseline_loop():
    def reference(na, nb, nc, budget):  # run_c3.py _truncate_seq_tuple, popping one at a time
        a, b, c = [0] * na, [0] * nb, [0] * nc
        while len(a) + len(b) + len(c) > budget:
            if len(a) >= len(b) and len(a) >= len(c):
                a.pop()
            elif len(b) >= len(a) and len(b) >= len(c):
                b.pop()
            else:
                c.pop()
        return len(a), len(b), len(c)

    rng = random.Random(0)
    cases = [(22, 3, 9, 20), (22, 3, 9, 16), (5, 5, 5, 10), (5, 5, 5, 13), (0, 0, 0, 0), (3, 7, 7, 8)]
    cases += [tuple(rng.randint(0, 40) for _ in range(3)) + (rng.randint(0, 60),) for _ in range(3000)]
    for case in cases:
        assert truncate_tuple_lengths(*case) == reference(*case), case


def test_features_use_tokenizer_normalize(tok, monkeypatch):
    e = load_c3([C3 / "d-train.json"])[0]
    monkeypatch.setattr(tok, "normalize", lambda s: s.replace("男", "女"))
    (f,) = choice_features(tok, [e], 64, "c3")
    assert strs(tok, f["input_ids"][0])[1] == "女"
    with pytest.raises(ValueError):
        choice_features(tok, [e], 64, "tnews")


# ------------------------------------------------------------------ ChID loading


def test_chid_clue_one_example_per_blank_marked_like_baseline():
    ex = load_chid_clue(CHID / "dev.json", CHID / "dev_answer.json")
    assert [e.id for e in ex] == [f"#idiom00000{i}#" for i in range(5)]
    assert [e.label for e in ex] == [9, 0, 4, 1, 2]  # from dev_answer.json
    assert [e.group for e in ex] == [0, 0, 0, 1, 1]  # the line: its blanks share its 10 candidates
    assert all(len(e.options) == 10 and e.question == "" for e in ex)
    assert ex[0].options[9] == "自相矛盾" and ex[3].options[1] == "三心二意"
    assert ex[0].where == f"{CHID / 'dev.json'}:1" and ex[4].where == f"{CHID / 'dev.json'}:2"
    # passage: 他说“#idiom000000#”，大家都笑了。后来他#idiom000001#地工作……最后#idiom000002#。
    # “” -> ", …… -> ......; the blank itself -> [unused1], the others -> [MASK] x 4
    mask4 = "[MASK]" * 4
    assert ex[0].context == f'他说"[unused1]"，大家都笑了。后来他{mask4}地工作......最后{mask4}。'
    assert ex[1].context == f'他说"{mask4}"，大家都笑了。后来他[unused1]地工作......最后{mask4}。'
    assert ex[2].context == f'他说"{mask4}"，大家都笑了。后来他{mask4}地工作......最后[unused1]。'
    # second line: two passages, each on its own
    assert ex[3].context == "小猫钓鱼时[unused1]，什么也没钓到。"
    assert ex[4].context == "他[unused1]地说出了答案。"
    # default answer file: <stem>_answer.json beside the data file
    assert [e.label for e in load_chid_clue(CHID / "dev.json", None)] == [9, 0, 4, 1, 2]
    assert [e.label for e in load_chid_clue(CHID / "dev.json", None, labeled=False)] == [None] * 5
    assert len(load_chid_clue(CHID / "dev.json", None, limit=2)) == 2


def test_chid_clue_answer_errors(tmp_path):
    answers = json.loads((CHID / "dev_answer.json").read_text(encoding="utf-8"))
    del answers["#idiom000001#"]
    bad = tmp_path / "dev_answer.json"
    bad.write_text(json.dumps(answers), encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_chid_clue(CHID / "dev.json", bad)
    assert str(e.value) == f"{bad}: no answer for #idiom000001# (blank of {CHID / 'dev.json'}:1)"
    answers["#idiom000001#"] = 10  # 10 candidates: 0..9
    bad.write_text(json.dumps(answers), encoding="utf-8")
    with pytest.raises(DataError, match=r"answer of #idiom000001# 10 is not an index into the 10 candidates"):
        load_chid_clue(CHID / "dev.json", bad)
    data = tmp_path / "train.json"
    data.write_text(json.dumps({"candidates": ["一丝不苟"], "content": "他#idiom000009#。"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train_answer\.json: file not found"):
        load_chid_clue(data, None)
    (e,) = load_chid_clue(data, None, labeled=False)  # content as one string is accepted
    assert e.context == "他[unused1]。" and e.group == 0
    data.write_text(json.dumps({"candidates": ["一丝不苟"], "content": ["没有空"]}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{data}:1: no #idiom"):
        load_chid_clue(data, None, labeled=False)


def test_chid_fewclue_loads_seven_candidates_with_labels():
    ex = load_chid_fewclue(FEW / "dev_few_all.json")
    assert [e.id for e in ex] == [7, 8, 9] and [e.label for e in ex] == [2, 0, 5]
    assert all(len(e.options) == 7 and e.group is None for e in ex)
    assert ex[0].context == "他做事总是[unused1]，从来没有完成过一件事。"
    assert ex[1].context == "同学们[unused1]地听老师讲课......"
    assert ex[2].context == '听完解释，他"[unused1]"。'
    assert ex[1].where == f"{FEW / 'dev_few_all.json'}:2"
    test = load_chid_fewclue(FEW / "test.json", labeled=False)
    assert [e.id for e in test] == [100, 101] and [e.label for e in test] == [None, None]
    with pytest.raises(DataError, match=rf"^{FEW / 'test.json'}:1: missing field 'answer'"):
        load_chid_fewclue(FEW / "test.json")


# ------------------------------------------------------------------ ChID encoding


def test_chid_window_and_marks_match_baseline(tok):
    ex = load_chid_clue(CHID / "dev.json", CHID / "dev_answer.json")
    # blank 0, max_seq_length 16: window 16 - 8 = 8 tokens, 4 left / 4 right; the blank is token 3,
    # so the left side has only 3 and the right side gets 5
    (f,) = choice_features(tok, ex[:1], 16, "chid")
    assert len(f["input_ids"]) == 10
    assert strs(tok, f["input_ids"][9]) == (["[CLS]"] + chars("自相矛盾") + ["[SEP]"] + chars('他说"')
                                            + ["[unused1]"] + chars('"，大家都') + ["[SEP]"])
    assert f["token_type_ids"][9] == [0] * 16 and f["attention_mask"][9] == [1] * 16
    # blank 1, max_seq_length 32: window 24, 12 each side; the other blanks count as one token when
    # the window is chosen, then become [MASK] x 4 and the sides are cut back to 12 tokens
    (f,) = choice_features(tok, ex[1:2], 32, "chid")
    assert strs(tok, f["input_ids"][0]) == (["[CLS]"] + chars("一丝不苟") + ["[SEP]"]
                                            + ["[MASK]"] + chars('"，大家都笑了。后来他') + ["[unused1]"]
                                            + chars("地工作......最后") + ["[MASK]"] + ["[SEP]"])
    # blank 2, max_seq_length 24: window 16, one token right of the blank, so 15 on the left
    (f,) = choice_features(tok, ex[2:3], 24, "chid")
    assert strs(tok, f["input_ids"][4]) == (["[CLS]"] + chars("半途而废") + ["[SEP]"] + M4
                                            + chars("地工作......最后") + ["[unused1]", "。", "[SEP]"])
    assert all(len(ids) == 24 for ids in f["input_ids"])


def test_chid_short_passage_and_long_candidate(tok):
    few = load_chid_fewclue(FEW / "dev_few_all.json")
    # blank right of the middle of a passage shorter than the window (max 18 -> window 10):
    # the baseline's slice would wrap to nothing; the whole left side is kept
    (f,) = choice_features(tok, few[2:3], 18, "chid")
    assert strs(tok, f["input_ids"][5]) == (["[CLS]"] + chars("恍然大悟") + ["[SEP]"] + chars('听完解释，他"')
                                            + ["[unused1]"] + chars('"。') + ["[SEP]"])
    # a 6-token candidate overflows the 16 positions by 2: one off each outer end of the window
    e = ChoiceExample(0, few[0].context, "", ["一丝不苟一丝", "一丝不苟"], None)
    (f,) = choice_features(tok, [e], 16, "chid")
    assert strs(tok, f["input_ids"][0]) == (["[CLS]"] + chars("一丝不苟一丝") + ["[SEP]"] + chars("事总是")
                                            + ["[unused1]"] + chars("，从来") + ["[SEP]"])
    assert strs(tok, f["input_ids"][1]) == (["[CLS]"] + chars("一丝不苟") + ["[SEP]"] + chars("做事总是")
                                            + ["[unused1]"] + chars("，从来没") + ["[SEP]"])
    with pytest.raises(ValueError, match="once"):
        choice_features(tok, [ChoiceExample(0, "没有空", "", ["一丝不苟"], None)], 16, "chid")


# ------------------------------------------------------------------ joint decoding


def _group(rows, group):
    return [ChoiceExample(f"b{i}", "", "", ["c0", "c1", "c2", "c3"], None, group) for i in range(rows)]


def test_joint_decode_is_the_baselines_greedy_global_max():
    table = np.array([[9.0, 8.0, 0.0, 0.0],
                      [8.0, 0.0, 0.0, 0.0],
                      [0.0, 0.0, 1.0, 0.0]])
    assert table.argmax(axis=1).tolist() == [0, 0, 2]  # independent argmax reuses candidate 0
    # greedy: 9 -> blank0=c0; 8 (b0,c1) blank taken; 8 (b1,c0) candidate taken; 1 -> blank2=c2;
    # then the zeros in candidate-major order: (c0,*) taken, (c1,b0) taken, (c1,b1) -> blank1=c1
    assert joint_decode(_group(3, "g"), table) == [0, 1, 2]
    # (not the best total: blank0=c1, blank1=c0, blank2=c2 would score 17 against 10)

    # two groups interleaved with ungrouped rows: groups do not interact, None rows are argmax
    other = np.array([[0.0, 5.0, 4.0, 0.0],
                      [0.0, 6.0, 1.0, 0.0]])
    free = np.array([[1.0, 2.0, 3.0, 0.0],
                     [1.0, 2.0, 3.0, 0.0]])
    a, b, n = _group(3, 0), _group(2, 1), _group(2, None)
    examples = [a[0], b[0], n[0], a[1], b[1], a[2], n[1]]
    logits = np.stack([table[0], other[0], free[0], table[1], other[1], table[2], free[1]])
    # group 1: 6 -> b1=c1; 5 (b0,c1) taken; 4 -> b0=c2
    assert joint_decode(examples, logits) == [0, 2, 2, 1, 1, 2, 2]


def test_joint_decode_ties_and_more_blanks_than_candidates():
    assert joint_decode(_group(2, "g"), np.zeros((2, 4))) == [0, 1]  # ties: lower candidate, lower blank
    # 3 blanks, 2 candidates: 5 -> blank2=c0; 4 blank taken; 3 -> blank0=c1; 2, 1 taken;
    # blank1 is left over and keeps its argmax (c0, also used by blank2)
    ex = [ChoiceExample(i, "", "", ["x", "y"], None, "g") for i in range(3)]
    assert joint_decode(ex, np.array([[0.0, 3.0], [2.0, 1.0], [5.0, 4.0]])) == [1, 0, 0]
    with pytest.raises(ValueError, match="shape"):
        joint_decode(ex, np.zeros((2, 2)))


def test_majority_position_rate():
    ex = [ChoiceExample(i, "", "", ["a", "b"], lab) for i, lab in enumerate([1, 1, 0, None, 1])]
    assert majority_position_rate(ex) == 0.75
    assert majority_position_rate([]) == 0.0


# ------------------------------------------------------------------ the real CLUE files


def test_real_c3_dev_counts_and_labels(shared_data):
    d = shared_data / "clue" / "c3"
    if not d.is_dir():
        pytest.skip(f"{d} not present")
    files = c3_files(d, "dev")
    assert [f.name for f in files] == ["c3-d-dev.json", "c3-m-dev.json"]
    expected = sum(len(item[1]) for f in files for item in json.loads(f.read_text(encoding="utf-8")))
    ex = load_c3(files)
    assert len(ex) == expected == 3816  # CLUE README: C3 dev 3,816
    assert all(len(e.options) == 4 and 0 <= e.label < 4 for e in ex)
    assert all(e.options[e.label] != C3_FILLER for e in ex)
    assert 0.25 < majority_position_rate(ex) < 0.5


def test_real_chid_fewclue_loads(shared_data):
    d = shared_data / "clue" / "chid_fewclue"
    if not d.is_dir():
        pytest.skip(f"{d} not present")
    for name, n in (("dev_few_all.json", 202), ("test_public.json", 2002)):
        lines = [ln for ln in (d / name).read_text(encoding="utf-8").split("\n") if ln.strip()]
        ex = load_chid_fewclue(d / name)
        assert len(ex) == len(lines) == n
        assert all(len(e.options) == 7 and 0 <= e.label < 7 and e.context.count(BLANK) == 1 for e in ex)
    assert [e.label for e in load_chid_fewclue(d / "test.json", labeled=False)] == [None] * 2000


def test_real_data_encodes_with_bert_chinese_vocab(shared_data, bert_chinese_vocab):
    from zhbert.prep.tokenizer import ChineseTokenizer

    tok = ChineseTokenizer.from_vocab(bert_chinese_vocab)
    c3 = shared_data / "clue" / "c3"
    few = shared_data / "clue" / "chid_fewclue"
    if not (c3.is_dir() and few.is_dir()):
        pytest.skip("CLUE C3 / ChID files not present")
    for f in choice_features(tok, load_c3(c3_files(c3, "dev"), limit=200), 512, "c3"):
        assert len(f["input_ids"]) == 4 and all(len(ids) <= 512 for ids in f["input_ids"])
        assert all(ids.count(tok.sep_id) == 3 for ids in f["input_ids"])
    unused1 = tok.vocab[BLANK]
    for f in choice_features(tok, load_chid_fewclue(few / "dev_few_all.json"), 64, "chid"):
        assert len(f["input_ids"]) == 7
        assert all(len(ids) <= 64 and ids.count(unused1) == 1 for ids in f["input_ids"])
