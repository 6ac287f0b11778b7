"""C3 and ChID as multiple-choice data: loading, encoding, ChID joint decoding.

Everything here follows the CLUE PyTorch baselines, CLUEbenchmark/CLUE at commit
9d232934e74c3ddd1f7b25d8e9711900aef5b8fe, folder ``baselines/models_pytorch/mrc_pytorch/``
(unchanged there since 5c44cc26 for ``run_c3.py`` / ``run_multichoice_mrc.py`` and since
99243c04 for ``preprocess/CHID_preprocess.py``). Where this module differs, it says so.

Formats
-------
**C3**, original release (``c3-d-{train,dev,test}.json``, ``c3-m-*.json``) and CLUE's
``c3_public.zip`` (``d-train.json``/``m-train.json``, ``d-dev.json``/``m-dev.json``,
``test1.0.json``/``test1.1.json``): one JSON list of items ::

    [ ["男：...", "女：..."],                                   # dialogue lines / passage
      [ {"question": "...", "choice": ["...", ...], "answer": "..."}, ... ],
      "25-35" ]                                                 # document id

CLUE's test files have no ``answer`` and give every question an ``"id"`` (CLUE issue #140;
``datasets/clue/clue.py`` of huggingface/datasets reads ``int(question["id"])``). One
:class:`ChoiceExample` per question; ``id`` is the question's ``"id"`` when it has one, else
``"<doc id>-<question index>"``. The d and m files of a split are concatenated, d first, as
``run_c3.py`` ``c3Processor.__init__`` does. The passage is ``"\\n".join(lines)`` (same place;
the newline is whitespace to the tokenizer, so the lines simply abut). The answer is a choice
text: the label is the index of the choice equal to it, compared lower-cased, the last one
when a choice text repeats (``_create_examples`` loops over all four and keeps the last hit;
two train questions of the release repeat their answer text). An answer that is none of the
choices is a :class:`DataError` (the baseline dies on ``label_map["-1"]``). Fewer than four
choices are padded with the filler text ``"无效答案"`` ("invalid answer"; ``c3Processor``:
"有些C3数据选项不足4个，添加[无效答案]能够有效增强模型收敛稳定性"); more than four (the
release has none) are kept, not cut, so that example has more option rows. The baseline also
``.lower()``s every text; texts are kept as they are here (the tokenizer's ``do_lower_case``
lower-cases them the same way).

**ChID**, CLUE format (``chid_public.zip``: ``train.json`` + ``train_answer.json``,
``dev.json`` + ``dev_answer.json``, ``test1.0.json``/``test1.1.json``): one JSON object per
line, ``{"candidates": [10 idioms], "content": [passage, ...]}`` (``content`` is a list of
passages in what CLUE ships, ``run_multichoice_mrc`` / ``clue.py`` iterate over it; a plain
string is accepted too), blanks written ``#idiom000123#``, answers in a separate JSON object
``{"#idiom000123#": 4, ...}`` (index into that line's candidates). One example per blank; its
``id`` is the tag. The 10 candidates belong to the whole line, and the baseline's joint
decoding runs over all blanks of a line (``read_chid_examples`` bumps ``example_id`` once per
line, in the ``for ... else`` after the passage loop), so ``group`` is the 0-based line index.
**ChID, FewCLUE format** (``train_few_all.json``, ``dev_few_all.json``, ``test_public.json``,
``test.json``): one object per line ``{"id", "candidates": [7 idioms], "content": "... #idiom#
...", "answer": 3}``, one blank per row, ``group`` None (argmax).

The text of a ChID example (either format) is the passage with the baseline's character
replacements (``read_chid_examples``: ``“ ”`` -> ``"``, ``——`` -> ``--``, ``—``/``―`` ->
``-``, ``…`` -> ``...``, ``‘ ’`` -> ``'``), its own blank written :data:`BLANK`
(``[unused1]``) and every other blank of the passage written :data:`OTHER_BLANK` (four
``[MASK]``), as ``convert_examples_to_features`` marks them::

    他说“#idiom000000#”，后来他#idiom000001#地工作……
    blank 0:  他说"[unused1]"，后来他[MASK][MASK][MASK][MASK]地工作......
    blank 1:  他说"[MASK][MASK][MASK][MASK]"，后来他[unused1]地工作......

Encoding (:func:`choice_features`)
----------------------------------
**C3**, per option (``run_c3.py`` ``convert_examples_to_features``)::

    [CLS] passage [SEP]   question [SEP] option [SEP]
    |-- token_type 0 --|   |-------- token_type 1 -------|

truncated before the special tokens to ``max_seq_length - 4`` by ``_truncate_seq_tuple``:
one token at a time off the end of the longest of (passage, option, question), ties going to
the passage, then the option, then the question -- so the passage loses tokens first, and
the question only once it is as long as the passage. Each option is truncated on its own
(the pytorch baseline makes one example per option). Worked example, passage lines
``["男：你好吗？", "女：我很好。"]``, question ``女的怎么样？``, option ``很好``::

    [CLS] 男 ： 你 好 吗 ？ 女 ： 我 很 好 。 [SEP] 女 的 怎 么 样 ？ [SEP] 很 好 [SEP]
    token_type_ids  0 x 14 ([CLS] .. first [SEP])  then 1 x 10

24 tokens; with ``max_seq_length=20`` the budget is 16 for 12 + 2 + 6 tokens: 4 come off the
passage (the longest throughout), leaving ``男 ： 你 好 吗 ？ 女 ：``.

**ChID**, per candidate (``preprocess/CHID_preprocess.py`` ``convert_examples_to_features``)::

    [CLS] idiom [SEP] left [unused1] right [SEP]       token_type_ids all 0

``left``/``right`` are a window of ``max_seq_length - 8`` tokens around the blank (``- 3``
for [CLS]/[SEP]/[SEP], ``- 5`` for [unused1] and a four-token idiom), found by
``add_tokens_for_around`` on the passage's tokens with each other blank counted as ONE
token: half (floor) on the left, the rest on the right, the surplus of a short side going to
the other side. Other blanks are then written as four [MASK] and the sides cut back to the
window's token counts (left keeps its last tokens, right its first). One fix: when the
passage is shorter than the window and the blank lies right of the middle, the baseline's
``tokens[pos - left_len: pos]`` starts at a negative index and wraps around (losing left
context); here the start is clamped at 0. A candidate longer than four tokens (the baseline
asserts on it) makes the sequence longer than ``max_seq_length``; the window's outer ends
are then trimmed, one token at a time from the longer side.

Joint decoding (:func:`joint_decode`)
-------------------------------------
``CHID_preprocess.py`` ``get_final_predictions(g=True)`` -> ``logits_matrix_to_array``,
used for dev and test (``run_multichoice_mrc.py``, ``test_multichoice_mrc.py``): within a
line, all (candidate, blank) raw logits are sorted in descending order (a stable sort of
the candidate-major list, so ties go to the lower candidate, then the lower blank); walking
down, a pair is taken when neither its blank nor its candidate is taken yet. Greedy
global-max assignment: each candidate used at most once per line. A blank left over (more
blanks than candidates, which the baseline never meets) gets its plain argmax.
Examples with ``group`` None get their argmax.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from zhbert.clue.data import read_jsonl
from zhbert.errors import DataError

C3_NUM_OPTIONS = 4
C3_FILLER = "无效答案"  # run_c3.py c3Processor: pads questions with fewer than 4 choices
BLANK = "[unused1]"  # CHID_preprocess.py: the blank being filled
OTHER_BLANK = "[MASK]" * 4  # CHID_preprocess.py: every other blank of the passage
# read_chid_examples, in its order ("——" before "—")
CHID_REPLACEMENTS = (("“", '"'), ("”", '"'), ("——", "--"), ("—", "-"), ("―", "-"), ("…", "..."),
                     ("‘", "'"), ("’", "'"))
_TAG_RE = re.compile(r"#idiom\d*#")  # CLUE "#idiom000123#", FewCLUE "#idiom#"
_MARK_RE = re.compile("(" + re.escape(BLANK) + "|" + re.escape(OTHER_BLANK) + ")")
_TARGET, _OTHER = -1, -2  # window units standing for BLANK / OTHER_BLANK


@dataclass
class ChoiceExample:
    id: object  # C3: question "id" or "<doc id>-<q index>"; ChID: the tag / FewCLUE row id
    context: str  # C3: the passage; ChID: the passage text for this blank (see module docstring)
    question: str  # C3 question; ChID: ""
    options: list[str]  # C3: padded to 4 with C3_FILLER; ChID: the candidates
    label: Optional[int]  # index into options; None when unlabeled
    group: object = None  # ChID CLUE format: the line index (joint decoding over its blanks)
    where: str = ""  # "FILE:LINE" or "FILE: [i] question j" for messages


# ------------------------------------------------------------------ reading


def _read_json(path: Path):
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None


def _is_str_list(x) -> bool:
    return isinstance(x, list) and all(isinstance(s, str) for s in x)


def _index(value, n: int, what: str) -> int:
    """``value`` as an index into ``n`` options, else ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise ValueError(f"{what} {value!r} is not an index into the {n} candidates")
    return value


def c3_files(task_dir: Path, split: str) -> list[Path]:
    """The C3 files of ``split`` present in ``task_dir``, d before m.

    train/dev: CLUE's ``d-<split>.json``/``m-<split>.json``, else the release's
    ``c3-d-<split>.json``/``c3-m-<split>.json``. test: CLUE's ``test1.1.json``, else
    ``test1.0.json``, else ``test.json`` (no answers: load with ``labeled=False``), else the
    release's ``c3-d-test.json``/``c3-m-test.json`` (with answers). [] when none is there.
    """
    if split not in ("train", "dev", "test"):
        raise ValueError(f"C3 split must be train, dev or test, not {split!r}")
    d = Path(task_dir)
    if split == "test":
        for name in ("test1.1.json", "test1.0.json", "test.json"):
            if (d / name).is_file():
                return [d / name]
    for names in ((f"d-{split}.json", f"m-{split}.json"), (f"c3-d-{split}.json", f"c3-m-{split}.json")):
        present = [d / n for n in names if (d / n).is_file()]
        if present:
            return present
    return []


def load_c3(paths: Sequence[Path], labeled: bool = True, limit: Optional[int] = None) -> list[ChoiceExample]:
    """One example per question of the C3 files ``paths``, in order (see module docstring).
    ``labeled=False`` ignores answers (CLUE's test files have none); ``limit``: the first N
    questions."""
    out: list[ChoiceExample] = []
    if limit is not None and limit <= 0:
        return out
    for path in paths:
        path = Path(path)
        data = _read_json(path)
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of C3 items [dialogue lines, questions, id], "
                            f"got {type(data).__name__}")
        for i, item in enumerate(data):
            at = f"{path}: [{i}]"
            if not (isinstance(item, list) and len(item) in (2, 3) and _is_str_list(item[0])
                    and isinstance(item[1], list)):
                raise DataError(f"{at}: expected a C3 item [dialogue lines, questions, id]")
            context = "\n".join(item[0])
            doc_id = item[2] if len(item) == 3 else i
            for j, q in enumerate(item[1]):
                where = f"{at} question {j}"
                if not isinstance(q, dict):
                    raise DataError(f"{where}: expected a JSON object, got {type(q).__name__}")
                for key in ("question", "choice") + (("answer",) if labeled else ()):
                    if key not in q:
                        raise DataError(f"{where}: missing field {key!r}")
                choices = q["choice"]
                if not (_is_str_list(choices) and choices) or not isinstance(q["question"], str):
                    raise DataError(f"{where}: 'question' must be a string and 'choice' a non-empty list of strings")
                label = None
                if labeled:
                    answer = q["answer"]
                    hits = [k for k, c in enumerate(choices) if isinstance(answer, str) and c.lower() == answer.lower()]
                    if not hits:
                        raise DataError(f"{where}: answer {answer!r} is not among the choices {choices}")
                    label = hits[-1]  # run_c3.py: the last matching choice
                options = list(choices) + [C3_FILLER] * (C3_NUM_OPTIONS - len(choices))
                qid = q["id"] if "id" in q else f"{doc_id}-{j}"
                out.append(ChoiceExample(qid, context, q["question"], options, label, None, where))
                if limit is not None and len(out) >= limit:
                    return out
    return out


def mark_blank(passage: str, target: str) -> str:
    """``passage`` as the CLUE ChID baseline presents it for the blank ``target``: its
    character replacements, ``target`` -> :data:`BLANK`, other blanks -> :data:`OTHER_BLANK`."""
    for a, b in CHID_REPLACEMENTS:
        passage = passage.replace(a, b)
    return _TAG_RE.sub(lambda m: BLANK if m.group(0) == target else OTHER_BLANK, passage)


def _candidates(row: dict, where: str) -> list[str]:
    if "candidates" not in row:
        raise DataError(f"{where}: missing field 'candidates'")
    cands = row["candidates"]
    if not (_is_str_list(cands) and cands):
        raise DataError(f"{where}: 'candidates' must be a non-empty list of strings")
    return cands


def _chid_rows(path: Path):
    """(0-based line index, row, "FILE:LINE", candidates) for every row of a ChID file."""
    for k, (lineno, row) in enumerate(read_jsonl(path)):
        where = f"{path}:{lineno}"
        yield k, row, where, _candidates(row, where)


def load_chid_clue(path: Path, answer_path: Optional[Path] = None, labeled: bool = True,
                   limit: Optional[int] = None) -> list[ChoiceExample]:
    """One example per ``#idiom...#`` blank of a CLUE-format ChID file, in order; labels from
    ``answer_path`` (default: ``<stem>_answer.json`` beside ``path``, CLUE's naming).
    ``limit``: the first N blanks (the last line's group may then be partial)."""
    path = Path(path)
    answers: dict = {}
    if labeled:
        answer_path = Path(answer_path) if answer_path is not None else path.with_name(f"{path.stem}_answer.json")
        answers = _read_json(answer_path)
        if not isinstance(answers, dict):
            raise DataError(f"{answer_path}: expected a JSON object {{\"#idiom000000#\": index, ...}}, "
                            f"got {type(answers).__name__}")
    out: list[ChoiceExample] = []
    if limit is not None and limit <= 0:
        return out
    for k, row, where, cands in _chid_rows(path):
        if "content" not in row:
            raise DataError(f"{where}: missing field 'content'")
        content = row["content"]
        passages = [content] if isinstance(content, str) else content
        if not _is_str_list(passages):
            raise DataError(f"{where}: 'content' must be a string or a list of strings")
        n_tags = 0
        for passage in passages:
            for tag in _TAG_RE.findall(passage):
                n_tags += 1
                label = None
                if labeled:
                    if tag not in answers:
                        raise DataError(f"{answer_path}: no answer for {tag} (blank of {where})")
                    try:
                        label = _index(answers[tag], len(cands), f"answer of {tag}")
                    except ValueError as e:
                        raise DataError(f"{answer_path}: {e} of {where}") from None
                out.append(ChoiceExample(tag, mark_blank(passage, tag), "", list(cands), label, k, where))
                if limit is not None and len(out) >= limit:
                    return out
        if not n_tags:
            raise DataError(f"{where}: no #idiom...# blank in 'content'")
    return out


def load_chid_fewclue(path: Path, labeled: bool = True, limit: Optional[int] = None) -> list[ChoiceExample]:
    """FewCLUE ChID rows (one ``#idiom#`` blank, its candidates, ``answer`` index); ``id`` is
    the row's ``"id"`` (else its 0-based line index); ``limit``: the first N rows."""
    path = Path(path)
    out: list[ChoiceExample] = []
    if limit is not None and limit <= 0:
        return out
    for k, row, where, cands in _chid_rows(path):
        content = row.get("content")
        if not isinstance(content, str):
            raise DataError(f"{where}: missing or non-string field 'content'")
        tags = _TAG_RE.findall(content)
        if len(tags) != 1:
            raise DataError(f"{where}: expected one #idiom# blank in 'content', found {len(tags)}")
        label = None
        if labeled:
            if "answer" not in row:
                raise DataError(f"{where}: missing field 'answer'")
            try:
                label = _index(row["answer"], len(cands), "answer")
            except ValueError as e:
                raise DataError(f"{where}: {e}") from None
        out.append(ChoiceExample(row.get("id", k), mark_blank(content, tags[0]), "", list(cands), label, None, where))
        if limit is not None and len(out) >= limit:
            break
    return out


# ------------------------------------------------------------------ encoding


def truncate_tuple_lengths(n_a: int, n_b: int, n_c: int, budget: int) -> tuple[int, int, int]:
    """Lengths after run_c3.py's ``_truncate_seq_tuple(a, b, c, budget)`` (pop one token off
    the longest; ties: a, then b, then c), in closed form instead of one pop per token."""
    if budget < 0:
        raise ValueError(f"no room for the special tokens (budget {budget})")
    lens = [n_a, n_b, n_c]
    excess = sum(lens) - budget
    while excess > 0:
        top = max(lens)
        tied = [i for i in range(3) if lens[i] == top]  # popped in turn, in a, b, c order
        below = max((n for n in lens if n < top), default=0)
        room = (top - below) * len(tied)
        if excess >= room:
            for i in tied:
                lens[i] = below
            excess -= room
        else:
            full, extra = divmod(excess, len(tied))
            for r, i in enumerate(tied):
                lens[i] -= full + (1 if r < extra else 0)
            excess = 0
    return lens[0], lens[1], lens[2]


def _window(n: int, pos: int, num_tokens: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """CHID_preprocess.py ``add_tokens_for_around``: ([lo, hi) left, [lo, hi) right) unit
    ranges around ``pos`` (start of the third case clamped at 0, see module docstring)."""
    num_l = num_tokens // 2
    num_r = num_tokens - num_l
    if pos >= num_l and n - 1 - pos >= num_r:
        return (pos - num_l, pos), (pos + 1, pos + 1 + num_r)
    if pos <= num_l:
        return (0, pos), (pos + 1, min(n, pos + 1 + num_tokens - pos))
    left_len = num_tokens - (n - 1 - pos)
    return (max(0, pos - left_len), pos), (pos + 1, n)


def _encoder(tokenizer, texts):
    """text -> token ids, every distinct text normalised and encoded once, in one batch."""
    uniq = list(dict.fromkeys(texts))
    encoded = tokenizer.encode_batch([tokenizer.normalize(t) for t in uniq])
    return {t: ids for t, (ids, _) in zip(uniq, encoded)}


def _c3_features(tokenizer, examples: Sequence[ChoiceExample], max_seq_length: int) -> list[dict]:
    budget = max_seq_length - 4
    if budget < 0:
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for C3's 4 special tokens")
    ids = _encoder(tokenizer, [t for e in examples for t in (e.context, e.question, *e.options)])
    cls, sep = tokenizer.cls_id, tokenizer.sep_id
    out = []
    for e in examples:
        a, c = ids[e.context], ids[e.question]
        feat = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
        for option in e.options:
            b = ids[option]
            na, nb, nc = truncate_tuple_lengths(len(a), len(b), len(c), budget)
            seq = [cls, *a[:na], sep, *c[:nc], sep, *b[:nb], sep]
            feat["input_ids"].append(seq)
            feat["token_type_ids"].append([0] * (na + 2) + [1] * (nc + nb + 2))
            feat["attention_mask"].append([1] * len(seq))
        out.append(feat)
    return out


def _chid_features(tokenizer, examples: Sequence[ChoiceExample], max_seq_length: int) -> list[dict]:
    num_tokens = max_seq_length - 8  # CHID_preprocess.py: max_seq_length - 3 - 5
    if num_tokens < 0:
        raise ValueError(f"max_seq_length={max_seq_length} is below ChID's 8 fixed positions")
    unused1 = tokenizer.vocab.get(BLANK)
    if unused1 is None:
        raise DataError(f"the vocab has no {BLANK}, the CLUE ChID baseline's blank marker")
    mask = tokenizer.mask_id
    pieces = [_MARK_RE.split(e.context) for e in examples]
    ids = _encoder(tokenizer, [p for ps in pieces for p in ps[::2]] + [o for e in examples for o in e.options])
    cls, sep = tokenizer.cls_id, tokenizer.sep_id

    def expand(units):
        out = []
        for u in units:
            out.extend([mask] * 4 if u == _OTHER else [u])
        return out

    out = []
    for e, ps in zip(examples, pieces):
        units: list[int] = []
        for i, p in enumerate(ps):
            units.extend(ids[p] if i % 2 == 0 else [_TARGET if p == BLANK else _OTHER])
        if units.count(_TARGET) != 1:
            raise ValueError(f"{e.where}: ChID context must hold {BLANK} once, found {units.count(_TARGET)}")
        pos = units.index(_TARGET)
        (l0, l1), (r0, r1) = _window(len(units), pos, num_tokens)
        num_l, num_r = l1 - l0, r1 - r0
        left = expand(units[l0:l1])
        left = left[len(left) - num_l:]
        right = expand(units[r0:r1])[:num_r]
        feat = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
        for option in e.options:
            o = ids[option]
            lo, hi = 0, len(right)  # keep left[lo:] and right[:hi]
            over = 1 + len(o) + 1 + len(left) + 1 + len(right) + 1 - max_seq_length
            while over > 0 and (lo < len(left) or hi > 0):
                if len(left) - lo >= hi:
                    lo += 1
                else:
                    hi -= 1
                over -= 1
            seq = [cls, *o, sep, *left[lo:], unused1, *right[:hi], sep]
            feat["input_ids"].append(seq)
            feat["token_type_ids"].append([0] * len(seq))
            feat["attention_mask"].append([1] * len(seq))
        out.append(feat)
    return out


def choice_features(tokenizer, examples: Sequence[ChoiceExample], max_seq_length: int, task: str) -> list[dict]:
    """Per example ``{"input_ids", "token_type_ids", "attention_mask"}``, each a list of one
    unpadded list per option, built as the CLUE baseline of ``task`` ("c3" or "chid") builds
    them (module docstring). Every text goes through ``tokenizer.normalize`` first."""
    kind = task.lower()
    if kind == "c3":
        return _c3_features(tokenizer, examples, max_seq_length)
    if kind.startswith("chid"):
        return _chid_features(tokenizer, examples, max_seq_length)
    raise ValueError(f"choice_features: task must be 'c3' or 'chid', not {task!r}")


# ------------------------------------------------------------------ decoding


def joint_decode(examples: Sequence[ChoiceExample], logits) -> list[int]:
    """The chosen option per example: argmax for ``group`` None; within a group, the CLUE
    ChID baseline's greedy global-max assignment (module docstring)."""
    import numpy as np

    if not len(examples):
        return []
    scores = np.asarray(logits, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != len(examples):
        raise ValueError(f"logits must be (n_examples={len(examples)}, n_options), got shape {scores.shape}")
    preds = scores.argmax(axis=1).tolist() if scores.shape[1] else []
    groups: dict = {}
    for i, e in enumerate(examples):
        if e.group is not None:
            groups.setdefault(e.group, []).append(i)
    n_options = scores.shape[1]
    for rows in groups.values():
        # logits_matrix_to_array: transpose to (choice, blank), list choice-major, stable sort
        pairs = [(c, b, scores[rows[b], c]) for c in range(n_options) for b in range(len(rows))]
        pairs.sort(key=lambda t: t[2], reverse=True)  # reverse=True keeps ties in list order
        free_c, free_b = set(range(n_options)), set(range(len(rows)))
        for c, b, _ in pairs:
            if b in free_b and c in free_c:
                preds[rows[b]] = c
                free_b.discard(b)
                free_c.discard(c)
    return preds


def majority_position_rate(examples: Sequence[ChoiceExample]) -> float:
    """Share of the most frequent gold option index among labelled examples (the accuracy of
    always answering that position); 0.0 when none is labelled."""
    labels = [e.label for e in examples if e.label is not None]
    if not labels:
        return 0.0
    return Counter(labels).most_common(1)[0][1] / len(labels)
