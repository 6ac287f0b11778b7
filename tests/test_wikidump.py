"""--format wikidump: a MediaWiki XML dump (export schema 0.11), bz2, streamed, to plain-text articles.

The dump below is written the way dumps.wikimedia.org writes ``zhwiki-*-pages-articles.xml.bz2``
(siteinfo with namespaces, one <page> per page with title/ns/id/[redirect]/revision/text);
the expected documents are worked out by hand from the wikitext.
"""

import bz2
import sys
import tracemalloc
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from zhbert.errors import DataError
from zhbert.prep.corpus import detect_format, read_documents

try:
    import mwparserfromhell  # noqa: F401
except ImportError:
    mwparserfromhell = None
needs_mw = pytest.mark.skipif(mwparserfromhell is None, reason="needs mwparserfromhell (pip install mwparserfromhell)")

SITEINFO = """  <siteinfo>
    <sitename>维基百科</sitename>
    <dbname>zhwiki</dbname>
    <base>https://zh.wikipedia.org/wiki/Wikipedia:%E9%A6%96%E9%A1%B5</base>
    <generator>MediaWiki 1.42.0-wmf.5</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="-2" case="first-letter">Media</namespace>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Talk</namespace>
      <namespace key="6" case="first-letter">File</namespace>
      <namespace key="14" case="first-letter">Category</namespace>
    </namespaces>
  </siteinfo>
"""

BEIJING = """{{Infobox 城市
|名称 = 北京市
|人口 = 2189万<ref>统计公报</ref>
}}
'''北京市'''（{{lang-en|Beijing}}），简称'''京'''，是[[中华人民共和国]]的[[首都|首都]]。<ref name="gov">{{cite web|url=http://www.beijing.gov.cn|title=北京市人民政府}}</ref>北京有三千多年的建城史。<ref>《北京史》，第3页。</ref>
[[File:Beijing skyline.jpg|thumb|北京的[[天际线]]]]

== 历史 ==
北京古称-{zh-hans:燕京;zh-hant:燕京}-，元朝时称'''大都'''。<!-- 待补充 -->
{| class="wikitable"
! 年份 !! 人口
|-
| 2000 || 1382万
|}
* [[故宫]]
* [[天坛]]

== 参见 ==
* [[天津市]]

[[Category:中国直辖市]]
[[分类:首都]]
"""

SHANGHAI = """'''上海市'''是中国的经济中心。{{Citation needed|date=2020年}}
上海位于[[长江]]入海口，人口约2487万。{{Refn|{{cite book|title=书}}|group=注}}
"""


def page(title: str, ns: int, pid: int, text: str, redirect: str | None = None) -> str:
    red = f'    <redirect title="{escape(redirect)}" />\n' if redirect else ""
    return (f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{pid}</id>\n{red}"
            f"    <revision>\n      <id>{pid * 100}</id>\n      <parentid>{pid * 100 - 1}</parentid>\n"
            f"      <timestamp>2024-01-01T00:00:00Z</timestamp>\n"
            f"      <contributor>\n        <username>Example</username>\n        <id>1</id>\n      </contributor>\n"
            f"      <model>wikitext</model>\n      <format>text/x-wiki</format>\n"
            f'      <text bytes="{len(text.encode())}" xml:space="preserve">{escape(text)}</text>\n'
            f"      <sha1>0</sha1>\n    </revision>\n  </page>\n")


def dump_xml(pages: list[str]) -> str:
    return ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.11/ '
            'http://www.mediawiki.org/xml/export-0.11.xsd" version="0.11" xml:lang="zh">\n'
            + SITEINFO + "".join(pages) + "</mediawiki>\n")


PAGES = [
    page("北京市", 0, 13, BEIJING),
    page("北平", 0, 14, "#REDIRECT [[北京市]]", redirect="北京市"),
    page("Talk:北京市", 1, 15, "这篇条目需要更多来源。讨论一下吧。"),
    page("上海市", 0, 16, SHANGHAI),
    page("沪", 0, 17, "#重定向 [[上海市]]"),  # a redirect without the <redirect/> element
]

# Hand-worked: templates, refs, the file link, headings, the table, list items and
# categories dropped; "（）" left by {{lang-en}} removed; -{zh-hans:燕京;…}- -> 燕京.
EXPECTED = [
    ("page=13", ["北京市，简称京，是中华人民共和国的首都。", "北京有三千多年的建城史。", "北京古称燕京，元朝时称大都。"]),
    ("page=16", ["上海市是中国的经济中心。", "上海位于长江入海口，人口约2487万。"]),
]


def write_dump(path: Path, pages=PAGES) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dump_xml(pages).encode("utf-8")
    path.write_bytes(bz2.compress(data) if path.name.endswith(".bz2") else data)
    return path


@needs_mw
def test_articles_become_plain_text_documents(tmp_path):
    dump = write_dump(tmp_path / "zhwiki-20240101-pages-articles.xml.bz2")
    docs, stats = read_documents([dump], fmt="wikidump", fullwidth=False)
    assert [(d.id, d.sentences) for d in docs] == [(f"{dump}:{where}", s) for where, s in EXPECTED]
    assert stats.files == 1 and stats.documents == 2 and stats.skipped_lines == 0


@needs_mw
@pytest.mark.parametrize("name", ["zhwiki-latest-pages-articles.xml.bz2",
                                  "zhwiki-20240101-pages-articles-multistream1.xml-p1p187712.bz2",
                                  "zhwiki-latest-pages-articles.xml", "dump.xml", "export.bz2"])
def test_auto_detects_dumps_by_name_or_root_element(tmp_path, name):
    dump = write_dump(tmp_path / name)
    assert detect_format(dump) == "wikidump"
    docs, _ = read_documents([tmp_path], fmt="auto", fullwidth=False)
    assert [d.sentences for d in docs] == [s for _, s in EXPECTED]


@needs_mw
def test_multistream_dump_is_read_across_streams(tmp_path):
    # pages-articles-multistream: bz2 streams of ~100 pages, concatenated
    xml = dump_xml(PAGES).encode("utf-8")
    cut = xml.index(b"  <page>", xml.index(b"<title>\xe5\x8c\x97\xe5\xb9\xb3"))  # before page 14
    dump = tmp_path / "zhwiki-latest-pages-articles-multistream.xml.bz2"
    dump.write_bytes(bz2.compress(xml[:cut]) + bz2.compress(xml[cut:]))
    docs, _ = read_documents([dump], fmt="auto", fullwidth=False)
    assert [d.sentences for d in docs] == [s for _, s in EXPECTED]


@needs_mw
def test_memory_is_bounded_by_one_page(tmp_path):
    # 300 articles of ~12 KB each (3.6 MB of text): reading them must not hold the tree.
    body = "北京是中华人民共和国的首都，也是全国的政治和文化中心。" * 150 + "\n"
    dump = write_dump(tmp_path / "big-pages-articles.xml.bz2",
                      [page(f"条目{i}", 0, i + 1, f"第{i}篇。" + body) for i in range(300)])
    from zhbert.prep.corpus import iter_documents

    tracemalloc.start()
    try:
        n = sum(1 for _ in iter_documents([dump], fmt="wikidump", fullwidth=False, dedup=False))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 300
    assert peak < 1_500_000, f"peak {peak} bytes: pages are kept in memory"


@needs_mw
def test_truncated_or_foreign_xml_is_one_line_error_naming_the_file(tmp_path):
    whole = bz2.compress(dump_xml(PAGES).encode("utf-8"))
    cut = tmp_path / "zhwiki-latest-pages-articles.xml.bz2"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"zhwiki-latest-pages-articles\.xml\.bz2.*(decompress|does not parse)") as e:
        read_documents([cut], fmt="wikidump")
    assert "\n" not in str(e.value)
    other = tmp_path / "other.xml"
    other.write_text('<?xml version="1.0"?>\n<rss><channel/></rss>\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"other\.xml: not a MediaWiki XML dump"):
        read_documents([other], fmt="wikidump")


def test_without_mwparserfromhell_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mwparserfromhell", None)  # import fails
    dump = write_dump(tmp_path / "zhwiki-latest-pages-articles.xml.bz2")
    with pytest.raises(DataError, match="pip install mwparserfromhell"):
        read_documents([dump])


@needs_mw
def test_wikitext_rendering_details():
    from zhbert.prep.wikidump import wikitext_to_paragraphs

    assert wikitext_to_paragraphs("甲-{H|zh-hans:计算机;zh-hant:電腦}-乙，-{北平}-，-{zh-tw:電腦;zh-cn:电脑}-。") == \
        ["甲乙，北平，电脑。"]
    assert wikitext_to_paragraphs("见[http://example.com 官网]与 http://example.org 。__NOTOC__") == ["见官网与  。"]
    assert wikitext_to_paragraphs("<gallery>\nA.jpg|图\n</gallery>\n正文<math>x^2</math>。\n[[:Category:城市]]") == \
        ["正文。"]
    # a file link with a caption linking elsewhere, inside bold text: still dropped
    assert wikitext_to_paragraphs("'''甲[[Image:a.png|thumb|[[乙]]]]丙'''") == ["甲丙"]
