"""Stage 1: read raw Chinese text into documents made of normalised sentences.

Everything downstream (vocab, jieba segmentation, NSP pairs) sees corpora only through
``iter_documents``: a stream of ``Document(id, sentences)``. Document boundaries matter
because BERT's sentence pairs (A, B-follows-A) are drawn from inside one document, and
sentence boundaries matter because pairs are cut at real sentence ends.

Input formats (``fmt``), chosen per file when ``fmt="auto"`` (see ``detect_format``):

``bert``   one sentence per line, a blank line between documents (Google BERT / UER format).
``plain``  one paragraph per line; every line is one document, split into sentences.
``jsonl``  one JSON object per line; its ``text_field`` (default ``"text"``) is one document.
``wiki``   WikiExtractor output: ``<doc id=.. url=.. title=..>`` ... ``</doc>``; the first
           line repeating the title is dropped, each paragraph is split into sentences.
``wikidump`` a MediaWiki XML dump (``zhwiki-*-pages-articles*.xml.bz2``), streamed: one document
           per main-namespace article, redirects skipped, wikitext rendered to plain text
           (zhbert.prep.wikidump; needs ``mwparserfromhell``).
``parquet``  a Parquet file; its ``text_field`` column, one document per row, read in batches.
``datasets`` a folder written by ``datasets``' ``save_to_disk`` (a ``Dataset``, or a
           ``DatasetDict`` of which the ``split`` is read, ``train`` by default); its
           ``text_field`` column, one document per row.

A missing ``text_field`` (JSON field, column) is a ``DataError`` naming the file and the
fields it has. Parquet files and ``datasets`` folders are recognised by what they are
(``.parquet`` / ``PAR1`` magic; ``dataset_dict.json`` or ``state.json`` +
``dataset_info.json``): ``auto`` reads them as such, a text format skips them like any file
that is not text, and a folder that is a ``datasets`` folder is one input, never walked.

Files are read in binary and decoded line by line, so one corrupt byte costs one line
(skipped, counted, located in ``ReadStats``), never the run; a file none of whose lines is
UTF-8 (GBK, say) is named in ``ReadStats.undecodable_files``. ``.gz``, ``.bz2``, ``.xz`` and
``.zst`` files (by extension, or by their magic bytes) are decompressed as a stream; ``.zst``
needs the ``zstandard`` package, imported only when such a file is met. Memory is bounded by
the longest line plus one document plus one 8-byte hash per document kept for
exact-duplicate removal (``near_dedup`` adds about 3 KB per kept document: see
zhbert.prep.dedup).

Which files of a directory are read (``list_input_files``): the tree is walked in path
order, hidden entries (``.git``, ``.DS_Store``) left out, symbolic links to folders
followed (``corpora/zhwiki -> /data/zhwiki``) with a guard against loops: a folder whose
real path was already walked is not walked again. A file is corpus text unless

* its extension names a binary or container format (``.zip``, ``.png``, ``.bin``, ``.pdf``,
  ... see ``BINARY_SUFFIXES``; compression suffixes are looked through: ``a.txt.gz`` is a
  ``.txt``), or
* its first 64 KiB (decompressed) hold a NUL byte, more than 1% control bytes, or are
  largely undecodable as UTF-8 *and* as GB18030 (``_not_text``).

Names without an extension (``wiki_00``) or with one we do not know (``news.2019.zh``) are
judged by content alone. A skipped file is counted with its path and the reason in
``ReadStats.skipped_files``; a file named explicitly (not found in a folder) that is not text
is an error naming it.
"""

from __future__ import annotations

import array
import bz2
import codecs
import functools
import gzip
import hashlib
import html
import json
import lzma
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Iterator

from zhbert.errors import ConfigError, DataError

FORMATS = ("bert", "plain", "jsonl", "wiki", "wikidump", "parquet", "datasets")
_TABLE_FORMATS = ("parquet", "datasets")  # inputs that are tables, not text; read by column
MAX_SKIPPED_LOCATIONS = 10
MAX_SKIPPED_FILES = 100  # entries kept in ReadStats.skipped_files (all are counted)
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
# Extensions of formats that are never corpus text: images, archives, office documents,
# executables, model and array files. Anything else is judged by its content.
BINARY_SUFFIXES = frozenset(
    ".zip .7z .rar .tar .tgz .tbz2 .jar .whl .apk .dmg .iso .img .bin .dat .exe .dll .so .dylib .o .a "
    ".pyc .class .png .jpg .jpeg .gif .bmp .webp .tif .tiff .ico .svgz .heic .psd .mp3 .wav .flac .ogg "
    ".m4a .mp4 .mkv .avi .mov .webm .pdf .doc .docx .xls .xlsx .ppt .pptx .odt .epub .mobi .djvu .ttf "
    ".otf .woff .woff2 .arrow .parquet .feather .npy .npz .pt .pth .ckpt .safetensors .h5 .hdf5 .onnx "
    ".pkl .pickle .db .sqlite .lmdb .mdb .idx .msgpack .tfrecord".split()
)
_SNIFF_BYTES = 1 << 16
_CHUNK = 1 << 20  # bytes read at a time; lines are reassembled across chunks


@dataclass
class Document:
    id: str  # "path:first_line_number" (1-based); "path:page=ID" (wikidump); "path:row=N" (0-based; tables)
    sentences: list[str]  # normalised, non-empty


@dataclass
class ReadStats:
    files: int = 0  # files read
    documents: int = 0
    sentences: int = 0
    chars: int = 0
    duplicates_dropped: int = 0
    near_duplicates_dropped: int = 0  # data.near_dedup: documents too similar to a kept one
    skipped_lines: int = 0  # undecodable UTF-8 lines and unusable JSON lines
    skipped_locations: list[str] = field(default_factory=list)  # first 10 "path:line"
    files_skipped: int = 0  # files of input folders not read (not text, broken links, loops)
    skipped_files: list[dict] = field(default_factory=list)  # first 100 {"path", "reason"}
    undecodable_files: list[str] = field(default_factory=list)  # files with no UTF-8 line (first 10)

    def skip(self, location: str) -> None:
        self.skipped_lines += 1
        if len(self.skipped_locations) < MAX_SKIPPED_LOCATIONS:
            self.skipped_locations.append(location)

    def skip_file(self, path, reason: str) -> None:
        self.files_skipped += 1
        if len(self.skipped_files) < MAX_SKIPPED_FILES:
            self.skipped_files.append({"path": str(path), "reason": reason})

    def merge(self, other: "ReadStats") -> None:
        """Add ``other``'s counters to this one (e.g. stats from worker processes)."""
        self.files += other.files
        self.documents += other.documents
        self.sentences += other.sentences
        self.chars += other.chars
        self.duplicates_dropped += other.duplicates_dropped
        self.near_duplicates_dropped += other.near_duplicates_dropped
        self.skipped_lines += other.skipped_lines
        room = MAX_SKIPPED_LOCATIONS - len(self.skipped_locations)
        self.skipped_locations.extend(other.skipped_locations[: max(room, 0)])
        self.files_skipped += other.files_skipped
        room = MAX_SKIPPED_FILES - len(self.skipped_files)
        self.skipped_files.extend(other.skipped_files[: max(room, 0)])
        room = MAX_SKIPPED_LOCATIONS - len(self.undecodable_files)
        self.undecodable_files.extend(other.undecodable_files[: max(room, 0)])

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- normalisation


def _build_translation() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    # Control characters go; the whitespace-like ones become a space (collapsed later).
    for c in list(range(0x00, 0x20)) + [0x7F] + list(range(0x80, 0xA0)):
        table[c] = None
    for c in (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85):
        table[c] = " "
    # Zero-width and invisible formatting characters: ZWSP/ZWNJ/ZWJ, LRM/RLM, bidi
    # embeddings and isolates, word joiner and invisible operators, soft hyphen, BOM.
    invisible = [0x00AD, 0x034F, 0x061C, 0x180E, 0xFEFF]
    invisible += list(range(0x200B, 0x2010)) + list(range(0x202A, 0x202F))
    invisible += list(range(0x2060, 0x2065)) + list(range(0x2066, 0x206A))
    for c in invisible:
        table[c] = None
    return table


def _runs_re(table: dict) -> re.Pattern:
    """A pattern matching runs of the characters ``table`` changes (a character class of
    code-point ranges)."""
    ranges, codes = [], sorted(table)
    for c in codes:
        if ranges and c == ranges[-1][1] + 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    cls = "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return re.compile(f"[{cls}]+")


_BASE_TABLE = _build_translation()
# Full-width ASCII variants U+FF01..U+FF5E map to U+0021..U+007E; ideographic space to space.
_FULLWIDTH_TABLE = {**_BASE_TABLE, **{c: chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)}, 0x3000: " "}
# str.translate looks every character up in the dict (~90 ns a character); the characters it
# changes are a few percent of Chinese text, so only their runs are translated.
_TRANSLATE = {
    table_id: (lambda rx, table: lambda text: rx.sub(lambda m: m.group().translate(table), text))(_runs_re(t), t)
    for table_id, t in (("base", _BASE_TABLE), ("fullwidth", _FULLWIDTH_TABLE))
}


@functools.lru_cache(maxsize=1)
def _t2s_converter():
    # Built once. `opencc` is OpenCC's C++ library (PyPI `opencc`, ~12x faster) or, in older
    # environments, opencc-python-reimplemented: both install the import name `opencc` with the
    # same API (they cannot be installed together). See t2s_converter_name.
    try:
        from opencc import OpenCC
    except ImportError:
        from zhbert.errors import ConfigError

        raise ConfigError("data.t2s=true needs OpenCC: pip install opencc") from None
    return OpenCC("t2s").convert


def t2s_converter_name() -> str:
    """Which OpenCC ``data.t2s`` converts with ("opencc 1.4.2" = the C++ library,
    "opencc-python-reimplemented"; "" = none installed). Their dictionaries differ slightly
    (C++ 1.4.2 vs the Python port: 59 of 17,228 corpus lines, e.g. 逕 -> 径 vs 迳), so
    ``zhbert prepare`` records it with t2s on."""
    try:
        import opencc
    except ImportError:
        return ""
    if hasattr(opencc, "clib") or hasattr(opencc, "__version__"):
        return f"opencc {getattr(opencc, '__version__', '?')}"
    return "opencc-python-reimplemented"


def normalize_text(text: str, fullwidth: bool = True, t2s: bool = False) -> str:
    """Clean one line or paragraph of text.

    - BOM, zero-width characters (U+200B..U+200F, U+2060.., U+FEFF, soft hyphen, bidi marks)
      and control characters are removed; CR, LF, tabs become spaces.
    - ``fullwidth``: full-width ASCII ``ＡＢＣ１２３！（，）`` becomes ``ABC123!(,)`` and the
      ideographic space U+3000 a space. CJK punctuation outside that block (``。、“”《》``)
      is kept as it is.
    - Runs of whitespace (including U+3000 and NBSP) collapse to one space; ends stripped.
    - ``t2s``: traditional -> simplified Chinese with OpenCC (``漢語`` -> ``汉语``).

    >>> normalize_text("\\ufeff  ＢＥＲＴ\\u3000模型\\u200b很强！\\r\\n")
    'BERT 模型很强!'
    """
    text = _TRANSLATE["fullwidth" if fullwidth else "base"](text)
    text = " ".join(text.split())
    if t2s and text:
        text = _t2s_converter()(text)
    return text


# --------------------------------------------------------------------------- sentence split

_STRONG = "。！？!?；…｡"  # always end a sentence
_WEAK = ".;．"  # end a sentence only in the right context (see split_sentences)
_CLOSERS = "”’」』）)》】〉〕］]\"'"
_TERMINALS = _STRONG + _WEAK
_STRONG_SET = frozenset(_STRONG)
_BOUNDARY_RE = re.compile(
    "[" + re.escape(_STRONG + _WEAK) + "]+[" + re.escape(_STRONG + _WEAK + _CLOSERS) + "]*"
)
# Words whose trailing '.' is an abbreviation, not a sentence end (compared lower-cased).
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc al fig figs eq no nos vol pp ed eds approx dept est inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
_WORD_BEFORE_RE = re.compile(r"([A-Za-z][A-Za-z.]*)$")
_NEXT_NONSPACE_RE = re.compile(r"\s*(\S)")


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _weak_ends_sentence(text: str, start: int, end: int, dots: str) -> bool:
    """Decide whether a '.'/';'/'．' run at text[start:end] ends a sentence."""
    nxt = text[end] if end < len(text) else ""
    prev = text[start - 1] if start > 0 else ""
    if prev.isdigit() and nxt.isdigit():  # 3.14, ３．１４, 1;2
        return False
    if dots == "．":  # full-width full stop (kept when fullwidth=False): used like '。'
        return True
    if nxt == "":
        return True
    if _is_ascii_alnum(nxt) or (nxt.isascii() and not nxt.isspace()):
        return False  # www.example.com, a;b, "3.x", ".)" etc.
    if ";" in dots:
        return True
    if len(dots) >= 2:  # "..." is an ellipsis: ends the sentence like '…'
        return True
    word = _WORD_BEFORE_RE.search(text, max(0, start - 32), start)  # bounded: no O(n^2)
    if word:
        w = word.group(1)
        if "." in w or len(w) == 1 or w.lower() in _ABBREVIATIONS:
            return False  # e.g. / U.S. / J. K. Rowling / Dr. Smith
    if nxt.isspace():
        after = _NEXT_NONSPACE_RE.match(text, end)
        if after and after.group(1).isascii() and after.group(1).islower():
            return False  # "approx. five", "the Co. was" -- a lowercase word follows
    return True


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences.

    Rule: a sentence ends after a run of terminal punctuation, together with any closing
    quotes/brackets (``”’」』）)》】"'``) that directly follow it.

    - ``。！？!?；…`` always end a sentence; a run such as ``？！``, ``!!!`` or ``……`` is one
      terminator.
    - ``;`` and ``.`` end a sentence unless an ASCII letter, digit or other ASCII symbol
      follows directly (``3.14``, ``www.pku.edu.cn``, ``a;b`` stay whole). A single ``.``
      after an abbreviation (``Dr.``, ``e.g.``, ``U.S.``, single initials ``J.``) or before
      a lowercase word does not end a sentence. ``...`` counts as an ellipsis. The
      full-width ``．`` ends a sentence unless it sits between digits.
    - An ASCII ``"`` after a terminator belongs to the sentence only if it closes a quote
      opened in that sentence (odd number of ``"`` before it); otherwise it opens the next.
    - Pieces are stripped; empty pieces are dropped.

    >>> split_sentences("他说：“今天下雨了。”我点点头。")
    ['他说：“今天下雨了。”', '我点点头。']
    >>> split_sentences("圆周率约为3.14. It is irrational. 真的吗？！是的……好吧")
    ['圆周率约为3.14.', 'It is irrational.', '真的吗？！', '是的……', '好吧']
    >>> split_sentences("See e.g. Dr. Wang; he knows.")
    ['See e.g. Dr. Wang;', 'he knows.']
    """
    sentences: list[str] = []
    seg_start = 0
    for m in _BOUNDARY_RE.finditer(text):
        start, end = m.span()
        run = m.group()
        # Terminal characters of the match (the leading run before any closer).
        term_len = len(run) - len(run.lstrip(_TERMINALS))
        if _STRONG_SET.isdisjoint(run) and not _weak_ends_sentence(text, start, end, run[:term_len]):
            continue
        # An ASCII '"' that would open a new quote belongs to the next sentence.
        cut = end
        if '"' in run:
            for i in range(start + term_len, end):
                if text[i] == '"' and text.count('"', seg_start, i) % 2 == 0:
                    cut = i
                    break
        piece = text[seg_start:cut].strip()
        if piece:
            sentences.append(piece)
        seg_start = cut
    tail = text[seg_start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


# --------------------------------------------------------------------------- files


def list_input_files(paths) -> list[Path]:
    """Expand ``paths`` (one path or a list) into the files to read: directories walked
    (see module docstring: hidden entries left out, symlinked folders followed once, files
    that are not text left out), sorted by path; a file reached twice is listed once. A path
    that does not exist, or a named file that is not text, raises ``DataError`` naming it."""
    return [f for f, _ in _collect_inputs(paths, ReadStats())]


def walk_input_files(paths) -> list[Path]:
    """Every file ``list_input_files`` looks at, without opening any (text or not): what a
    fingerprint of the input must cover (a ``datasets`` folder: every file in it)."""
    out: list[Path] = []
    for f, _ in _expand(paths, ReadStats()):
        out.extend(_dataset_files(f) if f.is_dir() else [f])
    return out


def _is_datasets_dir(path: Path) -> bool:
    """A folder written by ``datasets``' ``save_to_disk``: a DatasetDict (``dataset_dict.json``)
    or a Dataset (``state.json`` beside ``dataset_info.json``)."""
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file())


def _dataset_files(root: Path) -> list[Path]:
    return sorted((p for p in root.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts)),
                  key=lambda p: p.as_posix())


def _table_kind(path: Path) -> str | None:
    """The table format ``path`` holds: ``datasets`` for a ``save_to_disk`` folder, ``parquet``
    for a Parquet file (extension or ``PAR1`` magic), None for anything else (text, or not)."""
    if path.is_dir():
        return "datasets" if _is_datasets_dir(path) else None
    if path.name.lower().endswith(".parquet"):
        return "parquet"
    try:
        with open(path, "rb") as fh:
            return "parquet" if fh.read(4) == b"PAR1" else None
    except OSError:
        return None


def _expand(paths, stats: "ReadStats") -> Iterator[tuple[Path, bool]]:
    """(file, named explicitly), each real file once; links and loops go to ``stats``."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    seen: set[str] = set()  # real paths of the files listed
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise DataError(f"input path does not exist: {p}")
        if p.is_dir() and not _is_datasets_dir(p):
            found, explicit = _walk(p, stats), False
        else:
            found, explicit = [p], True
        for f in found:
            real = os.path.realpath(f)
            if real not in seen:
                seen.add(real)
                yield f, explicit


def _collect_inputs(paths, stats: "ReadStats", fmt: str = "auto") -> list[tuple[Path, bool]]:
    """``_expand`` without the inputs ``fmt`` cannot read (counted in ``stats``; an error for
    one named explicitly): under ``auto`` text files, Parquet files and ``datasets`` folders;
    under a text format text files only; under ``parquet`` / ``datasets`` that kind only."""
    out = []
    for f, explicit in _expand(paths, stats):
        kind = _table_kind(f)
        if fmt in _TABLE_FORMATS:
            reason = None if kind == fmt else f"not a {fmt} input (--format {fmt})"
        else:
            reason = None if kind and fmt == "auto" else _not_text(f)
        if reason and explicit:
            if fmt in _TABLE_FORMATS:
                raise DataError(f"{f}: {reason}; remove it from the input")
            raise DataError(f"{f}: not a text corpus file: {reason}; remove it from the input")
        if reason:
            stats.skip_file(f, reason if fmt in _TABLE_FORMATS else f"not text: {reason}")
        else:
            out.append((f, explicit))
    return out


def _walk(root: Path, stats: "ReadStats") -> list[Path]:
    """Files under ``root``, sorted by path. Symbolic links to folders are followed; a
    folder whose real path was walked already (a loop, or a second link to it) is not."""
    files: list[Path] = []
    walked = {os.path.realpath(root)}
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            raise DataError(f"cannot list input folder {d}: {e.strerror}") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()  # both follow links
            except OSError:
                is_dir = is_file = False
            if is_dir and _is_datasets_dir(path):
                files.append(path)  # one input (its Arrow files are read by ``datasets``)
            elif is_dir:
                real = os.path.realpath(path)
                if real in walked:
                    stats.skip_file(path, f"folder {real} already read (symbolic link loop or second link)")
                    continue
                walked.add(real)
                stack.append(path)
            elif is_file:
                files.append(path)
            elif entry.is_symlink():
                stats.skip_file(path, "broken symbolic link")
            else:
                stats.skip_file(path, "not a regular file")
    return sorted(files, key=lambda f: f.as_posix())


def _base_suffix(path: Path) -> str:
    """The extension that names the content: ``a.txt.gz`` -> ``.txt``."""
    name = path.name.lower()
    for c in COMPRESSED_SUFFIXES + (".zstd", ".lzma"):
        if name.endswith(c):
            name = name[: -len(c)]
            break
    return os.path.splitext(name)[1]


def _not_text(path: Path) -> str | None:
    """Why ``path`` is not corpus text (extension, then its first 64 KiB), or None.

    The content test: a NUL byte (binary, or UTF-16 text); more than 1% control bytes
    other than tab / newline / CR / form feed / escape; or (in a sample of 512 bytes or
    more) over 30% undecodable characters both as UTF-8 and as GB18030. A GBK file passes:
    it is text in the wrong encoding, and its lines are reported as undecodable instead. A
    few corrupt bytes in a UTF-8 file cost their lines, not the file.
    """
    if path.is_dir():
        return "a datasets folder (read it with --format auto or datasets)"
    suffix = _base_suffix(path)
    if suffix in BINARY_SUFFIXES:
        return f"{suffix} extension"
    with _open_binary(path) as fh:
        sample = _read_chunk(fh, _SNIFF_BYTES, f"{path}:1")
    if not sample:
        return None
    if b"\x00" in sample:
        return "NUL bytes"
    controls = sum(sample.count(bytes([c])) for c in _CONTROL_BYTES)
    if controls > len(sample) // 100:
        return f"{controls} control bytes in the first {len(sample)}"

    def bad_share(encoding: str) -> float:
        text = codecs.getincrementaldecoder(encoding)("replace").decode(sample, final=False)
        return text.count("\ufffd") / max(len(text), 1)

    if len(sample) >= 512 and bad_share("utf-8") > 0.3 and bad_share("gb18030") > 0.3:
        return "neither UTF-8 nor GB18030 text"
    return None


_CONTROL_BYTES = [c for c in range(1, 32) if c not in (9, 10, 11, 12, 13, 27)] + [127]


def _open_binary(path: Path) -> IO[bytes]:
    """Open a file for binary reading, decompressing by extension (``.gz``, ``.bz2``,
    ``.xz``, ``.zst``) or by magic bytes (gzip, bzip2, xz, zstd: ``wiki_00`` may be gzip)."""
    name = path.name.lower()
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
        if name.endswith(".gz") or magic[:2] == b"\x1f\x8b":
            return gzip.open(path, "rb")
        if name.endswith(".bz2") or magic[:3] == b"BZh":
            return bz2.open(path, "rb")
        if name.endswith((".xz", ".lzma")) or magic == b"\xfd7zXZ\x00":
            return lzma.open(path, "rb")
        if name.endswith((".zst", ".zstd")) or magic[:4] == b"\x28\xb5\x2f\xfd":
            return _open_zstd(path)
        return open(path, "rb")
    except OSError as e:
        raise DataError(f"cannot read input file {path}: {e.strerror or e}") from None


def _read_chunk(fh: IO[bytes], n: int, where: str) -> bytes:
    """``fh.read(n)``; a truncated or corrupt archive is a ``DataError`` naming ``where``."""
    try:
        return fh.read(n)
    except (OSError, EOFError, ValueError, lzma.LZMAError) as e:
        raise DataError(f"{where}: cannot decompress input: {e}") from None
    except Exception as e:  # zstandard.ZstdError (the module is imported lazily)
        if type(e).__module__.split(".")[0] != "zstandard":
            raise
        raise DataError(f"{where}: cannot decompress input: {e}") from None


def _open_zstd(path: Path) -> IO[bytes]:
    try:
        import zstandard
    except ImportError:
        raise DataError(f"{path}: reading .zst files needs the zstandard package "
                        f"(pip install zstandard), or decompress it first") from None
    fh = open(path, "rb")
    # read_across_frames: a .zst made by concatenating files holds several frames.
    return zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True, closefd=True)


def _iter_raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, raw line without its ending); LF, CRLF and CR all end a line."""
    lineno = 0
    pending: list[bytes] = []  # pieces of a line that continues into the next chunk
    with _open_binary(path) as fh:
        while True:
            chunk = _read_chunk(fh, _CHUNK, f"{path}:{lineno + 1}")
            if not chunk:
                break
            if b"\n" not in chunk and b"\r" not in chunk:
                pending.append(chunk)  # a very long line: avoid re-joining it per chunk
                continue
            pending.append(chunk)
            lines = b"".join(pending).splitlines(keepends=True)
            pending = []
            # The last piece may continue in the next chunk; a trailing lone '\r' may be
            # the first half of '\r\n'.
            last = lines[-1]
            if not last.endswith(b"\n"):
                pending.append(lines.pop())
            for line in lines:
                lineno += 1
                yield lineno, line.rstrip(b"\r\n")
    if pending:
        tail = b"".join(pending)
        # a final piece holding several CR-terminated lines is split here
        for line in tail.splitlines():
            lineno += 1
            yield lineno, line


def _iter_lines(path: Path, stats: ReadStats) -> Iterator[tuple[int, str]]:
    """Decoded lines; a line that is not valid UTF-8 is skipped and recorded in ``stats``,
    and a file whose every non-blank line failed is named in ``stats.undecodable_files``."""
    good = bad = 0
    for lineno, raw in _iter_raw_lines(path):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
            stats.skip(f"{path}:{lineno}")
            continue
        good += bool(line.strip())
        yield lineno, line
    if bad and not good and len(stats.undecodable_files) < MAX_SKIPPED_LOCATIONS:
        stats.undecodable_files.append(str(path))


def _sniff_lines(path: Path, max_lines: int = 200) -> list[str]:
    out = []
    for _, raw in _iter_raw_lines(path):
        out.append(raw.decode("utf-8", errors="replace"))
        if len(out) >= max_lines:
            break
    return out


_WIKIDUMP_NAME_RE = re.compile(r"pages-articles.*\.xml", re.I)


def detect_format(path, text_field: str = "text") -> str:
    """Guess a file's format: 'bert' | 'plain' | 'jsonl' | 'wiki' | 'wikidump' | 'parquet' |
    'datasets'.

    A ``datasets`` folder or a Parquet file is what it is (``_table_kind``). A name holding
    ``pages-articles`` and ``.xml`` (``zhwiki-latest-pages-articles.xml.bz2``,
    ``…-pages-articles-multistream1.xml-p1p187712.bz2``) -> wikidump. Otherwise the first
    lines decide: a ``<mediawiki`` root element -> wikidump; first non-empty line starts with
    ``<doc`` -> wiki; is a JSON object -> jsonl.
    Otherwise look at the blank-line structure of the first 200 lines: if blank lines
    separate blocks and most blocks hold several lines (sentences) -> bert; else plain
    (one paragraph per line, with or without blank lines between paragraphs).
    ``text_field`` is accepted for symmetry with ``iter_documents``; a JSON object that
    lacks it is still reported as jsonl so the reader can name the missing field.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"input path does not exist: {path}")
    kind = _table_kind(path)
    if kind:
        return kind
    if _WIKIDUMP_NAME_RE.search(path.name):
        return "wikidump"
    lines = [normalize_text(line, fullwidth=False) for line in _sniff_lines(path)]
    first = next((line for line in lines if line), "")
    if any(line.startswith("<mediawiki") for line in [x for x in lines if x][:3]):
        return "wikidump"
    if first.startswith("<doc"):
        return "wiki"
    if first.startswith("{"):
        try:
            if isinstance(json.loads(first), dict):
                return "jsonl"
        except ValueError:
            pass
    blocks: list[int] = []  # number of non-empty lines in each blank-separated block
    run = 0
    saw_blank = False
    for line in lines:
        if line:
            run += 1
        else:
            saw_blank = saw_blank or bool(blocks) or run > 0
            if run:
                blocks.append(run)
            run = 0
    if run and len(lines) < 200:  # last block is complete only if the file ended
        blocks.append(run)
    if saw_blank and blocks:
        multi = sum(1 for b in blocks if b >= 2)
        if multi * 2 >= len(blocks):
            return "bert"
    return "plain"


# --------------------------------------------------------------------------- readers
# Each reader yields (first_line_number, sentences) for one file; sentences are
# normalised but not yet filtered by length, and may be empty.


def _split_paragraph(text: str, fullwidth: bool, t2s: bool) -> list[str]:
    return split_sentences(normalize_text(text, fullwidth, t2s))


def _read_bert(path, stats, fullwidth, t2s, **_):
    sentences: list[str] = []
    first = 0
    for lineno, line in _iter_lines(path, stats):
        s = normalize_text(line, fullwidth, t2s)
        if s:
            if not sentences:
                first = lineno
            sentences.append(s)
        elif sentences:
            yield first, sentences
            sentences = []
    if sentences:
        yield first, sentences


def _read_plain(path, stats, fullwidth, t2s, **_):
    for lineno, line in _iter_lines(path, stats):
        sentences = _split_paragraph(line, fullwidth, t2s)
        if sentences:
            yield lineno, sentences


def _read_jsonl(path, stats, fullwidth, t2s, text_field="text", **_):
    first_record = True
    for lineno, line in _iter_lines(path, stats):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            stats.skip(f"{path}:{lineno}")
            continue
        value = record.get(text_field) if isinstance(record, dict) else None
        if first_record and isinstance(record, dict) and text_field not in record:
            # Almost certainly the wrong --text-field: say so instead of skipping every line.
            raise DataError(
                f"{path}:{lineno}: JSON record has no field {text_field!r} "
                f"(fields: {', '.join(map(str, record)) or 'none'}); set the text field "
                f"(--text-field / data.text_field)"
            )
        first_record = False
        if not isinstance(value, str):
            stats.skip(f"{path}:{lineno}")
            continue
        sentences = [s for para in value.splitlines() for s in _split_paragraph(para, fullwidth, t2s)]
        if sentences:
            yield lineno, sentences


_DOC_ATTR_RE = re.compile(r'(\w+)="([^"]*)"')
_EMPTY_BRACKETS_RE = re.compile(r"\(\s*[,;、，；]?\s*\)|（\s*）")


def _read_wiki(path, stats, fullwidth, t2s, **_):
    in_doc = False
    first = 0
    title = ""
    title_pending = False  # the first content line may repeat the title
    sentences: list[str] = []
    for lineno, line in _iter_lines(path, stats):
        stripped = line.strip()
        if stripped.startswith("<doc") and stripped.endswith(">"):
            if in_doc and sentences:  # previous doc lacked </doc>
                yield first, sentences
            attrs = dict(_DOC_ATTR_RE.findall(stripped))
            title = html.unescape(attrs.get("title", "")).strip()
            in_doc, first, title_pending, sentences = True, lineno, True, []
            continue
        if stripped == "</doc>":
            if in_doc and sentences:
                yield first, sentences
            in_doc, sentences = False, []
            continue
        if not in_doc or not stripped:
            continue
        if title_pending:
            title_pending = False
            if html.unescape(stripped) == title:
                continue
        # WikiExtractor leaves "()" where it removed foreign-language text or templates.
        text = _EMPTY_BRACKETS_RE.sub("", normalize_text(line, fullwidth, t2s))
        sentences.extend(split_sentences(text))
    if in_doc and sentences:
        yield first, sentences


def _read_wikidump(path, stats, fullwidth, t2s, **_):
    from zhbert.prep.wikidump import iter_pages

    with _open_binary(path) as fh:
        for page in iter_pages(fh, str(path)):
            # templates removed from inside brackets leave "（）", as WikiExtractor's do
            sentences = [s for para in page.paragraphs
                         for s in split_sentences(_EMPTY_BRACKETS_RE.sub("", normalize_text(para, fullwidth, t2s)))]
            if sentences:
                yield f"page={page.id}", sentences


def _missing_column(path, text_field: str, columns) -> DataError:
    return DataError(f"{path}: no column {text_field!r} (columns: {', '.join(map(str, columns)) or 'none'}); "
                     f"set the text field (--text-field / data.text_field)")


def _rows(path, stats, values, start: int, fullwidth, t2s):
    """(``row=N``, sentences) for a batch of a text column's values; a value that is not a
    string (null, a number) is skipped and counted."""
    for i, value in enumerate(values, start):
        if not isinstance(value, str):
            stats.skip(f"{path}:row={i}")
            continue
        sentences = [s for para in value.splitlines() for s in _split_paragraph(para, fullwidth, t2s)]
        if sentences:
            yield f"row={i}", sentences


_TABLE_BATCH = 1024  # rows read at a time: memory holds one batch of the text column


def _read_parquet(path, stats, fullwidth, t2s, text_field="text", **_):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: not a readable Parquet file: {e}") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise _missing_column(path, text_field, names)
    row = 0
    batches = pf.iter_batches(batch_size=_TABLE_BATCH, columns=[text_field])
    while True:
        try:
            batch = next(batches, None)
        except (OSError, pa.ArrowException) as e:
            raise DataError(f"{path}:row={row}: cannot read the Parquet file: {e}") from None
        if batch is None:
            break
        values = batch.column(0).to_pylist()
        yield from _rows(path, stats, values, row, fullwidth, t2s)
        row += len(values)


def _read_datasets(path, stats, fullwidth, t2s, text_field="text", split="train", **_):
    import datasets  # 1-2 s: only when such a folder is read

    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot load the datasets folder: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{path}: the DatasetDict has no split {split!r} (splits: {', '.join(ds)}); "
                            f"choose one with data.dataset_split")
        ds = ds[split]
    if text_field not in ds.column_names:
        raise _missing_column(path, text_field, ds.column_names)
    row = 0
    for batch in ds.select_columns([text_field]).iter(batch_size=_TABLE_BATCH):
        values = batch[text_field]
        yield from _rows(path, stats, values, row, fullwidth, t2s)
        row += len(values)


_READERS = {"bert": _read_bert, "plain": _read_plain, "jsonl": _read_jsonl, "wiki": _read_wiki,
            "wikidump": _read_wikidump, "parquet": _read_parquet, "datasets": _read_datasets}


class HashSet:
    """A set of 64-bit integers (document hashes) in 8 bytes a slot: open addressing with
    linear probing in an ``array('Q')``, at most 3/4 full, so 11-21 bytes an entry against
    ~80 for a Python ``set`` of ints (a 1 GB corpus has ~1.5 million documents: 16 MB
    instead of ~110 MB in the reading process). The values are hashes, uniform in their low
    bits, which pick the slot; 0 marks an empty slot, so the value 0 is kept apart."""

    __slots__ = ("_table", "_mask", "_size", "_zero")

    def __init__(self, capacity: int = 1 << 12):
        capacity = 1 << max(int(capacity) - 1, 1).bit_length()  # a power of 2
        self._table = array.array("Q", bytes(8 * capacity))
        self._mask = capacity - 1
        self._size = 0
        self._zero = False

    def __len__(self) -> int:
        return self._size + self._zero

    def _slot(self, value: int) -> int:
        """Where ``value`` (non-zero) is, or the empty slot where it would go."""
        table, mask = self._table, self._mask
        i = value & mask
        while True:
            v = table[i]
            if v == value or v == 0:
                return i
            i = (i + 1) & mask

    def __contains__(self, value: int) -> bool:
        if value == 0:
            return self._zero
        return self._table[self._slot(value)] == value

    def add(self, value: int) -> bool:
        """Add ``value`` (0 <= value < 2**64); True if it was not in the set."""
        if value == 0:
            new, self._zero = not self._zero, True
            return new
        table = self._table
        i = self._slot(value)
        if table[i] == value:
            return False
        table[i] = value
        self._size += 1
        if 4 * self._size > 3 * len(table):
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._table
        self._table = array.array("Q", bytes(16 * len(old)))
        self._mask = 2 * len(old) - 1
        self._size = 0
        for v in old:
            if v:
                self.add(v)


def _doc_hash(sentences: list[str]) -> int:
    digest = hashlib.blake2b("\n".join(sentences).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def iter_documents(
    paths,
    fmt: str = "auto",
    text_field: str = "text",
    fullwidth: bool = True,
    t2s: bool = False,
    dedup: bool = True,
    stats: ReadStats | None = None,
    min_sentence_chars: int = 1,
    dataset_split: str = "train",
    near_dedup: bool = False,
    near_dedup_threshold: float = 0.8,
    near_dedup_num_perm: int = 128,
    near_dedup_seed: int = 1,
) -> Iterator[Document]:
    """Stream documents from files and directories (see module docstring for formats).

    Sentences shorter than ``min_sentence_chars`` characters are dropped, documents left
    without sentences are dropped, and (``dedup``) a document whose normalised sentences
    equal an earlier one's is dropped and counted in ``stats.duplicates_dropped``. With
    ``near_dedup``, a document whose character 5-grams overlap a kept document's with an
    estimated Jaccard similarity of ``near_dedup_threshold`` or more is dropped too and
    counted in ``stats.near_duplicates_dropped`` (MinHash LSH, zhbert.prep.dedup; needs
    ``datasketch``). ``dataset_split``: the split read from a ``datasets`` DatasetDict folder.
    Pass a ``ReadStats`` to collect counts. An empty result is not an error here.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise ConfigError(f"unknown corpus format {fmt!r}; expected auto or one of {', '.join(FORMATS)}")
    if stats is None:
        stats = ReadStats()
    min_chars = max(int(min_sentence_chars), 1)
    seen = HashSet()
    near = None
    if near_dedup:
        from zhbert.prep.dedup import NearDuplicates

        near = NearDuplicates(threshold=near_dedup_threshold, num_perm=near_dedup_num_perm, seed=near_dedup_seed)
    for path, _ in _collect_inputs(paths, stats, fmt):
        file_fmt = detect_format(path, text_field) if fmt == "auto" else fmt
        stats.files += 1
        reader = _READERS[file_fmt]
        for where, sentences in reader(path, stats, fullwidth, t2s, text_field=text_field, split=dataset_split):
            sentences = [s for s in sentences if len(s) >= min_chars]
            if not sentences:
                continue
            if dedup and not seen.add(_doc_hash(sentences)):
                stats.duplicates_dropped += 1
                continue
            if near is not None and near.seen_before(sentences):
                stats.near_duplicates_dropped += 1
                continue
            stats.documents += 1
            stats.sentences += len(sentences)
            stats.chars += sum(len(s) for s in sentences)
            yield Document(id=f"{path}:{where}", sentences=sentences)


def read_documents(paths, **kwargs) -> tuple[list[Document], ReadStats]:
    """Convenience for small corpora and tests: all documents in a list, plus stats."""
    stats = ReadStats()
    docs = list(iter_documents(paths, stats=stats, **kwargs))
    return docs, stats


__all__ = [
    "Document",
    "ReadStats",
    "FORMATS",
    "detect_format",
    "normalize_text",
    "split_sentences",
    "iter_documents",
    "list_input_files",
    "read_documents",
    "walk_input_files",
]
