"""CMRC 2018 span extraction: SQuAD-style files, sliding windows, answer mapping, n-best decoding.

CMRC 2018 (CLUE's reading-comprehension task, Cui et al. 2019) is SQuAD v1.1 in Chinese: every
question has an answer, a span of its paragraph. Pipeline, each step a function here::

    load_cmrc          file -> QAExample per question (answers checked against the context)
    qa_features        QAExample -> QAFeature per window: [CLS] question [SEP] window [SEP]
    (model)            per feature a start and an end logit per token
    best_answers       logits -> {question id: answer text}, n-best over all windows
    write_predictions  -> cmrc2018_predict.json, the CLUE submission file

**Reading** (:func:`load_cmrc`). The layout is SQuAD's: ``{"version", "data": [{"id", "title",
"paragraphs": [{"id", "context", "qas": [{"id", "question", "answers": [{"text",
"answer_start"}]}]}]}]}``. Every problem raises :class:`~zhbert.errors.DataError` naming the file
and the JSON path (``data[3].paragraphs[0].qas[2]``). ``answer_start`` is checked against the
text, because the official files are not always right: of cmrc2018_dev.json's 9657 answers, 193
have ``answer_start`` -1 and a text that is not in the context at all (annotators rewrote the
span) and 7 point at the wrong place; in cmrc2018_trial.json, 5 answers (TRIAL_210) are one
character off. The rule:

- ``answer_start`` must be an integer from -1 (no position) to ``len(context)``, else DataError;
  an answer's text must not be blank;
- if ``context[start:start + len(text)] != text`` and the text occurs exactly once in the
  context, the start is moved there (counted in ``relocated``);
- otherwise the answer has no position. Dev and trial files are scored by text (the official
  cmrc2018_evaluate.py compares the predicted string with every gold string, after lowercasing
  and removing punctuation; positions are never read), so there the answer is kept with start -1
  (counted in ``unlocated``). With ``train=True`` it is dropped instead (``dropped``) and a
  question left without answers goes too (``dropped_questions``), as Google's
  ``read_squad_examples`` skips answers it "could not find".

Test files (``labeled=False``) carry placeholder answers (``FAKE_ANSWER_1``, start -1): they
are not read.

**Windows** (:func:`qa_features`), exactly Google's ``convert_examples_to_features``
(google-research/bert, run_squad.py; the CMRC 2018 baseline, ymcui/cmrc2018
baseline/run_cmrc2018_drcd_baseline.py, is the same code): the question is cut to
``max_query_length`` tokens (and to ``max_seq_length - 4``, so that a window holds a token at
least: run_squad.py would loop forever on an empty window); a window holds
``max_tokens_for_doc = max_seq_length - len(question) - 3`` context tokens (the 3 are [CLS]
and two [SEP]); windows start at 0, ``doc_stride``, ``2 * doc_stride`` ... and the first one
that reaches the end of the context is the last, so the last window ends at the last token and
may be shorter than the others. (``doc_stride`` is the distance between window starts;
transformers' run_qa.py passes its ``doc_stride`` to the tokenizer as ``stride``, the
*overlap* of consecutive windows, which is a different rule.) 150 context tokens, a 10-token
question, max_seq_length=64, doc_stride=32: 51 tokens a window, windows [0, 51) [32, 83)
[64, 115) [96, 147) [128, 150).

Training labels (v1 convention, run_squad.py lines "if out_of_span: start_position = 0;
end_position = 0"): the answer's token span shifted by the window start plus
``len(question) + 2``, when the answer lies wholly inside the window; 0/0 ([CLS]) when it
does not, also when it lies partly inside. Features are not padded; ``attention_mask`` is
all ones and padding is the collator's job.

**Characters <-> tokens.** :meth:`ChineseTokenizer.encode` gives every token its (start, end)
character span in the text it was given (normalisation does not move them). A character span
[a, b) maps to the tokens that overlap it (:func:`char_to_token_span`); a token span (s, e)
maps back to ``context[offsets[s][0]:offsets[e][1]]`` (:func:`token_span_text`), the original
characters with their case, width and inner spaces. With bert-base-chinese's vocab::

    context   iPhone XS Max的价格
    tokens    iphone  x  ##s  max  的  价  格
    offsets   (0,6) (7,8) (8,9) (10,13) (13,14) (14,15) (15,16)

    answer "XS Max" = chars [7, 13)  -> tokens 1..3  -> context[7:13] = "XS Max"   (exact)
    answer "Phone"  = chars [1, 6)   -> token 0      -> context[0:6]  = "iPhone"   (part of a
                                                       wordpiece cannot be predicted)

Two things a token span cannot reproduce, counted on the real files by the tests: an answer's
leading/trailing whitespace (no token covers it) and part of a wordpiece ("4个" annotated inside
"34个"). One thing fixed here: BERT's accent stripping deletes combining marks, and the
tokenizer's offsets then end before a word's final mark (Hebrew niqqud, "וּ"); a context
token's end is extended over combining marks (Unicode category M) that no token covers, so
they stay with their base character.

**Normalisation.** Fine-tuning feeds text the way pretraining saw it (``tokenizer.normalize``,
as :func:`zhbert.clue.finetune.encode` does). The question is normalised. The context is
normalised only when that keeps its length (character for character: full-width folding and
t2s do; collapsing whitespace, stripping the ends or removing zero-width characters do not),
so offsets into the tokenized string are offsets into the original; otherwise the raw context
is tokenized. Little is lost: the tokenizer's backend folds full-width forms itself and drops
control/zero-width characters, so only t2s is missed, in 5 of cmrc2018_dev.json's 848
contexts (none of trial's or test's). Answers are cut from the original context.

**Decoding** (:func:`best_answers`), Google's ``write_predictions`` for SQuAD v1: per feature
the ``n_best_size`` highest start and end logits (over the feature's own tokens; padding is
ignored); a pair (s, e) is valid when both are context tokens, e >= s, e - s + 1 <=
``max_answer_length`` and s has *maximal context* in this window; the best score
start_logit[s] + end_logit[e] over all windows of the question wins (ties: the first in
window, start-rank, end-rank order, as Google's stable sort); "" when no pair is valid.

Max context (run_squad.py ``_check_is_max_context``): a token in several windows belongs to
the window where min(tokens to its left, tokens to its right) + 0.01 * window length is
largest (the first such window on ties). With the windows above, token 40 is in [0, 51)
(score min(40, 10) + 0.51 = 10.51) and [32, 83) (min(8, 42) + 0.51 = 8.51): its own window
is the first.

Sources: google-research/bert run_squad.py (convert_examples_to_features,
_check_is_max_context, write_predictions, _get_best_indexes); ymcui/cmrc2018
baseline/run_cmrc2018_drcd_baseline.py (the same, for CMRC 2018; it also deletes every space
from a prediction, which this module does not: "iPhone XS" stays "iPhone XS") and
squad-style-data/cmrc2018_evaluate.py (scoring by text); CMRC 2018 paper, Cui et al.,
EMNLP 2019, "A Span-Extraction Dataset for Chinese Machine Reading Comprehension".
"""

from __future__ import annotations

import json
import logging
import unicodedata
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from zhbert.errors import DataError
from zhbert.files import read_utf8

logger = logging.getLogger(__name__)

Offset = Optional[tuple[int, int]]


@dataclass
class QAExample:
    id: str  # the question id ("DEV_0_QUERY_0")
    question: str
    context: str
    answers: list[str]  # gold answer texts in file order (may repeat); [] when unlabeled
    answer_starts: list[int]  # char offsets into context, parallel to answers; -1: no position
    where: str  # "FILE: data[i].paragraphs[j].qas[k]" for messages


class QAExamples(list):
    """``list[QAExample]`` as read by :func:`load_cmrc`, with what the answer check did.

    relocated: answers whose ``answer_start`` was wrong, moved to the one place their text occurs.
    unlocated: answers kept by text only (start -1): text not found exactly once (dev files).
    dropped: answers dropped for that reason (``train=True``).
    dropped_questions: questions dropped because none of their answers was left (``train=True``).
    """

    def __init__(self, path: Path, examples=()):
        super().__init__(examples)
        self.path = path
        self.relocated = 0
        self.unlocated = 0
        self.dropped = 0
        self.dropped_questions = 0


def _field(obj, key: str, kind, where: str, path: Path):
    """obj[key], checked to be a `kind` (never a bool); DataError naming file and JSON path otherwise."""
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {where}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(f"{path}: {where}: missing key {key!r}")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DataError(f"{path}: {where}.{key}: expected {names}, got {type(value).__name__} {value!r:.40}")
    return value


def _questions(doc, path: Path):
    """(JSON path, context, qa object) of every question of a parsed file, in order."""
    for i, article in enumerate(_field(doc, "data", list, "top level", path)):
        for j, para in enumerate(_field(article, "paragraphs", list, f"data[{i}]", path)):
            pwhere = f"data[{i}].paragraphs[{j}]"
            context = _field(para, "context", str, pwhere, path)
            for k, qa in enumerate(_field(para, "qas", list, pwhere, path)):
                yield f"{pwhere}.qas[{k}]", context, qa


def load_cmrc(path: Path, labeled: bool = True, limit: int | None = None, *, train: bool = False) -> QAExamples:
    """The questions of a CMRC 2018 file (SQuAD v1 layout), in file order.

    ``labeled=False`` for test files (answers not read). ``limit``: only the first N questions
    of the file (dropped ones count). ``train``: an answer whose start is wrong and whose text
    does not occur exactly once in the context is dropped (and a question left without
    answers), instead of being kept with start -1 for text-only scoring; see the module
    docstring. The counts are attributes of the returned list.
    """
    path = Path(path)
    text = read_utf8(path, "CMRC 2018 JSON file")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg}, column {e.colno})") from None
    out = QAExamples(path)
    seen: dict[str, str] = {}
    for n, (qwhere, context, qa) in enumerate(_questions(doc, path)):
        if limit is not None and n >= limit:
            break
        qid = str(_field(qa, "id", (str, int), qwhere, path))
        if qid in seen:
            raise DataError(f"{path}: {qwhere}: question id {qid!r} already used at {seen[qid]}")
        seen[qid] = qwhere
        question = _field(qa, "question", str, qwhere, path)
        answers: list[str] = []
        starts: list[int] = []
        if labeled:
            raw = _field(qa, "answers", list, qwhere, path)
            if not raw:
                raise DataError(f"{path}: {qwhere}: no answers (a labelled file needs at least one per question)")
            for m, ans in enumerate(raw):
                awhere = f"{qwhere}.answers[{m}]"
                atext = _field(ans, "text", str, awhere, path)
                start = _field(ans, "answer_start", int, awhere, path)
                if not atext.strip():
                    raise DataError(f"{path}: {awhere}: blank answer text {atext!r}")
                if not -1 <= start <= len(context):
                    raise DataError(f"{path}: {awhere}: answer_start {start} is outside the context "
                                    f"({len(context)} characters; -1 marks an answer without a position)")
                if start < 0 or context[start:start + len(atext)] != atext:
                    first = context.find(atext)
                    if first >= 0 and context.find(atext, first + 1) < 0:
                        start = first
                        out.relocated += 1
                    elif train:
                        out.dropped += 1
                        continue
                    else:
                        start = -1
                        out.unlocated += 1
                answers.append(atext)
                starts.append(start)
            if not answers:  # train=True and all of them dropped
                out.dropped_questions += 1
                continue
        out.append(QAExample(qid, question, context, answers, starts, f"{path}: {qwhere}"))
    if out.dropped:
        logger.warning("%s: %d answers not found at their answer_start nor once in their context were dropped "
                       "(%d questions left without answers)", path, out.dropped, out.dropped_questions)
    return out


# --------------------------------------------------------------------------- features


@dataclass
class QAFeature:
    example: int  # index into the examples list
    input_ids: list[int]
    token_type_ids: list[int]
    attention_mask: list[int]
    offsets: list[Offset]  # per token: (start, end) chars in example.context; None for [CLS]/question/[SEP]
    start_position: int = 0  # train only: token index of the answer start in this window; 0 ([CLS]) when the
    end_position: int = 0  # answer is not wholly inside the window (Google run_squad v1 convention)
    window: tuple[int, int] = (0, 0)  # the context tokens [start, end) this window holds
    token_is_max_context: list[bool] = field(default_factory=list)  # per token; [] = all context tokens


def doc_windows(n_tokens: int, max_tokens_for_doc: int, doc_stride: int) -> list[tuple[int, int]]:
    """Windows [start, end) over ``n_tokens`` context tokens, run_squad.py's ``doc_spans`` loop:
    starts 0, stride, 2*stride ...; the first window reaching the end is the last. [] for 0 tokens."""
    if max_tokens_for_doc < 1 or doc_stride < 1:
        raise ValueError(f"max_tokens_for_doc={max_tokens_for_doc} and doc_stride={doc_stride} must be >= 1")
    spans = []
    start = 0
    while start < n_tokens:
        length = min(n_tokens - start, max_tokens_for_doc)
        spans.append((start, start + length))
        if start + length == n_tokens:
            break
        start += min(length, doc_stride)
    return spans


def max_context_flags(windows: Sequence[tuple[int, int]]) -> list[list[bool]]:
    """Per window, per token in it: is this the token's max-context window? run_squad.py's
    ``_check_is_max_context``: score min(left, right) + 0.01 * window length, first best wins."""
    n = windows[-1][1] if windows else 0
    best_score = np.full(n, -np.inf)
    best_window = np.zeros(n, dtype=np.int64)
    for w, (a, b) in enumerate(windows):
        p = np.arange(a, b)
        score = np.minimum(p - a, b - 1 - p) + 0.01 * (b - a)
        better = score > best_score[a:b]  # strictly: the first best window keeps a tie
        best_score[a:b][better] = score[better]
        best_window[a:b][better] = w
    return [(best_window[a:b] == w).tolist() for w, (a, b) in enumerate(windows)]


def char_to_token_span(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """(first, last) index of the tokens overlapping characters [start, end); None when no token
    does (a span of whitespace). `offsets`: the context's token spans, in order."""
    ends = [e for _, e in offsets]
    starts = [s for s, _ in offsets]
    first = bisect_right(ends, start)  # first token ending after `start`
    last = bisect_left(starts, end) - 1  # last token starting before `end`
    if first > last:
        return None
    return first, last


def token_span_text(context: str, offsets: Sequence[Offset], s: int, e: int) -> str:
    """The original characters of tokens s..e (inclusive): ``context[offsets[s][0]:offsets[e][1]]``."""
    return context[offsets[s][0]:offsets[e][1]]


def context_for_encoding(tokenizer, context: str) -> str:
    """What to tokenize for `context`: ``tokenizer.normalize(context)`` when that keeps the length
    (so offsets into it are offsets into `context`), else `context` itself."""
    if not getattr(tokenizer, "normalization", None):
        return context
    norm = tokenizer.normalize(context)
    return norm if len(norm) == len(context) else context


def _attach_marks(context: str, offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Extend each token's end over following combining marks (category M) no token covers:
    accent stripping deletes them and the tokenizer's span then stops before a word's last mark."""
    if not any(unicodedata.category(ch).startswith("M") for ch in set(context)):
        return offsets
    out = []
    for i, (s, e) in enumerate(offsets):
        limit = offsets[i + 1][0] if i + 1 < len(offsets) else len(context)
        while e < limit and unicodedata.category(context[e]).startswith("M"):
            e += 1
        out.append((s, e))
    return out


def context_offsets(tokenizer, contexts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """(token ids, character spans in the original context) of each context, tokenized as
    :func:`qa_features` does (normalised where that keeps the length; marks attached)."""
    texts = [context_for_encoding(tokenizer, c) for c in contexts]
    uniq = list(dict.fromkeys(texts))
    enc = dict(zip(uniq, tokenizer.encode_batch(uniq)))
    return [(enc[t][0], _attach_marks(c, enc[t][1])) for t, c in zip(texts, contexts)]


def qa_features(tokenizer, examples: Sequence[QAExample], max_seq_length: int = 512, doc_stride: int = 128,
                max_query_length: int = 64, train: bool = False) -> list[QAFeature]:
    """``[CLS] question [SEP] window [SEP]`` features of every example, in example order (see
    the module docstring for the windows and labels). ``train=True`` labels each feature with the
    first answer that has a position (``answers[0]`` of a file read with ``load_cmrc(train=True)``);
    an example without one is a ValueError; an answer that covers no token (only characters the
    tokenizer drops) labels every window 0/0. An example whose context has no tokens gets no
    feature (as in run_squad.py); :func:`best_answers` answers it with "".
    """
    if max_query_length < 1 or doc_stride < 1:
        raise ValueError(f"max_query_length={max_query_length} and doc_stride={doc_stride} must be >= 1")
    if max_seq_length < 5:
        raise ValueError(f"max_seq_length={max_seq_length}: [CLS], two [SEP], a question token and a "
                         f"context token need at least 5")
    # run_squad.py would loop forever on a window of <= 0 tokens: a question is also cut to leave one.
    max_query_length = min(max_query_length, max_seq_length - 4)
    questions = [tokenizer.normalize(e.question) for e in examples]
    q_uniq = list(dict.fromkeys(questions))
    q_ids = {q: ids for q, (ids, _) in zip(q_uniq, tokenizer.encode_batch(q_uniq))}
    c_uniq = list(dict.fromkeys(e.context for e in examples))
    c_enc = dict(zip(c_uniq, context_offsets(tokenizer, c_uniq)))
    cls_id, sep_id = tokenizer.cls_id, tokenizer.sep_id
    features: list[QAFeature] = []
    for ei, (ex, q) in enumerate(zip(examples, questions)):
        query = q_ids[q][:max_query_length]
        doc_ids, doc_offsets = c_enc[ex.context]
        windows = doc_windows(len(doc_ids), max_seq_length - len(query) - 3, doc_stride)
        answer = None
        if train:
            located = [(t, s) for t, s in zip(ex.answers, ex.answer_starts) if s >= 0]
            if not located:
                raise ValueError(f"{ex.where}: no answer with a position to train on "
                                 f"(read training files with load_cmrc(..., train=True))")
            text, s = located[0]
            answer = char_to_token_span(doc_offsets, s, s + len(text))
        head = len(query) + 2
        for (a, b), flags in zip(windows, max_context_flags(windows)):
            n = b - a
            f = QAFeature(
                example=ei,
                input_ids=[cls_id, *query, sep_id, *doc_ids[a:b], sep_id],
                token_type_ids=[0] * head + [1] * (n + 1),
                attention_mask=[1] * (head + n + 1),
                offsets=[None] * head + doc_offsets[a:b] + [None],
                window=(a, b),
                token_is_max_context=[False] * head + flags + [False],
            )
            if answer is not None and a <= answer[0] and answer[1] < b:
                f.start_position = answer[0] - a + head
                f.end_position = answer[1] - a + head
            features.append(f)
    return features


# --------------------------------------------------------------------------- decoding


def _best_indexes(logits: np.ndarray, n_best_size: int) -> list[int]:
    """Indices of the `n_best_size` largest logits, largest first, ties in index order
    (run_squad.py's ``_get_best_indexes``: a stable sort)."""
    return np.argsort(-logits, kind="stable")[:n_best_size].tolist()


def best_answers(examples: Sequence[QAExample], features: Sequence[QAFeature], start_logits, end_logits,
                 n_best_size: int = 20, max_answer_length: int = 30) -> dict[str, str]:
    """{question id: answer text} for every example (see the module docstring).

    ``start_logits[i]``/``end_logits[i]``: 1-D logits over feature i's tokens (a padded row is
    fine: positions past the feature's tokens are ignored).
    """
    if len(start_logits) != len(features) or len(end_logits) != len(features):
        raise ValueError(f"{len(features)} features but {len(start_logits)} start and {len(end_logits)} end logit rows")
    best: dict[int, tuple[float, int, int, int]] = {}  # example -> (score, feature, s, e)
    for fi, f in enumerate(features):
        n = len(f.offsets)
        sl = np.asarray(start_logits[fi], dtype=np.float64).reshape(-1)
        el = np.asarray(end_logits[fi], dtype=np.float64).reshape(-1)
        if len(sl) < n or len(el) < n:
            raise ValueError(f"feature {fi} has {n} tokens but {len(sl)} start and {len(el)} end logits")
        sl, el = sl[:n], el[:n]
        offsets, max_ctx = f.offsets, f.token_is_max_context
        ends = [e for e in _best_indexes(el, n_best_size) if offsets[e] is not None]
        cur = best.get(f.example)
        for s in _best_indexes(sl, n_best_size):
            if offsets[s] is None or (max_ctx and not max_ctx[s]):
                continue
            for e in ends:
                if e < s or e - s + 1 > max_answer_length:
                    continue
                score = sl[s] + el[e]
                if cur is None or score > cur[0]:
                    cur = (score, fi, s, e)
        if cur is not None:
            best[f.example] = cur
    out: dict[str, str] = {}
    for ei, ex in enumerate(examples):
        if ei in best:
            _, fi, s, e = best[ei]
            out[ex.id] = token_span_text(ex.context, features[fi].offsets, s, e)
        else:
            out[ex.id] = ""
    return out


def write_predictions(path, predictions: dict[str, str]) -> None:
    """``{question id: answer}`` as one JSON object, non-ASCII kept (CLUE's cmrc2018_predict.json)."""
    from zhbert.files import write_text_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(predictions, ensure_ascii=False, indent=2) + "\n")
