"""jieba word segmentation, run once at preparation time and aligned to the char tokens.

Chinese whole-word masking (Cui et al., Chinese-BERT-wwm) masks every character of a word
together. The model still sees one token per character; only the choice of what to mask
follows jieba's words::

    原文      使用语言模型来预测下一个词的概率。
    分词      使用 语言 模型 来 预测 下 一个 词 的 概率 。
    全词Mask  使用 语言 [MASK] [MASK] 来 [MASK] [MASK] 下 一个 词 的 概率 。

Segmenting here, when instances are built, and storing a word index per token means
masking never has to decode ids back to text and re-run jieba (lossy and slow).

Alignment rules (token offsets index the original text, see ``zhbert.prep.tokenizer``):

* each token belongs to the jieba word its first character is in; a CJK token is one
  character, so it sits inside exactly one word;
* a token is never split: if jieba puts a word boundary inside a token (e.g. inside a
  Latin word or number), the words it touches are merged into the word where it starts;
* a "##" continuation piece always joins the word of the piece before it ("iphone ##13");
* [UNK] tokens have an offset span like any other token and are aligned the same way;
* whitespace and dropped control characters have no token and are skipped;
* word ids count from 0 within the sentence, in order, with no gaps.

If jieba's words do not concatenate back to the text or the offsets are inconsistent, the
sentence falls back to character-level groups (each token its own word, "##" pieces joined
to their head) and ``AlignedSentence.aligned`` is False (counted by ``segment_sentences``).

Entity / phrase spans (ERNIE-style masking) come from part-of-speech tags:

* entities: single words tagged nr, nrt, nrfg (person), ns (place), nt (organisation),
  nz (other proper noun);
* phrases: runs of 2-4 consecutive words tagged as noun-phrase parts (a, an, b, n, ng, nz,
  vn, and the entity tags) that end in a noun, found greedily left to right; a phrase
  covering an entity takes its place.

``entity_mode`` chooses where the tags come from:

* ``"dict"`` (default, fast): one ordinary ``jieba`` cut, then each word's tag is looked up
  in the tag table of jieba's dictionary (the one ``jieba.posseg`` uses, plus tags given in
  the user dictionary). Words not in the dictionary that are 2+ CJK characters were found
  by jieba's HMM as new words -- in practice mostly names -- and are tagged "nz" (proper
  noun) so they can become entities; numbers get "m", Latin words "eng", anything else "".
  This costs one dict lookup per word on top of the cut.
* ``"posseg"``: the full ``jieba.posseg`` cut (HMM-based POS tagging of unknown words);
  more accurate tags, about 30x slower than a plain cut.
* ``"none"``: no tags, no spans (all entity ids -1).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from itertools import chain, compress, repeat
from operator import is_, itemgetter
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from zhbert.errors import ConfigError, DataError
from zhbert.prep.tokenizer import CJK_CLASS, ChineseTokenizer, FastPath

ENTITY_TAGS = frozenset({"nr", "nrt", "nrfg", "ns", "nt", "nz"})
NOUN_TAGS = frozenset({"n", "ng", "nz", "vn", "nr", "nrt", "nrfg", "ns", "nt"})
PHRASE_TAGS = NOUN_TAGS | {"a", "an", "b"}
MAX_PHRASE_WORDS = 4
ENTITY_MODES = ("dict", "posseg", "none")
# Cut engines (data.segmenter): "fastcut" and "jieba" give jieba's words exactly (fastcut is
# zhbert.prep.fastcut, ~2x faster than jieba's Python); "rjieba" is jieba-rs (Rust, the PyPI
# package rjieba): the same dictionary and algorithm, not bit-identical (docs/data.md,
# "Segmentation engine", has the measured agreement).
ENGINES = ("fastcut", "jieba", "rjieba")

# Tag classes for span finding: E entity (a noun too), N other noun, A modifier, x other.
_TAG_CODE = {t: "E" for t in ENTITY_TAGS} | {t: "N" for t in NOUN_TAGS - ENTITY_TAGS} | {
    t: "A" for t in PHRASE_TAGS - NOUN_TAGS
}
_RUN_RE = re.compile(r"[ENA]{2,}|E")  # runs that may hold a span (lone N/A words cannot)


def _codes(tags: Sequence[str]) -> str:
    get = _TAG_CODE.get
    return "".join([get(t, "x") for t in tags])

_CJK_WORD_RE = re.compile(f"[{CJK_CLASS}]{{2,}}")
_NUM_RE = re.compile(r"^[0-9.%]+$")
_ENG_RE = re.compile(r"^[A-Za-z0-9+#&._%\-]+$")

# One jieba.Tokenizer per (process, user dictionary): the prefix dict takes ~1 s to load.
_JIEBA_CACHE: dict[Optional[str], object] = {}
_POSSEG_CACHE: dict[Optional[str], object] = {}
_RJIEBA_CACHE: dict[Optional[str], object] = {}
_TAGS_CACHE: dict[Optional[str], dict[str, str]] = {}
_CODES_CACHE: dict[Optional[str], dict[str, str]] = {}
# Caches are cleared when full. Their caps are about what a 10 MB corpus fills (blocks ~470
# bytes, HMM runs ~360 bytes an entry), so the memory of a run is the same at 10 MB and at
# 1 GB (benchmarks/prep_memory.py); at 150,000 entries each they had grown the peak by ~80 MB
# between the two.
_BLOCK_CACHE_SIZE = 20_000  # han blocks whose words are remembered (per Segmenter)
_GUESSED_CODES = 100_000  # span codes of words missing from the dictionary, remembered
_BLOCK_CACHE_CHARS = 16  # longer blocks hardly ever repeat
# Shorter texts are cut by jieba's lcut, longer ones by Segmenter.cut_words (same words): the
# measured break-even is ~300 characters (16 sentences of the shared corpus); one sentence is
# ~4x faster with lcut, a batch of 2048 ~3x faster with cut_words.
_CUT_WORDS_MIN_CHARS = 300


def _jieba_tokenizer(user_dict: Optional[str]):
    import jieba

    if user_dict not in _JIEBA_CACHE:
        if user_dict is not None and not Path(user_dict).is_file():
            raise DataError(f"{user_dict}: jieba user dictionary not found")
        jieba.setLogLevel(logging.WARNING)  # silence "Building prefix dict ..." chatter
        tok = jieba.Tokenizer()
        _initialize(tok)
        if user_dict is not None:
            path = Path(user_dict)
            try:
                tok.load_userdict(str(path))
            except (ValueError, UnicodeDecodeError) as e:
                raise DataError(f"{path}: invalid jieba user dictionary: {e}") from None
        _JIEBA_CACHE[user_dict] = tok
    return _JIEBA_CACHE[user_dict]


_FASTCUT_CACHE: dict[Optional[str], object] = {}


def _fast_cut(user_dict: Optional[str]):
    """One ``FastCut`` per (process, user dictionary), over the cached jieba tokenizer."""
    if user_dict not in _FASTCUT_CACHE:
        from zhbert.prep.fastcut import FastCut

        _FASTCUT_CACHE[user_dict] = FastCut(_jieba_tokenizer(user_dict))
    return _FASTCUT_CACHE[user_dict]


def _tag_table(user_dict: Optional[str]) -> dict[str, str]:
    """word -> POS tag from jieba's dictionary (+ the user dictionary's tags), loaded once."""
    if user_dict not in _TAGS_CACHE:
        import jieba.posseg  # loads the default dictionary's tag table on import

        tok = _jieba_tokenizer(user_dict)
        table = jieba.posseg.dt.word_tag_tab
        user_tags = getattr(tok, "user_word_tag_tab", None)
        if user_tags:
            table = {**table, **user_tags}
        _TAGS_CACHE[user_dict] = table
    return _TAGS_CACHE[user_dict]


def _code_table(user_dict: Optional[str]) -> dict[str, str]:
    """word -> span-class code (E/N/A/x) for every word of the tag table, built once.

    Same table as the codes of ``_tag_table`` (jieba.posseg's tag table of the main
    dictionary, plus user-dictionary tags), but read from a cache file so that a worker
    process does not import jieba.posseg (its HMM tables and tag table take ~1.5 s).
    """
    if user_dict not in _CODES_CACHE:
        import jieba

        get = _TAG_CODE.get
        # The main dictionary's file is all it reads: without a user dictionary an unloaded
        # jieba.Tokenizer names it (rjieba then never loads jieba's prefix dict, ~1 s).
        tok = _jieba_tokenizer(user_dict) if user_dict is not None else _JIEBA_CACHE.get(None, jieba.Tokenizer())
        table = dict(_main_dict_codes(tok))
        user_tags = getattr(tok, "user_word_tag_tab", None)
        if user_tags:
            table.update({w: get(t, "x") for w, t in user_tags.items()})
        _CODES_CACHE[user_dict] = table
    return _CODES_CACHE[user_dict]


# Start-up tables derived from jieba's main dictionary, cached in zhbert's per-user cache
# (zhbert.cache: checked JSON keyed by the dictionary's sha256). jieba's own cache is a
# marshal file in the shared temp directory, which another local user can plant; it is
# never read or written.
_PREFIX_TABLE = "jieba_prefix"
_CODES_TABLE = "jieba_codes"
_MAIN_CODES: dict[str, dict[str, str]] = {}  # content key -> table, per process


def _main_dict(tok) -> tuple[bytes, str]:
    """Bytes of the tokenizer's main dictionary file and their sha256."""
    f = tok.get_dict_file()
    try:
        data = f.read()
    finally:
        f.close()
    return data, hashlib.sha256(data).hexdigest()


def _valid_prefix(value) -> bool:
    """{"freq": {word: int >= 0}, "total": int}, as ``gen_pfdict`` returns them. ``total``
    sums every dictionary line, so a word listed twice counts twice: total >= sum(freq)."""
    if not (isinstance(value, dict) and set(value) == {"freq", "total"}):
        return False
    freq, total = value["freq"], value["total"]
    return (isinstance(freq, dict) and type(total) is int
            and all(type(n) is int and n >= 0 for n in freq.values()) and 0 < sum(freq.values()) <= total)


def _initialize(tok) -> None:
    """``jieba.Tokenizer.initialize`` without jieba's temp-dir marshal cache.

    Same prefix dict (``FREQ``: every dictionary word -> its frequency, every proper prefix
    of one -> 0; ``total``: sum of the frequencies) from the same ``gen_pfdict``, read from
    the per-user table cache when a checked copy for this dictionary's content is there.
    """
    import io

    from zhbert import cache

    data, digest = _main_dict(tok)
    key = cache.content_key("jieba-prefix/1", digest)
    value = cache.load(_PREFIX_TABLE, key, _valid_prefix)
    if value is None:
        freq, total = tok.gen_pfdict(io.BytesIO(data))
        cache.store(_PREFIX_TABLE, key, {"freq": freq, "total": total})
    else:
        freq, total = value["freq"], value["total"]
    with tok.lock:
        tok.FREQ, tok.total = freq, total
        tok.initialized = True


def _valid_codes(value) -> bool:
    """{"words": newline-joined words, "codes": one E/N/A/x per word}."""
    if not (isinstance(value, dict) and set(value) == {"words", "codes"}):
        return False
    words, codes = value["words"], value["codes"]
    return (isinstance(words, str) and isinstance(codes, str) and words.count("\n") + 1 == len(codes)
            and not codes.strip("ENAx"))


def _main_dict_codes(tok) -> dict[str, str]:
    """word -> code for jieba's main dictionary file (``word freq tag`` lines, read the way
    ``jieba.posseg.POSTokenizer.load_word_tag`` reads them), cached in the per-user table
    cache, keyed by the file's sha256 and the code mapping."""
    from zhbert import cache

    data, digest = _main_dict(tok)
    key = cache.content_key("jieba-codes/1", digest, repr(sorted(_TAG_CODE.items())))
    if key in _MAIN_CODES:
        return _MAIN_CODES[key]
    value = cache.load(_CODES_TABLE, key, _valid_codes)
    if value is not None:
        table = dict(zip(value["words"].split("\n"), value["codes"]))
    else:
        table = _parse_tag_codes(data)
        cache.store(_CODES_TABLE, key, {"words": "\n".join(table), "codes": "".join(table.values())})
    _MAIN_CODES[key] = table
    return table


def _parse_tag_codes(data: bytes) -> dict[str, str]:
    get = _TAG_CODE.get
    table: dict[str, str] = {}
    for lineno, line in enumerate(data.decode("utf-8").split("\n"), 1):
        line = line.strip()
        if not line:
            continue
        try:
            word, _, tag = line.split(" ")
        except ValueError:
            raise DataError(f"invalid POS dictionary entry at line {lineno}: {line}") from None
        table[word] = get(tag, "x")
    return table


def _rjieba(user_dict: Optional[str]):
    """One ``rjieba.Jieba`` per (process, user dictionary): jieba-rs with jieba's default
    dictionary (built in), plus the user dictionary's words read as jieba reads them. Without
    a user dictionary it is the module's own default instance (only ``cut`` is called)."""
    if user_dict not in _RJIEBA_CACHE:
        try:
            import rjieba
        except ImportError:
            raise ConfigError("data.segmenter=rjieba needs the rjieba package: pip install rjieba "
                              "(or set data.segmenter=fastcut)") from None
        if user_dict is not None and not Path(user_dict).is_file():
            raise DataError(f"{user_dict}: jieba user dictionary not found")
        if user_dict is None:
            # ``import rjieba`` has already built a Jieba with the default dictionary (its
            # module-level cut); building a second costs ~0.09 s of every run's serial start.
            engine = rjieba
        else:
            engine = rjieba.Jieba()
            for word, freq, tag in _user_dict_entries(Path(user_dict)):
                engine.add_word(word, freq, tag)
        _RJIEBA_CACHE[user_dict] = engine
    return _RJIEBA_CACHE[user_dict]


_USER_DICT_LINE = re.compile(r"^(.+?)( [0-9]+)?( [a-z]+)?$", re.U)  # jieba.re_userdict


def _user_dict_entries(path: Path) -> list[tuple[str, Optional[int], Optional[str]]]:
    """(word, freq or None, tag or None) per line of a jieba user dictionary, parsed as
    ``jieba.Tokenizer.load_userdict`` parses it."""
    out = []
    try:
        lines = path.read_bytes().decode("utf-8").lstrip("\ufeff").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: invalid jieba user dictionary: {e}") from None
    for line in lines:
        line = line.strip()
        if not line:
            continue
        word, freq, tag = _USER_DICT_LINE.match(line).groups()
        out.append((word.strip(), int(freq) if freq is not None else None, tag.strip() if tag else None))
    return out


def _posseg_tokenizer(user_dict: Optional[str]):
    if user_dict not in _POSSEG_CACHE:
        import jieba.posseg

        _POSSEG_CACHE[user_dict] = jieba.posseg.POSTokenizer(_jieba_tokenizer(user_dict))
    return _POSSEG_CACHE[user_dict]


class Segmenter:
    """jieba word segmentation (accurate mode) with POS tags for entity/phrase spans.

    hmm: let jieba's HMM join unknown characters into new words (jieba's default).
    user_dict: path of a jieba user dictionary ("word [freq] [tag]" per line).
    entity_mode: "dict" | "posseg" | "none" (see module docstring).
    engine: what cuts (``ENGINES``): "fastcut" (default; jieba's words, zhbert's faster
        re-implementation), "jieba" (jieba's own ``lcut``, the reference) or "rjieba" (jieba-rs:
        same dictionary and algorithm in Rust, not bit-identical). "posseg" mode always cuts
        with ``jieba.posseg``, so it takes "fastcut" or "jieba" only.
    """

    def __init__(self, hmm: bool = True, user_dict: Union[str, Path, None] = None, entity_mode: str = "dict",
                 engine: str = "fastcut"):
        if entity_mode not in ENTITY_MODES:
            raise ConfigError(f"entity_mode={entity_mode!r}: must be one of {', '.join(ENTITY_MODES)}")
        if engine not in ENGINES:
            raise ConfigError(f"segmenter={engine!r}: must be one of {', '.join(ENGINES)}")
        if engine == "rjieba" and entity_mode == "posseg":
            raise ConfigError("data.segmenter=rjieba with data.entity_mode=posseg: posseg cuts with jieba; "
                              "use data.segmenter=fastcut or data.entity_mode=dict")
        self.hmm = bool(hmm)
        self.user_dict = None if user_dict is None else str(user_dict)
        self.entity_mode = entity_mode
        self.engine = engine
        self.align_failures = 0  # sentences that fell back to character-level groups
        self._rjieba = _rjieba(self.user_dict) if engine == "rjieba" else None
        # jieba's own tokenizer (~1 s to load its prefix dict): the cut of "fastcut"/"jieba", the
        # user-dictionary tags of "dict" mode; rjieba with the main dictionary needs neither.
        self._jieba = (_jieba_tokenizer(self.user_dict) if engine != "rjieba" or self.user_dict
                       else None)
        self._posseg = _posseg_tokenizer(self.user_dict) if entity_mode == "posseg" else None
        self._codes = dict(_code_table(self.user_dict)) if entity_mode == "dict" else None
        self._codes_limit = len(self._codes) + _GUESSED_CODES if self._codes is not None else 0
        self._blocks: dict[str, list[str]] = {}  # jieba's words of a repeated han block
        self._hmm_runs: dict[str, list[str]] = {}  # the HMM's words of a run of unknown characters

    @property
    def _tags(self) -> Optional[dict[str, str]]:
        # Full tag table, only for `cut` (the fast path needs the codes alone): loading it
        # imports jieba.posseg, ~1.5 s.
        return _tag_table(self.user_dict) if self.entity_mode == "dict" else None

    def cut(self, text: str) -> list[tuple[str, str]]:
        """(word, tag) pairs in order; the words concatenate back to `text`."""
        if self._posseg is not None:
            return [(p.word, p.flag) for p in self._posseg.lcut(text, HMM=self.hmm)]
        words = self._rjieba.cut(text, self.hmm) if self._rjieba is not None else self._jieba.lcut(text, HMM=self.hmm)
        if self._tags is None:
            return [(w, "") for w in words]
        get = self._tags.get
        return [(w, get(w) or _guess_tag(w)) for w in words]

    def cut_codes(self, text: str) -> tuple[list[str], str]:
        """Words and one span-class code per word (see ``_TAG_CODE``; "" in "none" mode).

        This is what ``segment_sentences`` cuts with. In "dict" mode it is one cut plus one
        dict lookup per word: the code table (word -> E/N/A/x, from jieba's tag table) is
        built once per process and remembers the codes of words it had to guess. The cut is
        :meth:`cut_words` for long text (a batch of sentences), jieba's own ``lcut`` for
        short text, where cut_words's fixed cost per call is not paid back (same words).
        Except in "posseg" mode, text joined by "\\n" is cut as each line alone (jieba cuts
        every line apart), so ``segment_sentences`` cuts a batch of sentences in one call; a
        subclass that overrides this method must keep that property.
        """
        if self._posseg is not None:
            pairs = self._posseg.lcut(text, HMM=self.hmm)
            return [p.word for p in pairs], _codes([p.flag for p in pairs])
        if self._rjieba is not None:
            words = self._rjieba.cut(text, self.hmm)
        elif len(text) >= _CUT_WORDS_MIN_CHARS and self.engine == "fastcut":
            words = self.cut_words(text)
        else:
            words = self._jieba.lcut(text, HMM=self.hmm)
        if self._codes is None:
            return words, ""
        table = self._codes
        codes = list(map(table.get, words))
        if None in codes:
            # Guess each missing word once; the lookups stay in C (a Python loop over every
            # word of a batch cost more than the rjieba cut itself).
            missing = set(compress(words, map(is_, codes, repeat(None))))
            guesses = {w: _TAG_CODE.get(_guess_tag(w), "x") for w in missing}
            codes = list(map(guesses.get, words, codes))
            if len(table) + len(guesses) <= self._codes_limit:
                table.update(guesses)
        return words, "".join(codes)

    def cut_words(self, text: str) -> list[str]:
        """jieba's words of `text`: the same list as ``jieba.Tokenizer.lcut(text, HMM=hmm)``.

        jieba's own top-level loop (split into han blocks, cut each block, split the rest
        into single characters and whitespace), with one change: the words of a han block
        are remembered. A block's cut depends on nothing but the block (jieba cuts blocks
        independently), so a repeated block ("但是", "中国") gets the same words without the
        DAG and HMM; 8-14% of the characters of the shared corpora are in repeated blocks.
        The new blocks of `text` are cut together by ``zhbert.prep.fastcut.FastCut`` (jieba's
        algorithm, same output, about 2x faster; the HMM runs of all blocks in one vectorised
        Viterbi pass), and the HMM's words for a repeated run of unknown characters are
        remembered too.
        """
        import jieba

        re_han, re_skip = jieba.re_han_default, jieba.re_skip_default
        cache = self._blocks
        pieces: list = []  # words of a non-han stretch or of a cached block (list), or a block to cut (str)
        todo: dict[str, None] = {}
        han = True  # re.split with one group alternates non-han, han, non-han, ... (toggled first)
        for blk in re_han.split(text):
            han = not han
            if not blk:
                continue
            if not han:
                words = []
                for x in re_skip.split(blk):
                    if re_skip.match(x):
                        words.append(x)
                    else:
                        words.extend(x)  # one word per character
                pieces.append(words)
                continue
            got = cache.get(blk)
            if got is None:
                pieces.append(blk)
                todo[blk] = None
            else:
                pieces.append(got)
        cut = {}
        if todo:
            fast = _fast_cut(self.user_dict)
            blocks = list(todo)
            if self.hmm:
                cut = dict(zip(blocks, fast.cut_hmm_many(blocks, self._hmm_runs)))
            else:
                cut = {b: fast.cut_no_hmm(b) for b in blocks}
            if len(cache) + len(cut) > _BLOCK_CACHE_SIZE:
                cache.clear()
            cache.update((b, w) for b, w in cut.items() if len(b) <= _BLOCK_CACHE_CHARS)
        words: list[str] = []
        for p in pieces:
            words.extend(cut[p] if type(p) is str else p)
        return words

    def __repr__(self) -> str:
        return (f"Segmenter(hmm={self.hmm}, user_dict={self.user_dict!r}, entity_mode={self.entity_mode!r}, "
                f"engine={self.engine!r})")


def _guess_tag(word: str) -> str:
    """Tag of a word missing from jieba's dictionary (entity_mode="dict")."""
    if _CJK_WORD_RE.fullmatch(word):
        return "nz"  # an HMM-found new word: usually a name
    if _NUM_RE.match(word):
        return "m"
    if _ENG_RE.match(word):
        return "eng"
    return ""


def word_spans(tags: Sequence[str]) -> list[tuple[int, int]]:
    """Entity/phrase spans as [start, end) word-index ranges, in order, non-overlapping.

    Greedy left to right over runs of noun-phrase tags: take up to 4 words, drop trailing
    non-nouns; 2+ words left make a phrase, otherwise a lone entity word is a span.

    >>> word_spans(["ns", "n", "n", "p", "nr"])   # 中国 人民 银行 在 张三
    [(0, 3), (4, 5)]
    """
    return _spans_from_codes(_codes(tags))


def _spans_from_codes(codes: str) -> list[tuple[int, int]]:
    return list(map(tuple, _span_array(codes).tolist()))


def _span_array(codes: str):
    """``word_spans`` on span-class codes, as an (n_spans, 2) int64 array of word ranges.

    Runs of E/N/A codes are found with numpy; a lone E, or a run of 2-4 words that does not
    end in A, is one span as it is (nearly every run); the longer or A-final runs take the
    greedy loop."""
    import numpy as np

    c = np.frombuffer(codes.encode("ascii"), dtype=np.uint8)
    in_run = (c == 69) | (c == 78) | (c == 65)  # E, N, A
    edges = np.flatnonzero(np.diff(np.concatenate([[False], in_run, [False]]).astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    n = ends - starts
    last = c[np.maximum(ends - 1, 0)] if len(c) else c
    whole = ((n == 1) & (c[starts] == 69)) | ((n >= 2) & (n <= MAX_PHRASE_WORDS) & (last != 65))
    spans = np.stack([starts[whole], ends[whole]], axis=1).astype(np.int64)
    long_runs = np.flatnonzero((n >= 2) & ~whole)
    if not len(long_runs):
        return spans
    more: list[tuple[int, int]] = []
    for i, end in zip(starts[long_runs].tolist(), ends[long_runs].tolist()):
        while i < end:
            j = min(end, i + MAX_PHRASE_WORDS)
            while j > i and codes[j - 1] == "A":  # a phrase ends in a noun
                j -= 1
            if j - i >= 2:
                more.append((i, j))
                i = j
                continue
            if codes[i] == "E":
                more.append((i, i + 1))
            i += 1
    spans = np.concatenate([spans, np.asarray(more, dtype=np.int64).reshape(-1, 2)])
    return spans[np.argsort(spans[:, 0], kind="stable")]


@dataclass
class AlignedSentence:
    """One sentence's tokens with their whole-word and entity/phrase groups.

    ids: token ids (no [CLS]/[SEP]); word_ids: per token, index of its whole word (0, 1, ...
    within the sentence, non-decreasing); entity_ids: per token, index of its entity/phrase
    span (0, 1, ...) or -1; aligned: False when the character-level fallback was used.
    """

    ids: list[int]
    word_ids: list[int]
    entity_ids: list[int]
    aligned: bool = True

    @property
    def num_words(self) -> int:
        return self.word_ids[-1] + 1 if self.word_ids else 0


@dataclass
class Segmented:
    """Many aligned sentences end to end: what ``segment_batch`` returns (n sentences, T tokens).

    ids, word_ids, entity_ids: (T,) int64, numbered per sentence as in ``AlignedSentence``.
    starts: (n + 1,) int64, sentence k is tokens [starts[k], starts[k + 1]).
    aligned: (n,) bool, False where the character-level fallback was used.
    """

    ids: "np.ndarray"
    word_ids: "np.ndarray"
    entity_ids: "np.ndarray"
    starts: "np.ndarray"
    aligned: "np.ndarray"

    def __len__(self) -> int:
        return len(self.starts) - 1

    def lengths(self):
        return self.starts[1:] - self.starts[:-1]

    def sentence(self, k: int) -> AlignedSentence:
        a, b = int(self.starts[k]), int(self.starts[k + 1])
        return AlignedSentence(self.ids[a:b].tolist(), self.word_ids[a:b].tolist(), self.entity_ids[a:b].tolist(),
                               bool(self.aligned[k]))

    def sentences(self) -> list[AlignedSentence]:
        ids, words, ents, bounds = (self.ids.tolist(), self.word_ids.tolist(), self.entity_ids.tolist(),
                                    self.starts.tolist())
        return [AlignedSentence(ids[a:b], words[a:b], ents[a:b], ok)
                for a, b, ok in zip(bounds, bounds[1:], self.aligned.tolist())]

    @classmethod
    def from_sentences(cls, sents: Sequence) -> "Segmented":
        """From anything with ``ids``, ``word_ids`` and ``entity_ids`` lists (and optionally
        ``aligned``)."""
        import numpy as np

        from zhbert.prep.instances import flatten_sentences

        aligned = np.fromiter((getattr(s, "aligned", True) for s in sents), dtype=bool, count=len(sents))
        return cls(*flatten_sentences(sents), aligned)

    @classmethod
    def concat(cls, parts: Sequence["Segmented"]) -> "Segmented":
        import numpy as np

        if not parts:
            return cls.from_sentences([])
        shift = np.cumsum([0] + [int(p.starts[-1]) for p in parts[:-1]])
        starts = np.concatenate([parts[0].starts[:1]] + [p.starts[1:] + d for p, d in zip(parts, shift)])
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("ids", "word_ids", "entity_ids")),
                   starts, np.concatenate([p.aligned for p in parts]))

    def take(self, order) -> "Segmented":
        """The sentences ``order`` (indices, in that order)."""
        import numpy as np

        order = np.asarray(order, dtype=np.int64)
        lens = self.lengths()[order]
        starts = np.zeros(len(order) + 1, dtype=np.int64)
        np.cumsum(lens, out=starts[1:])
        idx = np.repeat(self.starts[:-1][order] - starts[:-1], lens) + np.arange(int(starts[-1]), dtype=np.int64)
        return Segmented(self.ids[idx], self.word_ids[idx], self.entity_ids[idx], starts, self.aligned[order])


def _continuation_flags(tokenizer_or_fn) -> Callable[[int], bool]:
    if isinstance(tokenizer_or_fn, ChineseTokenizer):
        flags = tokenizer_or_fn.continuation_flags()
        return flags.__getitem__
    return tokenizer_or_fn


def _fallback(ids: list[int], is_cont: Callable[[int], bool]) -> AlignedSentence:
    word_ids, w = [], -1
    for k, tid in enumerate(ids):
        if not (k > 0 and is_cont(tid)):
            w += 1
        word_ids.append(w)
    return AlignedSentence(list(ids), word_ids, [-1] * len(ids), aligned=False)


def align(
    text: str,
    ids: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    words_with_tags: Sequence[tuple[str, str]],
    is_subword: Union[ChineseTokenizer, Callable[[int], bool]],
) -> AlignedSentence:
    """Give each token the index of its jieba word and entity/phrase span (rules above).

    is_subword: the tokenizer, or a function id -> True for "##" continuation pieces.
    """
    words = [w for w, _ in words_with_tags]
    codes = _codes([t for _, t in words_with_tags])
    starts = [s for s, _ in offsets]
    ends = [e for _, e in offsets]
    return _align(text, list(ids), starts, ends, words, codes, _continuation_flags(is_subword))


def _align(text, ids, starts, ends, words, codes, is_cont) -> AlignedSentence:
    # Character -> jieba word index. jieba keeps every character (whitespace included).
    char_word = list(chain.from_iterable(map(repeat, range(len(words)), map(len, words))))
    if len(char_word) != len(text) or "".join(words) != text:
        return _fallback(ids, is_cont)
    if not ids:
        return AlignedSentence([], [], [], True)
    lengths = list(map(int.__sub__, ends, starts))
    try:
        jw = list(itemgetter(*starts)(char_word)) if len(ids) > 1 else [char_word[starts[0]]]
        jw_last = jw if max(lengths) == 1 else [char_word[e - 1] for e in ends]
    except (IndexError, TypeError):
        return _fallback(ids, is_cont)
    fast = min(lengths) > 0 and jw == jw_last and jw == sorted(jw)
    if fast and any(map(is_cont, ids)):
        fast = all(k > 0 and jw[k] == jw[k - 1] for k, c in enumerate(map(is_cont, ids)) if c)
    if fast:
        # Common case (Chinese text, whole Latin words): no token crosses a jieba boundary
        # and every "##" piece is in its head's jieba word, so the word ids are the dense
        # rank of the jieba word index.
        rank = {j: i for i, j in enumerate(dict.fromkeys(jw))}
        word_ids = list(map(rank.__getitem__, jw))
        first_jieba = list(rank)
    else:
        merged = _align_merging(ids, starts, ends, char_word, is_cont, len(text))
        if merged is None:
            return _fallback(ids, is_cont)
        word_ids, first_jieba = merged

    spans = _spans_from_codes(codes) if codes else []
    if not spans:
        return AlignedSentence(ids, word_ids, [-1] * len(ids), True)
    span_of_jieba = [-1] * len(words)
    for si, (a, b) in enumerate(spans):
        span_of_jieba[a:b] = repeat(si, b - a)
    return AlignedSentence(ids, word_ids, _entity_ids(span_of_jieba, first_jieba, word_ids), True)


def _align_merging(ids, starts, ends, char_word, is_cont, n_text):
    """Token-by-token alignment that merges jieba words a token or "##" piece straddles.

    Returns (word_ids, first jieba word of each output word), or None when the offsets
    are inconsistent (overlapping, empty, out of range).
    """
    remap: dict[int, int] = {}  # jieba word -> output word id (merged words share one)
    word_ids: list[int] = []
    first_jieba: list[int] = []
    prev_end = 0
    for k, tid in enumerate(ids):
        s, e = starts[k], ends[k]
        if not (prev_end <= s < e <= n_text):
            return None
        prev_end = e
        jw = char_word[s]
        if k > 0 and is_cont(tid):
            wid = word_ids[-1]  # "##" piece: the word of its head, whatever jieba says
        else:
            wid = remap.get(jw)
            if wid is None:
                wid = len(first_jieba)
                first_jieba.append(jw)
        remap[jw] = wid
        for other in range(jw + 1, char_word[e - 1] + 1):  # boundary inside the token: merge
            remap[other] = wid
        word_ids.append(wid)
    return word_ids, first_jieba


def segment_sentences(
    texts: Sequence[str], tokenizer: ChineseTokenizer, segmenter: Segmenter
) -> list[AlignedSentence]:
    """``segment_batch`` as one ``AlignedSentence`` per text."""
    return segment_batch(texts, tokenizer, segmenter).sentences()


def segment_batch(texts: Sequence[str], tokenizer: ChineseTokenizer, segmenter: Segmenter) -> Segmented:
    """Tokenize and segment many sentences; same result as ``align`` on each, faster.

    The batch is processed as one string (the texts joined by "\\n", which jieba never
    joins across): one ``segmenter.cut_codes`` call, token ids of CJK characters and
    punctuation from the tokenizer's code-point table (``FastPath.code_ids``) in one numpy
    step, only the runs between them (Latin words, numbers) through the Rust tokenizer, and
    word / entity ids as dense ranks computed with numpy (see ``_segment_joined``), returned
    as arrays (``Segmented``) without a Python list per sentence.
    Sentences where a token crosses a jieba word boundary take the general alignment
    (``_align``).

    Each sentence is cut alone instead (``segment_sentences_reference``) when the joined
    cut's words do not split back into the sentences (a custom ``cut_codes`` that drops or
    merges characters), in posseg mode (its cut of joined lines is not tested to equal the
    cut of each line) and for a batch holding "\\r" ("\\r" + "\\n" is one jieba word).

    Sentences that needed the character-level fallback are added to
    ``segmenter.align_failures``.
    """
    if segmenter.entity_mode != "posseg" and not any("\r" in t for t in texts):
        out = _segment_joined(texts, tokenizer, segmenter)
        if out is not None:
            return out
    return Segmented.from_sentences(segment_sentences_reference(texts, tokenizer, segmenter))


def segment_sentences_reference(
    texts: Sequence[str], tokenizer: ChineseTokenizer, segmenter: Segmenter
) -> list[AlignedSentence]:
    """``segment_sentences`` one sentence at a time (one ``cut_codes`` call each): the
    reference the batched path is tested against, and the path for posseg mode or a
    ``cut_codes`` whose words do not split back into the joined sentences."""
    fast = tokenizer.fast_path()
    plans, encoded = fast.plan(texts)
    is_cont = tokenizer.continuation_flags().__getitem__
    out = []
    for text, plan in zip(texts, plans):
        words, codes = segmenter.cut_codes(text)
        sent = _segment_planned(text, plan, encoded, fast, is_cont, words, codes)
        if not sent.aligned:
            segmenter.align_failures += 1
        out.append(sent)
    return out


def _segment_planned(text, plan, encoded, fast: FastPath, is_cont, words, codes) -> AlignedSentence:
    """`_align` working on the tokenizer's plan (``FastPath.plan``): a run of fast characters
    has one token per character, so its jieba word indices are a slice of the char -> word
    table."""
    char_word = list(chain.from_iterable(map(repeat, range(len(words)), map(len, words))))
    ids: list[int] = []
    jw: list[int] = []
    simple = len(char_word) == len(text) and "".join(words) == text
    get, unk = fast.ids.get, repeat(fast.unk_id)
    for start, part, slow in plan:
        if not slow:
            ids.extend(map(get, part, unk))
            if simple:
                jw.extend(char_word[start : start + len(part)])
            continue
        run_ids, run_offsets = encoded[part]
        ids.extend(run_ids)
        if not simple:
            continue
        for (a, b), tid in zip(run_offsets, run_ids):
            j = char_word[start + a]
            # A token crossing a jieba boundary, or a "##" piece outside its head's word,
            # needs the merging alignment.
            if b <= a or char_word[start + b - 1] != j or (jw and is_cont(tid) and jw[-1] != j):
                simple = False
                break
            jw.append(j)
    if not simple:
        return _align_one(text, fast, words, codes, is_cont)
    if not ids:
        return AlignedSentence([], [], [], True)

    n_words = len(words)
    if jw[-1] - jw[0] + 1 == n_words and len(dict.fromkeys(jw)) == n_words:
        word_ids, first_jieba = jw, None  # every jieba word has a token: ids are the indices
    else:
        rank = {j: i for i, j in enumerate(dict.fromkeys(jw))}
        word_ids = list(map(rank.__getitem__, jw))
        first_jieba = list(rank)
    spans = _spans_from_codes(codes) if codes else []
    if not spans:
        return AlignedSentence(ids, word_ids, [-1] * len(ids), True)
    span_of_jieba = [-1] * n_words
    for si, (a, b) in enumerate(spans):
        span_of_jieba[a:b] = repeat(si, b - a)
    if first_jieba is None:
        return AlignedSentence(ids, word_ids, list(map(span_of_jieba.__getitem__, jw)), True)
    return AlignedSentence(ids, word_ids, _entity_ids(span_of_jieba, first_jieba, word_ids), True)


def _entity_ids(span_of_jieba, first_jieba, word_ids) -> list[int]:
    # An output word is in the span of the jieba word it starts in; renumber spans 0, 1, ...
    word_span = list(map(span_of_jieba.__getitem__, first_jieba))
    used = [si for si in dict.fromkeys(word_span) if si >= 0]
    if used != list(range(len(used))):
        renum = {si: i for i, si in enumerate(used)}
        renum[-1] = -1
        word_span = [renum[si] for si in word_span]
    return list(map(word_span.__getitem__, word_ids))


def _segment_joined(texts, tokenizer: ChineseTokenizer, segmenter: Segmenter) -> Optional[Segmented]:
    """``segment_sentences`` on the texts joined by "\\n" (None: take the per-sentence path).

    Arrays below run over the joined string (chars), its jieba words, or its tokens (in
    text order). For a sentence whose tokens all sit inside one jieba word each (and "##"
    pieces in their head's word) -- nearly all -- ``_segment_planned``'s simple case says:
    word id = dense rank of the token's jieba word within the sentence, entity id = dense
    rank of that word's span (-1 outside). The other sentences go through ``_align``.
    """
    import numpy as np

    from zhbert.prep.instances import _ragged_arange

    if not texts:
        return Segmented.from_sentences([])
    joined = "\n".join(texts)
    n_chars = len(joined)
    words, codes = segmenter.cut_codes(joined)  # separators are "x": no span crosses a sentence
    word_len = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    if int(word_len.sum()) != n_chars or "".join(words) != joined:
        return None
    text_len = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    text_start = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(text_len[:-1] + 1, out=text_start[1:])
    char_word = np.repeat(np.arange(len(words), dtype=np.int64), word_len)  # (n_chars,)
    word_start = np.cumsum(word_len) - word_len
    # Each separator must be a word of its own, so the words split into sentences.
    seps = text_start[1:] - 1
    sep_words = char_word[seps]
    if not (np.all(word_start[sep_words] == seps) and np.all(word_len[sep_words] == 1)):
        return None
    # Sentence k owns words [first_word[k], first_word[k + 1] - 1) (its separator excluded).
    first_word = np.empty(len(texts) + 1, dtype=np.int64)
    first_word[0] = 0
    first_word[1:-1] = sep_words + 1
    first_word[-1] = len(words) + 1

    # The entity/phrase span of each word, -1 outside.
    span_of_word = np.full(len(words), -1, dtype=np.int64)
    if codes:
        sp = _span_array(codes)  # (n_spans, 2) word ranges
        if len(sp):
            span_of_word[np.repeat(sp[:, 0], sp[:, 1] - sp[:, 0]) + _ragged_arange(sp[:, 1] - sp[:, 0])] = \
                np.repeat(np.arange(len(sp), dtype=np.int64), sp[:, 1] - sp[:, 0])

    # Tokens: fast characters from the table, slow runs through the (cached) Rust tokenizer.
    fast = tokenizer.fast_path()
    cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    char_ids = fast.code_ids[cps]
    fast_pos = np.flatnonzero(char_ids >= 0)
    slow_start, slow_end, slow_ids = _slow_tokens(fast, joined)
    if slow_ids:
        tok_start = np.concatenate([fast_pos, np.asarray(slow_start, dtype=np.int64)])
        tok_end = np.concatenate([fast_pos + 1, np.asarray(slow_end, dtype=np.int64)])
        tok_id = np.concatenate([char_ids[fast_pos].astype(np.int64), np.asarray(slow_ids, dtype=np.int64)])
        order = np.argsort(tok_start, kind="stable")
        tok_start, tok_end, tok_id = tok_start[order], tok_end[order], tok_id[order]
    else:
        tok_start, tok_end, tok_id = fast_pos, fast_pos + 1, char_ids[fast_pos].astype(np.int64)
    n_tok = len(tok_id)
    if n_tok == 0:
        return Segmented.from_sentences([AlignedSentence([], [], [], True) for _ in texts])
    # Sentence of each token, and each sentence's token range.
    tok_sent = np.searchsorted(text_start, tok_start, side="right") - 1
    sent_first_tok = np.searchsorted(tok_sent, np.arange(len(texts) + 1), side="left")

    is_cont = np.asarray(tokenizer.continuation_flags(), dtype=bool)
    jw = char_word[tok_start]
    new_sent = np.ones(n_tok, dtype=bool)
    new_sent[1:] = tok_sent[1:] != tok_sent[:-1]
    prev_jw = np.empty_like(jw)
    prev_jw[0] = -1
    prev_jw[1:] = jw[:-1]
    bad = (tok_end <= tok_start) | (char_word[np.maximum(tok_end - 1, 0)] != jw)
    bad |= is_cont[tok_id] & ~new_sent & (jw != prev_jw)
    bad_sents = set(np.unique(tok_sent[bad]).tolist()) if bad.any() else set()

    # Dense ranks within each sentence (jw is non-decreasing inside a good sentence).
    new_word = new_sent | (jw != prev_jw)
    cw = np.cumsum(new_word)
    word_ids = cw - 1 - (cw - new_word)[sent_first_tok[:-1]].repeat(np.diff(sent_first_tok))
    ent = span_of_word[jw]
    prev_ent = np.empty_like(ent)
    prev_ent[0] = -1
    prev_ent[1:] = ent[:-1]
    new_ent = (ent >= 0) & (new_sent | (ent != prev_ent))
    ce = np.cumsum(new_ent)
    ent_ids = np.where(ent >= 0, ce - 1 - (ce - new_ent)[sent_first_tok[:-1]].repeat(np.diff(sent_first_tok)), -1)

    out = Segmented(tok_id, word_ids, ent_ids, sent_first_tok, np.ones(len(texts), dtype=bool))
    if not bad_sents:
        return out
    # The few sentences with a token across a jieba word boundary: the general alignment,
    # spliced in place of their rows.
    fixed = []
    for k in sorted(bad_sents):
        sent = _align_one(texts[k], fast, words[first_word[k]:first_word[k + 1] - 1],
                          codes[first_word[k]:first_word[k + 1] - 1] if codes else "",
                          tokenizer.continuation_flags().__getitem__)
        if not sent.aligned:
            segmenter.align_failures += 1
        fixed.append(sent)
    parts, prev = [], 0
    for k, sent in zip(sorted(bad_sents), fixed):
        if k > prev:
            parts.append(out.take(np.arange(prev, k)))
        parts.append(Segmented.from_sentences([sent]))
        prev = k + 1
    if prev < len(texts):
        parts.append(out.take(np.arange(prev, len(texts))))
    return Segmented.concat(parts)


def _slow_tokens(fast: FastPath, joined: str) -> tuple[list[int], list[int], list[int]]:
    """(starts, ends, ids) of the tokens of every slow run of `joined`, in text order."""
    matches = [(m.start(), m.group()) for m in fast.runs_re.finditer(joined)]
    matches = [(a, run) for a, run in matches if not run.isspace()]
    cache = fast.encode_runs(run for _, run in matches)
    starts: list[int] = []
    ends: list[int] = []
    ids: list[int] = []
    for a, run in matches:
        run_ids, run_offsets = cache[run]
        ids.extend(run_ids)
        for s, e in run_offsets:
            starts.append(a + s)
            ends.append(a + e)
    return starts, ends, ids


def _align_one(text: str, fast: FastPath, words, codes, is_cont) -> AlignedSentence:
    """``_align`` on `text` tokenized alone: the general alignment, for the few sentences
    where a token crosses a jieba word boundary."""
    ids, starts, ends = fast.spans([text])[0]
    return _align(text, ids, starts, ends, list(words), codes, is_cont)
