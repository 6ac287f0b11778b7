"""Character-level Chinese tokenizer on the Rust ``tokenizers`` library, plus a vocab builder.

This is bert-base-chinese's tokenizer: every CJK character is one token, everything else
goes through WordPiece, text is lowercased and accent-stripped first::

    text      我用iPhone13拍了Café的照片
    tokens    我 用 iphone ##13 拍 了 cafe 的 照 片

The pipeline is ``BertNormalizer(clean_text, handle_chinese_chars, lowercase)`` ->
``BertPreTokenizer`` (split on whitespace and punctuation) -> ``WordPiece("[UNK]", "##",
max_input_chars_per_word=100)``, built from any BERT ``vocab.txt``. On the bert-base-chinese
vocab the ids equal ``transformers.BertTokenizer(vocab_file, do_lower_case=True)`` (tested
against both transformers' tokenizers-backed class and its pure-Python legacy class).

Offsets returned by :meth:`ChineseTokenizer.encode` are character offsets into the text
passed in, even where normalisation changed it ("Café" -> "cafe" still spans 0..4); the
segmentation step (``zhbert.prep.segment``) relies on that to align jieba's words to tokens.

``build_vocab`` makes a vocab.txt from a corpus with bert-base-chinese's special-token
layout ([PAD]=0, [unused1..99]=1..99, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103) so that
models and data made with either vocab agree on what the special ids mean.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from itertools import repeat
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from zhbert.errors import DataError
from zhbert.files import read_utf8, write_text_atomic

PathLike = Union[str, Path]

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
NORMALIZATION_KEY = "zhbert_text_normalization"  # in tokenizer_config.json
MODEL_MAX_LENGTH = 512
_RUN_CACHE_SIZE = 200_000  # cached encodings of non-Chinese runs ("2023", "iphone13")

# The code points BERT treats as "Chinese characters" (the CJK Unified Ideographs blocks,
# same table as google-research/bert and tokenizers' BertNormalizer). Each is split off as
# its own token before WordPiece.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),  # sic: tokenizers' table starts at 2B920 (Google's at 2B820); we follow tokenizers
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
_CJK_CLASS = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in _CJK_RANGES)
CJK_CLASS = _CJK_CLASS  # for building regexes elsewhere (zhbert.prep.segment)
CJK_RE = re.compile(f"[{_CJK_CLASS}]")
# Tokens that look like reserved markers: [PAD], [unused17], [MASK] ... plus BERT's <S>/<T>.
_RESERVED_RE = re.compile(r"^\[[^\[\]]+\]$|^<S>$|^<T>$")


def _is_punct(cp: int) -> bool:
    ch = chr(cp)
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def _punctuation_code_points() -> list[int]:
    """Code points of ASCII punctuation and Unicode category P*, cached per user.

    Scanning all 1.1M code points with ``unicodedata.category`` costs ~0.3 s in every
    worker process; the result depends only on the Unicode version. The table lives in
    zhbert's per-user cache (``zhbert.cache``); a cached list is used only if it is strictly
    ascending and every entry is punctuation (cheap: ~800 entries), else it is rebuilt.
    """
    from zhbert import cache

    key = cache.content_key("punct/1", unicodedata.unidata_version, string.punctuation)

    def valid(cps) -> bool:
        return (isinstance(cps, list) and all(type(c) is int and 0 <= c < 0x110000 for c in cps)
                and all(a < b for a, b in zip(cps, cps[1:])) and all(map(_is_punct, cps)))

    cps = cache.load("punct", key, valid)
    if cps is None:
        cps = [cp for cp in range(0x110000) if _is_punct(cp)]
        cache.store("punct", key, cps)
    return cps


def is_cjk_char(ch: str) -> bool:
    """True for a single character BERT splits off as its own token (CJK ideograph)."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def read_vocab(vocab_path: PathLike) -> list[str]:
    """Tokens of a BERT vocab.txt in id order (line i -> id i), validated.

    Raises DataError (naming the file) when it is missing, unreadable, empty, lacks one of
    the special tokens, or lists a token twice.
    """
    path = Path(vocab_path)
    # a BOM written by a Windows editor is dropped, not made part of the first token ([PAD])
    text = read_utf8(path, "vocab file", "a vocab.txt file")
    # Same rule as transformers' load_vocab: one token per line, only the newline stripped.
    tokens = [line.rstrip("\r\n") for line in text.split("\n")]
    if tokens and tokens[-1] == "":
        tokens.pop()  # trailing newline at end of file
    if not tokens:
        raise DataError(f"{path}: vocab file is empty")
    seen: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        if tok in seen:
            raise DataError(f"{path}:{i + 1}: token {tok!r} already listed on line {seen[tok] + 1}")
        seen[tok] = i
    missing = [t for t in SPECIAL_TOKENS if t not in seen]
    if missing:
        raise DataError(f"{path}: vocab lacks the special token(s) {', '.join(missing)}")
    return tokens


# data.fullwidth's folding (zhbert.prep.corpus.normalize_text): the full-width ASCII forms
# U+FF01..U+FF5E become U+0021..U+007E and the ideographic space U+3000 a space.
FULLWIDTH_FOLDS = tuple((chr(cp), chr(cp - 0xFEE0)) for cp in range(0xFF01, 0xFF5F)) + (("\u3000", " "),)


def _build_backend(vocab: dict[str, int], lowercase: bool, fullwidth: bool = False) -> Tokenizer:
    """The ``tokenizers`` pipeline; ``fullwidth`` puts one ``Replace`` per folded character in
    front of the BertNormalizer, so tokenizer.json itself reproduces the corpus folding and
    every client that loads it (transformers' ``PreTrainedTokenizerFast``/``AutoTokenizer``,
    tokenizers, ...) gives the pretraining ids on raw text."""
    backend = Tokenizer(WordPiece(vocab, unk_token=UNK, continuing_subword_prefix="##", max_input_chars_per_word=100))
    # strip_accents=None: follows `lowercase`, as in the original BERT.
    bert = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                      lowercase=lowercase)
    if fullwidth:
        backend.normalizer = normalizers.Sequence([normalizers.Replace(a, b) for a, b in FULLWIDTH_FOLDS] + [bert])
    else:
        backend.normalizer = bert
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    # Special tokens written literally in the text ("[MASK]") map to their ids, like transformers.
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    return backend


def _longest_first(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """Lengths after longest-first truncation of a pair to `budget` tokens.

    Same arithmetic as tokenizers' TruncationStrategy::LongestFirst (what transformers uses
    with ``truncation=True``): trim the longer side down to the shorter one, then share the
    remainder, the second sequence getting the odd token.
    """
    if n1 + n2 <= budget:
        return n1, n2
    swap = n1 > n2
    if swap:
        n1, n2 = n2, n1
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    return (n2, n1) if swap else (n1, n2)


@dataclass(eq=False)
class FastPath:
    """The tables behind :meth:`ChineseTokenizer.encode_batch`, shared with zhbert.prep.segment.

    The Rust pipeline is exact but, on Chinese text, costs as much as jieba. Most characters
    of Chinese text are *fast*, though: the backend makes a token of each of them alone,
    whatever surrounds it, so its id is a table lookup. Only the *slow runs* between them
    (Latin words, numbers, rare symbols) go through the backend, all runs of a batch in one
    ``encode_batch`` call, and each distinct run once (``run_cache``)::

        text      我用iPhone13拍了照片。
        parts     我用 | iPhone13 | 拍了照片。       fast, slow run, fast
        tokens    我 用 | iphone ##13 | 拍 了 照 片 。

    Fast characters: the CJK unified ideographs (always split off; the compatibility blocks
    F900-FAFF and 2F800-2FA1F are left out, NFD changes them) and the punctuation that
    normalises to itself and is split off between letters and digits (probed on the backend:
    ``a{c}1{c}b`` must give five one-character tokens). A fast character missing from the
    vocab is [UNK] whatever surrounds it, so it is fast too. The result equals
    ``backend.encode`` (tested on every code point in several contexts), ~10x faster on
    Chinese text. zhbert.prep.segment tokenizes a whole joined batch with the same tables as
    numpy arrays (:attr:`code_ids`, :attr:`runs_re`).

    ids: fast character -> token id; fast characters missing from the vocab are not keys
        (their token is ``unk_id``).
    slow_re: matches the slow runs of a text (maximal runs of non-fast characters).
    ranges: the fast code points, as sorted inclusive (lo, hi) ranges.
    unk_id: the [UNK] id.
    backend: the ``tokenizers.Tokenizer`` that encodes slow runs.
    run_cache: slow run -> (ids, offsets into the run), kept to about ``_RUN_CACHE_SIZE`` runs.
    """

    ids: dict[str, int]
    slow_re: re.Pattern
    ranges: list[tuple[int, int]]
    unk_id: int
    backend: Tokenizer
    run_cache: dict[str, tuple[list[int], list[tuple[int, int]]]] = field(default_factory=dict)

    @classmethod
    def build(cls, vocab: dict[str, int], backend: Tokenizer) -> "FastPath":
        """Find the fast characters of ``backend`` over ``vocab`` (~0.1 s; see class docstring)."""
        norm = backend.normalizer
        special_chars = set("".join(SPECIAL_TOKENS))  # "[" must reach the added-token matcher
        punct = [
            c for c in map(chr, _punctuation_code_points())
            if c not in special_chars and norm.normalize_str(c).strip() == c
        ]
        a, one, b, unk = (vocab.get(x) for x in ("a", "1", "b", UNK))
        probes = [f"a{c}1{c}b" for c in punct]
        fast_cps = []
        for c, enc in zip(punct, backend.encode_batch(probes, add_special_tokens=False)):
            t = vocab.get(c, unk)
            if enc.ids == [a, t, one, t, b] and enc.offsets == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]:
                fast_cps.append(ord(c))
        cjk = [r for r in _CJK_RANGES if r[0] not in (0xF900, 0x2F800)]  # no compatibility blocks
        ranges = [(cp, cp) for cp in fast_cps] + cjk
        char_class = "".join(f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in sorted(ranges))
        ids = {}
        for lo, hi in ranges:
            for cp in range(lo, hi + 1):
                if chr(cp) in vocab:
                    ids[chr(cp)] = vocab[chr(cp)]
        return cls(ids, re.compile(f"[^{char_class}]+"), sorted(ranges), unk, backend)

    @cached_property
    def code_ids(self) -> np.ndarray:
        """(0x110000,) int32 over all code points: the token id of a fast character ([UNK]
        for one missing from the vocab), -1 for the others. Built on first use (~10 ms)."""
        ids = np.full(0x110000, -1, dtype=np.int32)
        for lo, hi in self.ranges:
            ids[lo:hi + 1] = self.unk_id
        ids[np.fromiter(map(ord, self.ids), dtype=np.int64, count=len(self.ids))] = np.fromiter(
            self.ids.values(), dtype=np.int32, count=len(self.ids))
        return ids

    @cached_property
    def runs_re(self) -> re.Pattern:
        """``slow_re`` that also stops at "\\n": a batch joined with "\\n" splits into its
        texts' runs (splitting a run at whitespace does not change its tokens)."""
        return re.compile(self.slow_re.pattern[:-2] + "\n]+")

    def encode_runs(self, runs: Iterable[str]) -> dict[str, tuple[list[int], list[tuple[int, int]]]]:
        """The cache, holding ``(ids, offsets)`` of every run in ``runs``: the runs not cached
        yet are encoded in one ``backend.encode_batch`` call. When the cache would outgrow
        ``_RUN_CACHE_SIZE``, it keeps only the runs asked for now."""
        cache = self.run_cache
        needed = dict.fromkeys(runs)
        todo = [run for run in needed if run not in cache]
        if todo:
            if len(cache) + len(todo) > _RUN_CACHE_SIZE:
                keep = {run: cache[run] for run in needed if run in cache}
                cache.clear()
                cache.update(keep)
            for run, enc in zip(todo, self.backend.encode_batch(todo, add_special_tokens=False)):
                cache[run] = (enc.ids, enc.offsets)
        return cache

    def plan(self, texts: Sequence[str]) -> tuple[list[list[tuple]], dict]:
        """Split each text into fast parts and slow runs; encode all slow runs in one call.

        Returns (plans, encodings): a plan is a list of ``(start, part, slow)`` in text order:
        `part` is a str of fast characters (slow False: one token each, id from ``ids`` or
        [UNK]) or a slow run (slow True) whose ``(ids, offsets)`` relative to `start` are
        ``encodings[part]``. Whitespace-only runs (no tokens) are left out.
        """
        slow_re = self.slow_re
        plans: list[list[tuple]] = []
        needed: dict[str, None] = {}
        for text in texts:
            plan, pos = [], 0
            for m in slow_re.finditer(text):
                a, b = m.span()
                if a > pos:
                    plan.append((pos, text[pos:a], False))
                run = m.group()
                if not run.isspace():
                    plan.append((a, run, True))
                    needed[run] = None
                pos = b
            if pos < len(text):
                plan.append((pos, text[pos:], False))
            plans.append(plan)
        return plans, self.encode_runs(needed)

    def spans(self, texts: Sequence[str]) -> list[tuple[list[int], list[int], list[int]]]:
        """(ids, start offsets, end offsets) of each text's tokens."""
        plans, encoded = self.plan(texts)
        out = []
        get, unk = self.ids.get, repeat(self.unk_id)
        for plan in plans:
            ids: list[int] = []
            starts: list[int] = []
            ends: list[int] = []
            for start, part, slow in plan:
                if not slow:  # fast characters: one token each
                    ids.extend(map(get, part, unk))
                    starts.extend(range(start, start + len(part)))
                    ends.extend(range(start + 1, start + len(part) + 1))
                else:
                    run_ids, run_offsets = encoded[part]
                    ids.extend(run_ids)
                    for a, b in run_offsets:
                        starts.append(start + a)
                        ends.append(start + b)
            out.append((ids, starts, ends))
        return out


class ChineseTokenizer:
    """bert-base-chinese style tokenizer over a BERT vocab.txt (see module docstring).

    Build with :meth:`from_vocab` or :meth:`from_dir`. ``backend`` is the underlying
    ``tokenizers.Tokenizer`` (no truncation or padding configured on it).
    """

    def __init__(self, tokens: Sequence[str], lowercase: bool = True):
        self.tokens: list[str] = list(tokens)
        self.vocab: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        self.vocab_size: int = len(self.tokens)
        self.lowercase: bool = bool(lowercase)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (self.vocab[t] for t in SPECIAL_TOKENS)
        self._normalization: dict | None = None
        self.backend: Tokenizer = _build_backend(self.vocab, self.lowercase)
        self._continuation: list[bool] | None = None
        self._fast_path: FastPath | None = None

    @property
    def normalization(self) -> dict | None:
        """Corpus normalisation the model was pretrained with (zhbert.prep.corpus.normalize_text
        keyword arguments, e.g. ``{"fullwidth": False, "t2s": False}``); None = raw text.

        ``zhbert prepare`` records it and it travels in every export: the full-width folding
        as Replace steps in tokenizer.json's normalizer (the backend here gets the same steps,
        so :meth:`encode` of raw text gives the pretraining ids), all of it under
        ``zhbert_text_normalization`` in tokenizer_config.json. ``t2s`` (OpenCC converts
        phrases, not characters) cannot be a tokenizer.json step: :meth:`normalize` applies it.
        """
        return self._normalization

    @normalization.setter
    def normalization(self, value: dict | None) -> None:
        self._normalization = dict(value) if value is not None else None
        self.backend = _build_backend(self.vocab, self.lowercase, fullwidth=bool(value and value.get("fullwidth")))
        self._fast_path = None  # probed on the new backend when next needed

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_vocab(cls, vocab_path: PathLike, lowercase: bool = True) -> "ChineseTokenizer":
        """Tokenizer over a BERT vocab.txt; DataError when the file is missing or invalid."""
        return cls(read_vocab(vocab_path), lowercase=lowercase)

    @classmethod
    def from_dir(cls, path: PathLike) -> "ChineseTokenizer":
        """Tokenizer from a directory holding vocab.txt (as written by :meth:`save`).

        vocab.txt is the source of truth; ``do_lower_case`` is read from
        tokenizer_config.json when present (default True); tokenizer.json is not needed.
        """
        d = Path(path)
        if not d.is_dir():
            raise DataError(f"{d}: tokenizer directory not found")
        lowercase, normalization = True, None
        cfg_path = d / "tokenizer_config.json"
        if cfg_path.exists():
            try:
                cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise DataError(f"{cfg_path}: unreadable tokenizer config: {e}") from None
            lowercase = bool(cfg.get("do_lower_case", True))
            normalization = cfg.get(NORMALIZATION_KEY)
            if normalization is not None and not (
                    isinstance(normalization, dict) and set(normalization) <= {"fullwidth", "t2s"}):
                raise DataError(f"{cfg_path}: {NORMALIZATION_KEY} must be a mapping with keys fullwidth, t2s")
        tok = cls.from_vocab(d / "vocab.txt", lowercase=lowercase)
        tok.normalization = normalization
        return tok

    # -- encoding -------------------------------------------------------------------------

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and (start, end) character offsets into `text`; no [CLS]/[SEP]."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """:meth:`encode` for many texts at once, through :meth:`fast_path`: CJK characters and
        punctuation by table lookup, only the runs between them through the Rust pipeline, in
        one ``backend.encode_batch`` call. Same result as ``backend.encode``."""
        return [(ids, list(zip(starts, ends))) for ids, starts, ends in self.fast_path().spans(texts)]

    def fast_path(self) -> FastPath:
        """The fast-path tables of this tokenizer (:class:`FastPath`), built on first use."""
        if self._fast_path is None:
            self._fast_path = FastPath.build(self.vocab, self.backend)
        return self._fast_path

    def tokenize(self, text: str) -> list[str]:
        """Token strings of `text` (e.g. ["我", "用", "iphone", "##13"])."""
        return [self.tokens[i] for i in self.encode(text)[0]]

    def encode_pair(self, a: str, b: str | None = None, max_length: int | None = None) -> dict[str, list[int]]:
        """Model inputs ``[CLS] a [SEP] (b [SEP])`` with longest-first truncation to `max_length`.

        Returns ``input_ids``, ``token_type_ids`` (0 for [CLS] a [SEP], 1 for b [SEP]) and
        ``attention_mask`` (all 1, no padding). Matches transformers'
        ``tok(a, b, truncation=True, max_length=max_length)``.
        """
        ids_a = self.encode(a)[0]
        ids_b = self.encode(b)[0] if b is not None else None
        n_special = 2 if ids_b is None else 3
        if max_length is not None:
            budget = max_length - n_special
            if budget < 0:
                raise ValueError(f"max_length={max_length} leaves no room for {n_special} special tokens")
            if ids_b is None:
                ids_a = ids_a[:budget]
            else:
                n1, n2 = _longest_first(len(ids_a), len(ids_b), budget)
                ids_a, ids_b = ids_a[:n1], ids_b[:n2]
        input_ids = [self.cls_id, *ids_a, self.sep_id]
        token_type_ids = [0] * len(input_ids)
        if ids_b is not None:
            input_ids += [*ids_b, self.sep_id]
            token_type_ids += [1] * (len(ids_b) + 1)
        return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": [1] * len(input_ids)}

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`: "##" pieces joined to their word, no spaces next to CJK characters.

        (transformers' decode puts a space between every token, "我 爱 bert"; this gives
        "我爱bert". Lowercasing and accent stripping are not undone.)
        """
        text = self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        return re.sub(f"(?<=[{_CJK_CLASS}]) | (?=[{_CJK_CLASS}])", "", text)

    # -- vocabulary -----------------------------------------------------------------------

    def normal_token_ids(self) -> np.ndarray:
        """Ids usable as random MLM replacements (int64, sorted).

        Excludes the special tokens, ``[unused*]`` and any other ``[xxx]``-style marker, and
        BERT's reserved ``<S>``/``<T>``.
        """
        keep = [i for i, t in enumerate(self.tokens) if t and not _RESERVED_RE.match(t)]
        return np.asarray(keep, dtype=np.int64)

    def continuation_flags(self) -> list[bool]:
        """Per id: True for "##" continuation pieces (they join the word before them)."""
        if self._continuation is None:
            self._continuation = [t.startswith("##") and len(t) > 2 for t in self.tokens]
        return self._continuation

    def normalize(self, text: str) -> str:
        """`text` normalised as the pretraining corpus was (identity when nothing recorded)."""
        if not self.normalization:
            return text
        from zhbert.prep.corpus import normalize_text

        return normalize_text(text, **self.normalization)

    def vocab_sha256(self) -> str:
        """sha256 of the token list; equals ``sha256sum vocab.txt`` of the saved vocab."""
        return hashlib.sha256("".join(t + "\n" for t in self.tokens).encode("utf-8")).hexdigest()

    def save(self, dir: PathLike) -> None:
        """Write vocab.txt, tokenizer.json, tokenizer_config.json and special_tokens_map.json.

        The directory loads with ``transformers.AutoTokenizer.from_pretrained(dir)``,
        ``PreTrainedTokenizerFast(tokenizer_file=dir/"tokenizer.json")`` and
        :meth:`from_dir`, all giving the same ids.
        """
        out = Path(dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "vocab.txt").write_text("".join(t + "\n" for t in self.tokens), encoding="utf-8")
        self.backend.save(str(out / "tokenizer.json"))
        special = {"pad_token": PAD, "unk_token": UNK, "cls_token": CLS, "sep_token": SEP, "mask_token": MASK}
        config = {
            # PreTrainedTokenizerFast builds from tokenizer.json and keeps its normalizer;
            # transformers 5's BertTokenizer would rebuild its own and drop the folding.
            "tokenizer_class": "PreTrainedTokenizerFast",
            "do_lower_case": self.lowercase,
            "tokenize_chinese_chars": True,
            "strip_accents": None,
            "model_max_length": MODEL_MAX_LENGTH,
            "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
            **special,
        }
        if self.normalization is not None:
            config[NORMALIZATION_KEY] = dict(self.normalization)
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")

    def __repr__(self) -> str:
        return f"ChineseTokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase})"


# ---------------------------------------------------------------------------------------
# Vocab builder

# bert-base-chinese's first 104 ids: [PAD], [unused1..99], [UNK], [CLS], [SEP], [MASK].
def special_layout() -> list[str]:
    return [PAD] + [f"[unused{i}]" for i in range(1, 100)] + [UNK, CLS, SEP, MASK]


# Chinese punctuation kept even when the corpus was normalised to ASCII (fullwidth=True turns
# "，" into ","), so text that skipped that normalisation (e.g. CLUE inputs) does not hit [UNK].
_CJK_PUNCT = "，。、；：？！“”‘’（）《》〈〉【】「」『』…—·～"


def _always_included() -> list[str]:
    """ASCII punctuation, digits and letters (also as "##" pieces), common Chinese punctuation."""
    chars = string.punctuation + string.digits + string.ascii_lowercase
    return list(chars) + ["##" + c for c in string.digits + string.ascii_lowercase] + list(_CJK_PUNCT)


def build_vocab(
    inputs: Union[PathLike, Sequence[PathLike]],
    output: PathLike,
    size: int = 21128,
    fmt: str = "auto",
    min_freq: int = 1,
    lowercase: bool = True,
    text_field: str = "text",
    fullwidth: bool = False,
    t2s: bool = False,
) -> Path:
    """Build a character vocab.txt from corpus files (``zhbert vocab build``).

    Order of the vocabulary, cut at `size`:

    1. bert-base-chinese's special layout ([PAD]=0 ... [MASK]=103);
    2. always: ASCII punctuation, digits and lowercase letters (also as "##" pieces) and
       common Chinese punctuation (，。《》 ...);
    3. every CJK character seen at least `min_freq` times, most frequent first;
    4. other single characters (punctuation, symbols, other scripts), most frequent first;
    5. non-Chinese WordPiece pieces ("iphone", "##13"): word-initial substrings and "##"
       continuations of the corpus's non-CJK words, ranked by how many corpus tokens they
       cover (see _wordpieces). Deterministic: the same corpus gives the same vocab.txt
       (tokenizers' WordPieceTrainer breaks ties between merges differently run to run).

    Reads the corpus once, streaming: memory holds only a character counter and the
    non-CJK word counts. The corpus is normalised as ``zhbert prepare`` will normalise it
    (``fullwidth``, ``t2s``: pass the same values as data.fullwidth / data.t2s). Returns the
    output path.
    """
    from tqdm import tqdm

    from zhbert.prep.corpus import iter_documents

    layout = special_layout()
    if size < len(layout) + 1:
        raise ValueError(f"size={size} is too small: the special-token layout alone takes {len(layout)} ids")
    if min_freq < 1:
        raise ValueError(f"min_freq={min_freq} must be >= 1")
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
    char_counts: Counter[str] = Counter()
    word_counts: Counter[str] = Counter()  # non-CJK words, to rank the learned pieces
    n_docs = 0

    def non_cjk_text():
        # Side effect: counts every character; yields the text with CJK removed for the
        # WordPiece trainer (CJK characters are single tokens and need no merges).
        nonlocal n_docs
        docs = iter_documents(paths, fmt=fmt, text_field=text_field, fullwidth=fullwidth, t2s=t2s)
        for doc in tqdm(docs, desc="vocab", unit="doc", disable=None):
            n_docs += 1
            for sent in doc.sentences:
                norm = normalizer.normalize_str(sent)
                char_counts.update(norm)
                rest = CJK_RE.sub(" ", norm)
                if not rest.isspace():
                    word_counts.update(rest.split())
                    yield rest

    for _ in non_cjk_text():  # one streaming pass: counts characters and non-CJK words
        pass
    if n_docs == 0:
        raise DataError(f"{', '.join(map(str, paths))}: no documents found to build a vocab from")
    def by_freq(chars):
        return sorted(chars, key=lambda c: (-char_counts[c], c))

    seen_chars = [c for c, n in char_counts.items() if n >= min_freq and not c.isspace()]
    cjk = by_freq(c for c in seen_chars if is_cjk_char(c))
    other = by_freq(c for c in seen_chars if not is_cjk_char(c))
    pieces = _wordpieces(word_counts, min_freq)

    tokens: list[str] = []
    present: set[str] = set()
    for tok in [*layout, *_always_included(), *cjk, *other, *pieces]:
        if tok not in present and len(tokens) < size:
            tokens.append(tok)
            present.add(tok)

    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: an interrupted build must not leave a truncated vocab.txt, which would still
    # load (the special tokens come first) as a smaller vocabulary.
    write_text_atomic(out, "".join(t + "\n" for t in tokens))
    return out


def _wordpieces(word_counts: "Counter[str]", min_freq: int, max_len: int = 16) -> list[str]:
    """WordPiece candidates from non-CJK word counts, best first.

    Candidates are every word-initial substring ("iphone", "iph") and every inner substring
    as a continuation ("##13", "##one") up to `max_len` characters, of words seen at least
    `min_freq` times. A candidate's score is the number of characters it would cover in the
    corpus beyond the first (count x (length - 1)), so whole frequent words and long frequent
    suffixes come first and single characters (always in the vocab anyway) last. Ties are
    broken by the piece itself, which makes the result reproducible.
    """
    scores: Counter[str] = Counter()
    for word, n in word_counts.items():
        if n < min_freq:
            continue
        w = word[:64]
        for j in range(1, min(len(w), max_len) + 1):
            scores[w[:j]] += n * (j - 1)
        for i in range(1, len(w)):
            for j in range(i + 1, min(len(w), i + max_len) + 1):
                scores["##" + w[i:j]] += n * (j - i - 1)
    return sorted(scores, key=lambda t: (-scores[t], t))
