"""The official CMRC 2018 scorer (EM and F1), reproduced without nltk.

Source reproduced: ymcui/cmrc2018, ``baseline/cmrc2018_evaluate.py`` at commit
c0eb1b6ba219847457e6af3180da722bbeb656af ("update evaluate script (codalab ver)", 2022-04-27),
the script whose header says "v6: compatible for both original and SQuAD-style CMRC 2018
datasets. support python3". (``squad-style-data/cmrc2018_evaluate.py`` in the same repository is
still "v5 - special", Python 2 only; v6 differs from it only in the Python 3 port, in
accepting both dataset layouts and in no longer stripping question ids, so the scores are
the same.)

What the official script does
-----------------------------
*Segmentation* (``mixed_segmentation``). The text is lowercased (``str.lower``) and stripped.
Each character is then either

* a CJK ideograph (the script's regex ``[\\u4e00-\\u9fa5]`` -- only that BMP block: CJK
  extensions, ``〇``, full-width digits and letters are *not* in it) or one of the marks in
  ``SP_CHARS`` (below): it becomes a token of its own, or, with ``rm_punc=True``, a listed
  mark is dropped;
* anything else (Latin letters, digits, spaces, ASCII punctuation other than the listed
  marks, unlisted CJK punctuation such as ``【`` or ``…``): it is appended to a run, and each
  run is split with ``nltk.word_tokenize`` when a CJK character or listed mark ends it (or
  the text ends). So ``"2018年fifa世界杯"`` is ``2018 / 年 / fifa / 世 / 界 / 杯`` and
  ``"iphone 6s"`` is ``iphone / 6s``.

  A dropped mark (``rm_punc=True``) does *not* end the run: ``"a-b"`` gives the single token
  ``ab`` with ``rm_punc=True`` but ``a / - / b`` without.

*Punctuation* (``remove_punctuation``, also the ``rm_punc`` set). ``SP_CHARS`` is, verbatim,
ASCII ``- : _ * ^ / \\ ~ ` + =`` and full-width ``， 。 ： ？ ！ “ ” ； ’ 《 》 …… · 、 「 」
（ ） － ～ 『 』``. Quirks of that list: ``"……"`` is a two-character string, and the
script compares single characters with it, so the ellipsis ``…`` (U+2026) is *never* removed;
the left single quote ``‘`` is not listed (only ``’``); ASCII ``. , ! ? ( ) " '`` and
``% $ # @ & ; [ ] { } < >`` are not listed either and survive both EM and F1.

*EM* (``calc_em_score``): 1 if ``remove_punctuation(prediction)`` equals
``remove_punctuation(answer)`` for some gold answer (both lowercased and stripped), else 0.
No tokenization is involved, so inner spaces count: ``"iphone 6s" != "iphone6s"``.

*F1* (``calc_f1_score``): for each gold answer, the longest common *substring* (contiguous
run, ``find_lcs``) of the two ``rm_punc=True`` segment lists gives ``precision = lcs /
len(prediction)``, ``recall = lcs / len(answer)``, ``F1 = 2PR / (P + R)`` (0 when nothing
is shared); the question scores the maximum over its gold answers. This is not SQuAD's
bag-of-tokens F1: ``"ab"`` vs ``"ba"`` shares no 2-segment substring.

*Totals* (``evaluate``): every question of the gold file counts in TOTAL; a question with no
entry in the predictions is reported on stderr, counted in SKIP and scores 0 for both
metrics; EM and F1 are the sums divided by TOTAL, printed as percentages with three
decimals together with ``AVERAGE = (EM + F1) / 2``. Here ``evaluate`` returns fractions in
[0, 1]; ``official_summary`` gives the script's printed numbers (x100, "%.3f").

Where this module deliberately differs from the script: a prediction that is not a string
raises ``DataError`` (the script would score ``str(value)``), as do a question without gold
answers (the script crashes in ``max([])``) and an empty gold set (ZeroDivisionError).

nltk.word_tokenize without nltk
-------------------------------
``nltk.word_tokenize(text)`` is ``sent_tokenize`` (Punkt with its pre-trained English
model, which needs the ``punkt``/``punkt_tab`` data that cannot be downloaded here) followed
by ``NLTKWordTokenizer().tokenize`` on each sentence. ``word_tokenize`` below ports both
from nltk 3.10.4 (``nltk/tokenize/destructive.py`` and ``nltk/tokenize/punkt.py``):

* The word tokenizer is a verbatim port of ``NLTKWordTokenizer`` (the improved Treebank
  tokenizer): starting quotes, punctuation (incl. "the final period", ``$ % & ; @ #`` and the
  figure/en/em dashes U+2012..U+2015), parentheses and brackets, ``--``, ending quotes, clitics
  (``n't 's 'll 're 've 'm 'd``) and the MacIntyre contractions (``cannot -> can not``).
  nltk compiles these with the third-party ``regex`` engine; we use ``re``. The two agree on
  every pattern here except for the meaning of ``\\w`` / ``\\s`` on exotic code points
  (combining marks, ``²``-like digits, U+001C..U+001F), which only matters for an apostrophe
  touching such a character.
* The Punkt step is a port of the *algorithm* (candidate periods / ``?`` / ``!`` followed by
  whitespace or a closing mark, Punkt's own word regex, the first-pass abbreviation/ellipsis
  test, the second-pass initial and number rules, boundary realignment), but not of the
  *model*, a learned parameter file we cannot ship. In place of the model we use:

  - abbreviations: the fixed list ``PUNKT_ABBREVIATIONS`` plus any token with an inner
    period (``u.s.``, ``e.g.``, ``s.g.``). The model's learned list is longer and is not a
    superset of ours: a word it lists but we do not (say ``approx.``) followed by a space
    and another word ends a sentence here and not in nltk, and a dotted token it does not
    list (perhaps ``s.g.`` in ``s.g. tallentyre``) ends one in nltk and not here;
  - no collocations (learned word pairs across a period that never break) and no
    frequent-sentence-starter list;
  - no orthographic statistics: every word counts as never seen, so after an initial
    (``a.``) or a number (``3.``) a lowercase word or ``, ; : . ! ?`` continues the
    sentence, and anything else (a digit, ``(``) does not. The model decides the same for
    a lowercase word unless it saw that word sentence-initially in lowercase and never
    capitalized, which is rare.

  The model's other rules need a capitalized next word, which the script's lowercased text
  never has (``word_tokenize`` on cased text, e.g. ``"etc. The"``, can differ more).
  What a sentence split changes is only that a period ending a sentence is split off its
  word: ``"hello world. foo"`` is ``hello world . foo``, where the word tokenizer alone keeps
  ``world.``; the final period of a whole run is split off either way (``"u.s."`` ->
  ``u.s .``). The runs the script tokenizes are short fragments of Chinese answers (numbers,
  names, English titles), where a period followed by a space inside a run is rare: in the
  CMRC 2018 dev gold answers there are three, all ``name x. name`` with an initial, which
  nltk with its model and this module both keep whole, so the dev scores do not move.
  Checked: with the same stand-in parameters, nltk's own ``PunktSentenceTokenizer`` +
  ``NLTKWordTokenizer`` give the same tokens as ``word_tokenize`` (tests, when nltk is
  installed), and the official script run on that nltk gives the same EM/F1 as ``evaluate``.
* Older nltk releases (e.g. 3.7, current when v6 was written) did not split U+2012..U+2015
  dashes (``"1—2"`` stays one token there) and split a leading apostrophe slightly
  differently; we follow 3.10.4.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from zhbert.errors import DataError

# ------------------------------------------------------------------ the script's constants

SP_CHARS: tuple[str, ...] = (
    '-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=',
    '，', '。', '：', '？', '！', '“', '”', '；', '’', '《', '》', '……', '·', '、',
    '「', '」', '（', '）', '－', '～', '『', '』',
)  # verbatim from the script; "……" (two characters) never equals a single character
_SP_SET = frozenset(SP_CHARS)

Gold = Mapping[str, Sequence[str]] | Iterable[tuple[str, Sequence[str]]]


def _is_cjk(char: str) -> bool:
    """The script's ``re.search(r'[\\u4e00-\\u9fa5]', char)``."""
    return "\u4e00" <= char <= "\u9fa5"


# ------------------------------------------------------------------ NLTKWordTokenizer (nltk 3.10.4)

_STARTING_QUOTES = (
    (re.compile("([«“‘„]|[`]+)"), r" \1 "),
    (re.compile(r"^\""), r"``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
    (re.compile(r"(?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"), r"\1 "),
)
_PUNCTUATION = (
    (re.compile(r'([^\.])(\.)([\]\)}>"\'' "»”’ " r"]*+)\s*$"), r"\1 \2 \3 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"[\u2012-\u2015]"), r" \g<0> "),
    (re.compile(r'([^\.])(\.)([\]\)}>"\']*)\s*$'), r"\1 \2\3 "),  # the final period
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[*]"), r" \g<0> "),
)
_PARENS_BRACKETS = (re.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> ")
_DOUBLE_DASHES = (re.compile(r"--"), r" -- ")
_ENDING_QUOTES = (
    (re.compile("([»”’])"), r" \1 "),
    (re.compile(r"''"), " '' "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"\s+"), " "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
)
_CONTRACTIONS = tuple(re.compile(p) for p in (
    r"(?i)\b(can)(?#X)(not)\b",
    r"(?i)\b(d)(?#X)('ye)\b",
    r"(?i)\b(gim)(?#X)(me)\b",
    r"(?i)\b(gon)(?#X)(na)\b",
    r"(?i)\b(got)(?#X)(ta)\b",
    r"(?i)\b(lem)(?#X)(me)\b",
    r"(?i)\b(more)(?#X)('n)\b",
    r"(?i)\b(wan)(?#X)(na)(?=\s)",
    r"(?i) ('t)(?#X)(is)\b",
    r"(?i) ('t)(?#X)(was)\b",
))


def _substitute(text: str, rules: Iterable[tuple[re.Pattern, str]]) -> str:
    for pattern, replacement in rules:
        text = pattern.sub(replacement, text)
    return text


def treebank_tokenize(sentence: str) -> list[str]:
    """``nltk.tokenize.NLTKWordTokenizer().tokenize(sentence)`` (nltk 3.10.4), without nltk."""
    text = _substitute(sentence, _STARTING_QUOTES)
    text = _substitute(text, _PUNCTUATION)
    text = _substitute(text, (_PARENS_BRACKETS, _DOUBLE_DASHES))
    text = _substitute(" " + text + " ", _ENDING_QUOTES)
    text = _substitute(text, ((p, r" \1 \2 ") for p in _CONTRACTIONS))
    return text.split()


# ------------------------------------------------------------------ Punkt sentence splitting

PUNKT_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "inc", "ltd", "co", "corp",
})  # our stand-in for the model's learned list (see the module docstring)

_SENT_END = ".?!"
_NON_WORD = r"(?:[)\";}\]\*:@\'\({\[\u2018\u2019\u201c\u201d\xab\xbb?!])"
_MULTI_CHAR = r"(?:\-{2,}|\.{2,}|(?:\.\s){2,}\.)"
_WORD_START = r"[^\(\"\`{\[:;&\#\*@\)}\]\-,]"
_PUNKT_WORD = re.compile(
    r"""(
        %(MultiChar)s
        |
        (?=%(WordStart)s)\S+?  # accept word characters until the end is found
        (?= \s | $ | %(NonWord)s | %(MultiChar)s | ,(?=$|\s|%(NonWord)s|%(MultiChar)s) )
        |
        \S
    )""" % {"NonWord": _NON_WORD, "MultiChar": _MULTI_CHAR, "WordStart": _WORD_START},
    re.VERBOSE,
)
_PERIOD_CONTEXT = re.compile(
    r"""[\.\?!](?=(?P<after_tok> %(NonWord)s | \s+(?P<next_tok>\S+) ))""" % {"NonWord": _NON_WORD},
    re.VERBOSE,
)
_REALIGN = re.compile(r'["\')\]}\u2018\u2019\u201c\u201d\xab\xbb]+?(?:\s+|(?=--)|$)', re.MULTILINE)
_NUMERIC = re.compile(r"^-?[\.,]?\d[\d,\.-]*\.?$")
_INITIAL = re.compile(r"[^\W\d]\.$")
_ELLIPSIS = re.compile(r"\.\.+$")
_ORTHO_PUNCT = tuple(";:,.!?")


@dataclass
class _Token:
    """A Punkt word token with its sentence-break annotations."""

    tok: str
    sentbreak: bool = False
    abbr: bool = False
    ellipsis: bool = False

    @property
    def type_no_period(self) -> str:
        typ = _NUMERIC.sub("##number##", self.tok.lower())
        return typ[:-1] if len(typ) > 1 and typ.endswith(".") else typ


def _is_abbreviation(word: str) -> bool:
    return word in PUNKT_ABBREVIATIONS or "." in word


def _first_pass(token: _Token) -> None:
    tok = token.tok
    if tok in _SENT_END:
        token.sentbreak = True
    elif _ELLIPSIS.match(tok):
        token.ellipsis = True
    elif tok.endswith(".") and not tok.endswith(".."):
        word = tok[:-1].lower()
        if _is_abbreviation(word) or _is_abbreviation(word.split("-")[-1]):
            token.abbr = True
        else:
            token.sentbreak = True


def _ortho_heuristic(token: _Token) -> bool | str:
    """Punkt's orthographic test with no statistics: every word is unseen."""
    if token.tok in _ORTHO_PUNCT:
        return False
    if token.tok[0].islower():
        return False
    return "unknown"


def _second_pass(token: _Token, following: _Token | None) -> None:
    """Punkt's token-context rules for initials and numbers (no collocations, no starters)."""
    if following is None or not token.tok.endswith("."):
        return
    initial = bool(_INITIAL.match(token.tok))
    if not (initial or token.type_no_period == "##number##"):
        return
    verdict = _ortho_heuristic(following)
    if verdict is False or (verdict == "unknown" and initial and following.tok[0].isupper()):
        token.sentbreak, token.abbr = False, True


def _punkt_words(text: str) -> list[_Token]:
    return [_Token(w) for line in text.split("\n") if line.strip() for w in _PUNKT_WORD.findall(line)]


def _contains_sentbreak(context: str) -> bool:
    tokens = _punkt_words(context)
    for token in tokens:
        _first_pass(token)
    for token, following in zip(tokens, tokens[1:] + [None]):
        _second_pass(token, following)
    return any(t.sentbreak for t in tokens[:-1])


def _last_whitespace(text: str) -> int:
    """Index of the last whitespace character of ``text``; 0 when there is none (as Punkt)."""
    for i in range(len(text) - 1, -1, -1):
        if text[i] in " \t\n\r\x0b\x0c":
            return i
    return 0


def _end_contexts(text: str) -> Iterator[tuple[re.Match, str]]:
    """Candidate sentence ends with the text Punkt decides on: word, mark, what follows."""
    prev_slice, prev_match = slice(0, 0), None
    for match in _PERIOD_CONTEXT.finditer(text):
        start = _last_whitespace(text[prev_slice.stop:match.start()])
        start = start + prev_slice.stop + 1 if start else prev_slice.start
        word = slice(start, match.start())
        if prev_match and prev_slice.stop <= word.start:
            yield prev_match, text[prev_slice] + prev_match.group() + prev_match.group("after_tok")
        prev_slice, prev_match = word, match
    if prev_match:
        yield prev_match, text[prev_slice] + prev_match.group() + prev_match.group("after_tok")


def _sentence_slices(text: str) -> Iterator[slice]:
    last_break = 0
    for match, context in _end_contexts(text):
        if _contains_sentbreak(context):
            yield slice(last_break, match.end())
            last_break = match.start("next_tok") if match.group("next_tok") else match.end()
    yield slice(last_break, len(text.rstrip()))


def _realigned(text: str, slices: list[slice]) -> Iterator[slice]:
    """Move closing quotes/brackets after a sentence end onto that sentence (Punkt)."""
    realign = 0
    for current, following in zip(slices, slices[1:] + [None]):
        current = slice(current.start + realign, current.stop)
        match = _REALIGN.match(text[following]) if following else None
        if match:
            yield slice(current.start, following.start + len(match.group(0).rstrip()))
            realign = match.end()
        else:
            realign = 0
            if text[current]:
                yield current


def sent_tokenize(text: str) -> list[str]:
    """Punkt sentence splitting with our stand-in parameters (see the module docstring)."""
    return [text[s] for s in _realigned(text, list(_sentence_slices(text)))]


def word_tokenize(text: str) -> list[str]:
    """``nltk.word_tokenize(text)`` without nltk or its punkt data (see the module docstring)."""
    return [token for sentence in sent_tokenize(text) for token in treebank_tokenize(sentence)]


# ------------------------------------------------------------------ the script's functions


def mixed_segmentation(in_str: str, rm_punc: bool = False) -> list[str]:
    """CJK characters and listed marks one by one, other runs through ``word_tokenize``."""
    segments: list[str] = []
    run = ""
    for char in in_str.lower().strip():
        if rm_punc and char in _SP_SET:
            continue
        if _is_cjk(char) or char in _SP_SET:
            segments.extend(word_tokenize(run) if run else ())
            segments.append(char)
            run = ""
        else:
            run += char
    segments.extend(word_tokenize(run) if run else ())
    return segments


def remove_punctuation(in_str: str) -> str:
    """Lowercase, strip, and drop every character listed in ``SP_CHARS``."""
    return "".join(char for char in in_str.lower().strip() if char not in _SP_SET)


def find_lcs(s1: Sequence, s2: Sequence) -> tuple[Sequence, int]:
    """Longest common contiguous run of ``s1`` and ``s2`` and its length.

    Among runs of equal length the one ending first in ``s1`` wins (a later one must be
    strictly longer to replace it), as in the script's dynamic programme.
    """
    previous = [0] * (len(s2) + 1)
    best, end = 0, 0
    for i, a in enumerate(s1):
        current = [0] * (len(s2) + 1)
        for j, b in enumerate(s2):
            if a == b:
                current[j + 1] = previous[j] + 1
                if current[j + 1] > best:
                    best, end = current[j + 1], i + 1
        previous = current
    return s1[end - best:end], best


def _segment_f1(answer_segs: list[str], prediction_segs: list[str]) -> float:
    _, lcs_len = find_lcs(answer_segs, prediction_segs)
    if lcs_len == 0:
        return 0.0
    precision = 1.0 * lcs_len / len(prediction_segs)
    recall = 1.0 * lcs_len / len(answer_segs)
    return (2 * precision * recall) / (precision + recall)


def calc_f1_score(answers: Sequence[str], prediction: str) -> float:
    """Best LCS-based F1 (fraction in [0, 1]) of ``prediction`` against any gold answer."""
    if not answers:
        raise ValueError("no gold answers to score against")
    prediction_segs = mixed_segmentation(prediction, rm_punc=True)
    return max(_segment_f1(mixed_segmentation(a, rm_punc=True), prediction_segs) for a in answers)


def calc_em_score(answers: Sequence[str], prediction: str) -> float:
    """1.0 if ``prediction`` equals a gold answer once both lose the listed marks, else 0.0."""
    normalized = remove_punctuation(prediction)
    return 1.0 if any(remove_punctuation(a) == normalized for a in answers) else 0.0


# ------------------------------------------------------------------ totals


def _gold_items(gold: Gold) -> list[tuple[str, list[str]]]:
    items = list(gold.items()) if isinstance(gold, Mapping) else list(gold)
    if not items:
        raise DataError("CMRC2018 scoring: no gold questions")
    checked = []
    for qid, answers in items:
        if not isinstance(answers, (list, tuple)) or not all(isinstance(a, str) for a in answers):
            raise DataError(f"CMRC2018 question {qid}: gold answers must be a list of strings")
        if not answers:
            raise DataError(f"CMRC2018 question {qid}: no gold answer")
        checked.append((qid, list(answers)))
    return checked


def evaluate(gold: Gold, predictions: Mapping[str, str]) -> dict:
    """EM and F1 over the gold questions, as the official script totals them.

    ``gold`` maps question id to gold answers (a dict, or ``(id, answers)`` pairs, where a
    repeated id counts as often as it appears, like a repeated question in the file).
    Returns ``{"em", "f1", "total", "skip"}``: fractions in [0, 1] (the script prints x100,
    see ``official_summary``), the number of questions, and how many had no prediction
    (each scores 0).
    """
    if not isinstance(predictions, Mapping):
        raise DataError("CMRC2018 predictions must map question id to answer text")
    items = _gold_items(gold)
    em = f1 = 0.0
    skip = 0
    for qid, answers in items:
        if qid not in predictions:
            skip += 1
            continue
        prediction = predictions[qid]
        if not isinstance(prediction, str):
            raise DataError(f"CMRC2018 question {qid}: prediction is {type(prediction).__name__}, not a string")
        f1 += calc_f1_score(answers, prediction)
        em += calc_em_score(answers, prediction)
    return {"em": em / len(items), "f1": f1 / len(items), "total": len(items), "skip": skip}


def official_summary(result: Mapping) -> dict:
    """The script's printed line from ``evaluate``'s result: percentages as ``"%.3f"``."""
    em, f1 = 100.0 * result["em"], 100.0 * result["f1"]
    return {"AVERAGE": "%.3f" % ((em + f1) * 0.5), "F1": "%.3f" % f1, "EM": "%.3f" % em,
            "TOTAL": result["total"], "SKIP": result["skip"]}


def gold_answers(dataset) -> list[tuple[str, list[str]]]:
    """``(id, answers)`` pairs from a parsed CMRC 2018 file, SQuAD-style or original (v6 rules).

    SQuAD-style: ``{"data": [{"paragraphs": [{"qas": [{"id", "answers": [{"text"}]}]}]}]}``;
    original: a list of ``{"qas": [{"query_id", "answers": ["text", ...]}]}``.
    """
    try:
        data = dataset["data"] if isinstance(dataset, Mapping) and "data" in dataset else dataset
        pairs = []
        for instance in data:
            for para in instance["paragraphs"] if "paragraphs" in instance else [instance]:
                for qa in para["qas"]:
                    qid = qa["id"] if "id" in qa else qa["query_id"]
                    pairs.append((qid, [a["text"] if isinstance(a, Mapping) else a for a in qa["answers"]]))
    except (KeyError, TypeError) as e:
        raise DataError(f"not a CMRC 2018 dataset (missing or malformed {e})") from None
    return pairs


def evaluate_files(dataset_file: str | Path, prediction_file: str | Path) -> dict:
    """``evaluate`` on a CMRC 2018 dataset file and a ``{id: answer}`` JSON prediction file."""
    return evaluate(gold_answers(_read_json(dataset_file)), _read_json(prediction_file))


def _read_json(path: str | Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid UTF-8 JSON ({e})") from None
