"""Read a MediaWiki XML dump (``zhwiki-*-pages-articles*.xml.bz2``) as plain-text articles.

The dump is one XML document in the export schema
(``<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/">``): a ``<siteinfo>`` naming the
namespaces, then one ``<page>`` per page::

    <page>
      <title>北京市</title> <ns>0</ns> <id>13</id> [<redirect title="..."/>]
      <revision> ... <text xml:space="preserve">'''北京市'''，简称京……</text> </revision>
    </page>

It is read as a stream: ``xml.etree.ElementTree.iterparse`` over the decompressing file
object, each ``<page>`` handled when its end tag arrives and then cleared, together with
the root's list of finished children, so memory holds one page however large the dump is (the
3 GB zhwiki dump never sits in memory). Only main-namespace articles (``<ns>0</ns>``) are
kept; redirects (``<redirect/>``, or text starting ``#REDIRECT`` / ``#重定向``) are skipped.

Wikitext becomes plain text with ``mwparserfromhell`` (a maintained MediaWiki parser: nested
templates, tables and tags are parsed, not pattern-matched), in three steps:

1. Drop what is not prose, at any depth: templates (``{{Infobox …}}``, ``{{lang-en|…}}``,
   citations), tables (``{| … |}`` and ``<table>``), ``<ref>`` footnotes and the other tags
   whose content is not running text (``<gallery>``, ``<math>``, ``<timeline>`` …), comments,
   section headings, file/image/category links (``[[File:…]]``, ``[[文件:…]]``,
   ``[[Category:…]]``, ``[[分类:…]]``; the dump's own namespace names are added to the
   built-in aliases) and bare URLs. List, definition and indentation items (``*``, ``#``,
   ``;``, ``:``) are dropped line and all, as WikiExtractor does by default: they are rarely
   sentences (see-also lists, external links, bibliographies).
2. ``strip_code()`` renders the rest: a link becomes its label (``[[首都|京城]]`` → 京城),
   ``'''bold'''`` its text, HTML entities characters.
3. Clean the text: behaviour switches (``__TOC__``) go, and zhwiki's language-conversion
   markup ``-{…}-`` keeps one variant (``-{zh-hans:计算机;zh-hant:電腦}-`` → 计算机; a bare
   ``-{X}-`` → X; a rule-only ``-{H|…}-`` → nothing).

Each remaining non-empty line is a paragraph. zhbert.prep.corpus normalises and splits them
into sentences like every other format's (one document per article).
"""

from __future__ import annotations

import lzma
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import IO, Iterator

from zhbert.errors import DataError

# Namespace names of file and category links, lower-cased; the dump's <siteinfo> adds its own.
_LINK_NAMESPACES_DROPPED = frozenset(
    "file image media category 文件 檔案 档案 图像 圖像 图片 圖片 媒体 媒體 分类 分類".split()
)
_NS_KEYS_DROPPED = ("-2", "6", "14")  # Media, File, Category
# Tags whose content is not running text (refs are footnotes; tables are data).
_TAGS_DROPPED = frozenset(
    "table ref references gallery math chem ce timeline imagemap score graph mapframe maplink "
    "templatedata templatestyles syntaxhighlight source pre code inputbox categorytree hiero "
    "noinclude includeonly onlyinclude nowiki poem".split()
)
_LIST_TAGS = frozenset({"li", "dt", "dd"})
_ITEM = "\x01"  # marks a line that held a list item; such lines are dropped
_REDIRECT_RE = re.compile(r"\s*#\s*(redirect|重定向)", re.I)
_SWITCH_RE = re.compile(r"__[A-Z]+__")
_CONVERT_RE = re.compile(r"-\{(.*?)\}-", re.S)
_VARIANT_RULE_RE = re.compile(r"^\s*(zh(?:-[a-z]+)?)\s*:(.*)$", re.S)
_VARIANTS_PREFERRED = ("zh-hans", "zh-cn", "zh-sg", "zh-my", "zh", "zh-hant", "zh-tw", "zh-hk", "zh-mo")


@dataclass
class Page:
    id: str  # the page's <id>
    title: str
    paragraphs: list[str]  # plain text, one entry per non-empty line


def _local(tag: str) -> str:
    """``{http://www.mediawiki.org/xml/export-0.11/}page`` -> ``page`` (any schema version)."""
    return tag.rsplit("}", 1)[-1]


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    for c in elem:
        if _local(c.tag) == name:
            return c
    return None


def _import_parser():
    try:
        import mwparserfromhell
    except ImportError:
        raise DataError("reading a Wikipedia XML dump (format wikidump) needs the mwparserfromhell "
                        "package: pip install mwparserfromhell") from None
    return mwparserfromhell


def iter_pages(fh: IO[bytes], where: str) -> Iterator[Page]:
    """Main-namespace, non-redirect pages of a dump read from ``fh`` (decompressed bytes), as
    plain text. ``where`` (the file's path) names the file in errors: XML that does not parse
    (a truncated download, say) is a ``DataError`` with its line and column."""
    mw = _import_parser()
    namespaces = set(_LINK_NAMESPACES_DROPPED)
    root = None
    events = ET.iterparse(fh, events=("start", "end"))
    try:
        for event, elem in events:
            if event == "start":
                if root is None:
                    root = elem
                    if _local(elem.tag) != "mediawiki":
                        raise DataError(f"{where}: not a MediaWiki XML dump (root element <{_local(elem.tag)}>, "
                                        f"expected <mediawiki>)")
                continue
            name = _local(elem.tag)
            if name == "namespace" and elem.get("key") in _NS_KEYS_DROPPED and elem.text:
                namespaces.add(elem.text.strip().lower())
            elif name == "siteinfo":
                root.remove(elem)
            elif name == "page":
                page = _page(elem, mw, namespaces)
                elem.clear()
                root.remove(elem)  # the root keeps no finished page: memory is one page
                if page is not None:
                    yield page
    except ET.ParseError as e:
        line, col = e.position
        raise DataError(f"{where}:{line}: the XML dump does not parse at column {col} "
                        f"(truncated or corrupt download?): {e}") from None
    except (OSError, EOFError, lzma.LZMAError) as e:  # bz2/gzip/xz stream errors
        raise DataError(f"{where}: cannot decompress input: {e}") from None


def _page(elem: ET.Element, mw, namespaces: set[str]) -> Page | None:
    ns = _child(elem, "ns")
    if ns is not None and (ns.text or "0").strip() != "0":
        return None
    if _child(elem, "redirect") is not None:
        return None
    text = None
    for c in elem:  # pages-articles has one revision; a history dump's last one is the newest
        if _local(c.tag) == "revision":
            t = _child(c, "text")
            text = t.text if t is not None else None
    if not text or _REDIRECT_RE.match(text):
        return None
    title, pid = _child(elem, "title"), _child(elem, "id")
    return Page(id=(pid.text or "").strip() if pid is not None else "",
                title=(title.text or "").strip() if title is not None else "",
                paragraphs=wikitext_to_paragraphs(text, namespaces, mw))


def wikitext_to_paragraphs(text: str, link_namespaces=_LINK_NAMESPACES_DROPPED, mw=None) -> list[str]:
    """Plain-text paragraphs of one article's wikitext (module docstring, steps 1-3).

    >>> wikitext_to_paragraphs("'''北京'''是[[中国]]的首都。<ref>某书。</ref>{{Infobox}}\\n== 历史 ==\\n古称燕京。")
    ['北京是中国的首都。', '古称燕京。']
    """
    mw = mw or _import_parser()
    code = mw.parse(text)
    _drop_non_prose(code, mw, link_namespaces)
    plain = code.strip_code(normalize=True, collapse=True)
    plain = _CONVERT_RE.sub(lambda m: _convert(m.group(1)), _SWITCH_RE.sub("", plain))
    out = []
    for line in plain.splitlines():
        line = line.strip()
        if line and not line.startswith(_ITEM):
            out.append(line)
    return out


def _drop_non_prose(code, mw, link_namespaces) -> None:
    """Step 1, in place and recursively: drop, or replace by a list-item marker, the nodes
    that are not prose; descend into what is kept (bold text, link labels, spans)."""
    nodes = mw.nodes
    kept = []
    for node in code.nodes:
        if isinstance(node, (nodes.Template, nodes.Comment, nodes.Argument)):
            continue
        if isinstance(node, nodes.Heading):
            kept.append(nodes.Text("\n"))  # a heading ends the paragraph before it
            continue
        if isinstance(node, nodes.Tag):
            tag = str(node.tag).strip().lower()
            if tag in _TAGS_DROPPED:
                continue
            if tag in _LIST_TAGS:
                kept.append(nodes.Text(_ITEM))
                continue
            if node.contents is not None:
                _drop_non_prose(node.contents, mw, link_namespaces)
        elif isinstance(node, nodes.Wikilink):
            prefix = str(node.title).strip().lstrip(":").split(":", 1)
            if len(prefix) == 2 and prefix[0].strip().lower() in link_namespaces:
                continue
            if node.text is not None:
                _drop_non_prose(node.text, mw, link_namespaces)
        elif isinstance(node, nodes.ExternalLink):
            if not node.brackets:
                continue  # a bare URL is not Chinese prose
            if node.title is not None:
                _drop_non_prose(node.title, mw, link_namespaces)
        kept.append(node)
    code.nodes = kept


def _convert(inner: str) -> str:
    """One ``-{…}-`` of zhwiki's language conversion -> the text it shows (simplified first)."""
    flags, bar, rest = inner.partition("|")
    if bar and re.fullmatch(r"\s*[A-Za-z;\-+]*\s*", flags):
        if any(f in flags for f in "H-"):
            return ""  # a conversion rule for the page: shows nothing
        inner = rest
    rules = {}
    for part in inner.split(";"):
        m = _VARIANT_RULE_RE.match(part)
        if m:
            rules.setdefault(m.group(1).lower(), m.group(2).strip())
    if not rules:
        return inner  # -{X}-: X, protected from conversion
    for v in _VARIANTS_PREFERRED:
        if v in rules:
            return rules[v]
    return next(iter(rules.values()))
