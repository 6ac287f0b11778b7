"""Corpus reading: normalisation, sentence splitting, the four formats, robustness."""

import bz2
import gzip
import json
from pathlib import Path

import pytest

from zhbert.prep.corpus import (
    Document,
    ReadStats,
    detect_format,
    iter_documents,
    list_input_files,
    normalize_text,
    read_documents,
    split_sentences,
)
from zhbert.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "corpora" / "sample"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PRETRAIN = SHARED / "pretrain_corpus"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# ----------------------------------------------------------------------------- split


@pytest.mark.parametrize(
    "text, expected",
    [
        ("今天天气很好。我们去公园吧！你去吗？", ["今天天气很好。", "我们去公园吧！", "你去吗？"]),
        ("他说：“我明天就走。”她没有回答。", ["他说：“我明天就走。”", "她没有回答。"]),
        ("“你来了？”“来了！”", ["“你来了？”", "“来了！”"]),
        ("他在信中写道：「一切安好。」（完）", ["他在信中写道：「一切安好。」", "（完）"]),
        ("书名是《三体》。）后面", ["书名是《三体》。）", "后面"]),
        ("真的吗？！当然！！！", ["真的吗？！", "当然！！！"]),
        ("他沉默了……过了很久才开口。", ["他沉默了……", "过了很久才开口。"]),
        ("等等…好吧", ["等等…", "好吧"]),
        ("第一，价格；第二，质量。", ["第一，价格；", "第二，质量。"]),
        ("圆周率约等于3.14，增长了3.5%。", ["圆周率约等于3.14，增长了3.5%。"]),
        ("This is a test. It works! Really? Yes.", ["This is a test.", "It works!", "Really?", "Yes."]),
        ("Python 3.11 was released.下一句。", ["Python 3.11 was released.", "下一句。"]),
        ("访问 www.example.com 即可。", ["访问 www.example.com 即可。"]),
        ("See e.g. the U.S. rules. Next one.", ["See e.g. the U.S. rules.", "Next one."]),
        ("Dr. Wang met J. K. Rowling. They talked.", ["Dr. Wang met J. K. Rowling.", "They talked."]),
        ("Wait... what? ok", ["Wait...", "what?", "ok"]),
        ('他说:"好的."然后离开了.', ['他说:"好的."', "然后离开了."]),
        ('第一句。"第二句"在这里。', ["第一句。", '"第二句"在这里。']),
        ("新模型在GPU上训练;效果不错!2023年发布", ["新模型在GPU上训练;", "效果不错!", "2023年发布"]),
        ("没有标点的一句话", ["没有标点的一句话"]),
        ("  。 ！ ", ["。", "！"]),
        ("", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_split_fullwidth_stop_kept_when_not_normalised():
    # 红楼梦 uses the full-width full stop U+FF0E as its sentence end.
    assert split_sentences("此开卷第一回也．作者自云") == ["此开卷第一回也．", "作者自云"]
    assert split_sentences("约３．５倍") == ["约３．５倍"]


# ----------------------------------------------------------------------------- normalise


def test_normalize_text():
    assert normalize_text("\ufeff你好") == "你好"
    assert normalize_text("第一行\r\n第二行\r") == "第一行 第二行"
    assert normalize_text("ＡＢＣ１２３！") == "ABC123!"
    assert normalize_text("ＡＢＣ１２３！", fullwidth=False) == "ＡＢＣ１２３！"
    assert normalize_text("中\u3000\u3000文") == "中 文"
    assert normalize_text("零\u200b宽\u200c字\u200d符\u2060号\ufeff") == "零宽字符号"
    assert normalize_text("控\x00制\x07字\x1b符\x7f\x85") == "控制字符"
    assert normalize_text("  多个 \t\n 空白  ") == "多个 空白"
    assert normalize_text("中文（括号），句号。") == "中文(括号),句号。"
    assert normalize_text("") == ""


def test_normalize_t2s():
    assert normalize_text("漢語", t2s=True) == "汉语"
    assert normalize_text("數學是一門學科。", t2s=True) == "数学是一门学科。"
    assert normalize_text("漢語") == "漢語"


# ----------------------------------------------------------------------------- formats


BERT_TEXT = "第一句话。\n第二句话。\n\n另一篇文章的第一句。\n第二句。\n第三句。\n"
PLAIN_TEXT = "第一段。还有一句！\n\n第二段只有一句。\n"
WIKI_TEXT = (
    '<doc id="1" url="https://zh.wikipedia.org/wiki?curid=1" title="数学">\n'
    "数学\n\n"
    "數學是研究數量的學科。它有很長的歷史。\n\n"
    "西方语言中“数学”（）一词源自古希腊语。\n"
    "</doc>\n"
    '<doc id="2" url="https://zh.wikipedia.org/wiki?curid=2" title="物理学">\n'
    "物理学\n"
    "物理学研究物质和能量。\n"
    "</doc>\n"
)


def test_bert_format(tmp_path):
    f = write(tmp_path / "a.txt", BERT_TEXT)
    assert detect_format(f) == "bert"
    docs, stats = read_documents(f, fmt="bert")
    assert docs == [
        Document(f"{f}:1", ["第一句话。", "第二句话。"]),
        Document(f"{f}:4", ["另一篇文章的第一句。", "第二句。", "第三句。"]),
    ]
    assert (stats.files, stats.documents, stats.sentences) == (1, 2, 5)
    assert stats.chars == sum(len(s) for d in docs for s in d.sentences)


def test_plain_format(tmp_path):
    f = write(tmp_path / "p.txt", PLAIN_TEXT)
    assert detect_format(f) == "plain"
    docs, _ = read_documents(f)
    assert docs == [Document(f"{f}:1", ["第一段。", "还有一句!"]), Document(f"{f}:3", ["第二段只有一句。"])]
    # a file without any blank line is plain too: one document per line
    g = write(tmp_path / "q.txt", "一段。两句。\n另一段。\n")
    assert detect_format(g) == "plain"
    assert [d.sentences for d in iter_documents(g)] == [["一段。", "两句。"], ["另一段。"]]


def test_jsonl_format(tmp_path):
    rows = [{"text": "第一篇。有两句。"}, {"text": "第二篇\n第二段。"}]
    f = write(tmp_path / "c.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert detect_format(f) == "jsonl"
    docs, _ = read_documents(f)
    assert docs == [Document(f"{f}:1", ["第一篇。", "有两句。"]), Document(f"{f}:2", ["第二篇", "第二段。"])]


def test_jsonl_custom_field_and_bad_lines(tmp_path):
    lines = [
        json.dumps({"title": "t", "content": "新闻正文。第二句。"}, ensure_ascii=False),
        "{not json",
        json.dumps({"content": None}),
        json.dumps({"content": "最后一篇。"}, ensure_ascii=False),
    ]
    f = write(tmp_path / "news.json", "\n".join(lines) + "\n")
    assert detect_format(f, text_field="content") == "jsonl"
    docs, stats = read_documents(f, text_field="content")
    assert [d.sentences for d in docs] == [["新闻正文。", "第二句。"], ["最后一篇。"]]
    assert [d.id for d in docs] == [f"{f}:1", f"{f}:4"]
    assert stats.skipped_lines == 2
    assert stats.skipped_locations == [f"{f}:2", f"{f}:3"]
    # the wrong field name is reported with the fields that exist instead of skipping all
    with pytest.raises(DataError, match=r"news\.json:1.*'text'.*content"):
        list(iter_documents(f))


def test_wiki_format(tmp_path):
    f = write(tmp_path / "AA" / "wiki_00", WIKI_TEXT)
    assert detect_format(f) == "wiki"
    docs, _ = read_documents(tmp_path, t2s=True)
    assert docs == [
        Document(f"{f}:1", ["数学是研究数量的学科。", "它有很长的历史。", "西方语言中“数学”一词源自古希腊语。"]),
        Document(f"{f}:8", ["物理学研究物质和能量。"]),
    ]


def test_auto_detects_each_file_in_directory(tmp_path):
    write(tmp_path / "b" / "bert.txt", BERT_TEXT)
    write(tmp_path / "a" / "plain.txt", PLAIN_TEXT)
    write(tmp_path / "c.jsonl", '{"text": "JSON里的一句。"}\n')
    write(tmp_path / "d" / "wiki_00", WIKI_TEXT)
    write(tmp_path / ".hidden", "不读这个。\n")
    files = list_input_files(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "a/plain.txt", "b/bert.txt", "c.jsonl", "d/wiki_00"]
    assert [detect_format(f) for f in files] == ["plain", "bert", "jsonl", "wiki"]
    docs, stats = read_documents(tmp_path)
    assert stats.files == 4 and stats.documents == 2 + 2 + 1 + 2 == len(docs)


def test_dedup(tmp_path):
    f = write(tmp_path / "d.txt", "重复的段落。\n不同的段落。\n重复的段落。\n\u3000重复的段落。 \n")
    docs, stats = read_documents(f)
    assert [d.sentences for d in docs] == [["重复的段落。"], ["不同的段落。"]]
    assert stats.duplicates_dropped == 2
    docs, stats = read_documents(f, dedup=False)
    assert len(docs) == 4 and stats.duplicates_dropped == 0


def test_min_sentence_chars(tmp_path):
    f = write(tmp_path / "m.txt", "短。这一句比较长一些。\n好。\n")
    docs, _ = read_documents(f, min_sentence_chars=3)
    assert [d.sentences for d in docs] == [["这一句比较长一些。"]]


def test_bad_utf8_skipped_with_location(tmp_path):
    data = "好的一行。\n".encode() + b"\xff\xfe bad \x80\n" + "第三行。\n".encode()
    data += "中".encode()[:2] + b"\n" + "最后。\n".encode()
    f = write(tmp_path / "bad.txt", data)
    docs, stats = read_documents(f, fmt="plain")
    assert [d.sentences for d in docs] == [["好的一行。"], ["第三行。"], ["最后。"]]
    assert [d.id for d in docs] == [f"{f}:1", f"{f}:3", f"{f}:5"]
    assert stats.skipped_lines == 2
    assert stats.skipped_locations == [f"{f}:2", f"{f}:4"]


def test_skipped_locations_capped_and_merge(tmp_path):
    f = write(tmp_path / "many.txt", b"\xff\n" * 15 + "好。\n".encode())
    _, stats = read_documents(f)
    assert stats.skipped_lines == 15 and len(stats.skipped_locations) == 10
    total = ReadStats(files=1, documents=2, skipped_lines=1, skipped_locations=["x:1"])
    total.merge(stats)
    assert total.files == 2 and total.documents == 3 and total.skipped_lines == 16
    assert total.skipped_locations[:2] == ["x:1", f"{f}:1"] and len(total.skipped_locations) == 10
    assert total.to_dict()["duplicates_dropped"] == 0


def test_line_endings_and_bom(tmp_path):
    crlf = write(tmp_path / "crlf.txt", "\ufeff第一段。\r\n\r\n第二段。\r\n")
    cr = write(tmp_path / "cr.txt", "第一段。\r第二段。\r")
    for f in (crlf, cr):
        docs, _ = read_documents(f)
        assert [d.sentences for d in docs] == [["第一段。"], ["第二段。"]]
    assert [d.id for d in iter_documents(cr)] == [f"{cr}:1", f"{cr}:2"]
    bom_json = write(tmp_path / "b.jsonl", '\ufeff{"text": "有BOM。"}\n')
    assert detect_format(bom_json) == "jsonl"


def test_compressed_files(tmp_path, monkeypatch):
    gz = tmp_path / "a.txt.gz"
    gz.write_bytes(gzip.compress(BERT_TEXT.encode()))
    bz = tmp_path / "b.jsonl.bz2"
    bz.write_bytes(bz2.compress('{"text": "压缩的。"}\n'.encode()))
    assert detect_format(gz) == "bert" and detect_format(bz) == "jsonl"
    docs, _ = read_documents([gz, bz])
    assert [d.sentences for d in docs] == [["第一句话。", "第二句话。"], ["另一篇文章的第一句。", "第二句。", "第三句。"], ["压缩的。"]]
    # lines spanning read chunks (and a CRLF split across chunks) are reassembled
    import zhbert.prep.corpus as corpus

    monkeypatch.setattr(corpus, "_CHUNK", 3)
    crlf = write(tmp_path / "c.txt", "一二三四五。\r\n\r\n六七。\r\n")
    assert [d.id for d in iter_documents(crlf)] == [f"{crlf}:1", f"{crlf}:3"]
    assert [d.sentences for d in iter_documents(gz)][0] == ["第一句话。", "第二句话。"]
    cr = write(tmp_path / "cr.txt", "一。\r\r二三四五六七。\r八。")
    assert [(d.id, d.sentences) for d in iter_documents(cr, fmt="plain")] == [
        (f"{cr}:1", ["一。"]), (f"{cr}:3", ["二三四五六七。"]), (f"{cr}:4", ["八。"])]


def test_truncated_gzip_is_data_error(tmp_path):
    gz = tmp_path / "broken.gz"
    gz.write_bytes(gzip.compress(("一句话。\n" * 1000).encode())[:60])
    with pytest.raises(DataError, match="broken.gz"):
        list(iter_documents(gz))


def test_missing_path_is_data_error(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError, match="nope.txt"):
        list(iter_documents([missing]))
    with pytest.raises(DataError, match="nope.txt"):
        list_input_files(missing)


def test_empty_input_is_not_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    write(tmp_path / "blank.txt", "\n \n\u3000\n")
    docs, stats = read_documents(tmp_path)
    assert docs == [] and stats.files == 1 and stats.documents == 0


# ----------------------------------------------------------------------------- corpora


def test_bundled_sample_corpus():
    files = list_input_files(SAMPLE)
    formats = {f.name: detect_format(f) for f in files}
    assert formats["sample_bert.txt"] == "bert"
    assert formats["sample_plain.txt"] == "plain"
    assert formats["sample.jsonl"] == "jsonl"
    assert formats["wiki_sample"] == "wiki"
    for f in files:
        raw = f.read_bytes()
        raw.decode("utf-8")  # valid UTF-8
        assert b"\r" not in raw
    docs, stats = read_documents(SAMPLE)
    assert stats.skipped_lines == 0 and stats.duplicates_dropped == 0
    bert_docs = [d for d in docs if "sample_bert.txt" in d.id]
    assert 80 <= len(bert_docs) <= 120
    assert all(4 <= len(d.sentences) <= 10 for d in bert_docs)
    assert sum(f.stat().st_size for f in files) < 300_000


@pytest.mark.skipif(not PRETRAIN.exists(), reason="../shared/data/pretrain_corpus absent")
def test_shared_pretrain_corpus():
    clue = PRETRAIN / "cluecorpussmall_uer" / "CLUECorpusSmall_bert_sampled.txt"
    wiki = PRETRAIN / "zhwiki_sample" / "wiki_00"
    novel = PRETRAIN / "classics_public_domain" / "红楼梦.txt"
    assert detect_format(clue) == "bert"
    assert detect_format(wiki) == "wiki"
    assert detect_format(novel) == "plain"

    docs, stats = read_documents(clue)
    assert stats.documents == 2500 and stats.skipped_lines == 0
    assert 15_000 < stats.sentences < 21_000  # 20641 lines minus 2499 blank ones

    docs, stats = read_documents(wiki, t2s=True)
    assert stats.documents == 64 == sum(1 for line in wiki.open(encoding="utf-8") if line.startswith("<doc"))
    assert docs[0].sentences[0].startswith("数学是利用符号语言研究数量")  # title line dropped
    assert all("數" not in s for d in docs for s in d.sentences)

    docs, stats = read_documents(novel)
    assert stats.documents > 2000 and stats.sentences > 20_000
    assert all("\r" not in s for d in docs for s in d.sentences)
    # the novel ends sentences with the full-width '．', normalised to '.' and split there
    first_chapter = next(d for d in docs if d.sentences[0].startswith("此开卷第一回也"))
    assert first_chapter.sentences[0] == "此开卷第一回也."


# ----------------------------------------------------------------------------- issue #10: which files are text


def test_xz_by_extension_streamed(tmp_path):
    import lzma

    xz = write(tmp_path / "c.txt.xz", lzma.compress(BERT_TEXT.encode()))
    assert detect_format(xz) == "bert"
    docs, stats = read_documents(xz)
    assert [d.sentences for d in docs] == [["第一句话。", "第二句话。"], ["另一篇文章的第一句。", "第二句。", "第三句。"]]
    whole = lzma.compress(("一句话。\n" * 100_000).encode())
    bad = write(tmp_path / "broken.xz", whole[: len(whole) // 2])
    with pytest.raises(DataError, match="broken.xz"):
        list(iter_documents(bad))


def test_zst_by_extension_streamed(tmp_path):
    zstandard = pytest.importorskip("zstandard")  # optional: only needed when a .zst is met
    # two frames (as `cat a.zst b.zst` makes): both are read
    data = zstandard.ZstdCompressor().compress(PLAIN_TEXT.encode()) + \
        zstandard.ZstdCompressor().compress("第三段。\n".encode())
    zst = write(tmp_path / "d.txt.zst", data)
    assert [d.sentences for d in iter_documents(zst, fmt="plain")] == [
        ["第一段。", "还有一句!"], ["第二段只有一句。"], ["第三段。"]]


def test_zst_without_zstandard_is_one_line_error(tmp_path):
    import subprocess
    import sys

    zst = write(tmp_path / "d.txt.zst", bytes.fromhex("28b52ffd") + b"\x00" * 16)
    code = ("import sys; sys.modules['zstandard'] = None\n"  # as if the package were not installed
            "from zhbert.prep.corpus import read_documents\n"
            f"read_documents({str(zst)!r})")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "d.txt.zst" in last and "pip install zstandard" in last


def test_non_text_files_in_a_folder_are_skipped_and_counted(tmp_path):
    import zipfile

    corpus = tmp_path / "corpus"
    write(corpus / "a.txt", PLAIN_TEXT)
    with zipfile.ZipFile(corpus / "texts.zip", "w") as z:  # a zip of text is still not text
        z.writestr("x.txt", PLAIN_TEXT * 50)
    write(corpus / "logo.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    write(corpus / "weights.bin", bytes(range(256)) * 4)
    write(corpus / "dump.unknown", b"\x00\x01\x02" * 100)  # unknown extension: by content
    write(corpus / "notes.md", "注释里的一句话。\n")
    docs, stats = read_documents(corpus)
    assert [d.id.split(":")[0] for d in docs] == [str(corpus / "a.txt")] * 2 + [str(corpus / "notes.md")]
    assert stats.files == 2 and stats.files_skipped == 4
    reasons = {Path(s["path"]).name: s["reason"] for s in stats.skipped_files}
    assert reasons == {"texts.zip": "not text: .zip extension", "logo.png": "not text: .png extension",
                       "weights.bin": "not text: .bin extension", "dump.unknown": "not text: NUL bytes"}
    assert list_input_files(corpus) == [corpus / "a.txt", corpus / "notes.md"]
    # named explicitly, a file that is not text is an error naming it
    with pytest.raises(DataError, match=r"dump\.unknown: not a text corpus file: NUL bytes"):
        read_documents([corpus / "a.txt", corpus / "dump.unknown"])
    with pytest.raises(DataError, match=r"logo\.png"):
        list_input_files(corpus / "logo.png")


def test_symlinked_folders_followed_once(tmp_path):
    data = write(tmp_path / "data" / "zhwiki" / "wiki_00", WIKI_TEXT).parent
    corpora = tmp_path / "corpora"
    write(corpora / "local.txt", PLAIN_TEXT)
    (corpora / "zhwiki").symlink_to(data, target_is_directory=True)  # corpora/zhwiki -> data/zhwiki
    (corpora / "again").symlink_to(data, target_is_directory=True)  # a second link: read once
    (data / "loop").symlink_to(corpora, target_is_directory=True)  # a cycle back up
    (corpora / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")
    docs, stats = read_documents(corpora)
    assert stats.files == 2 and stats.documents == 2 + 2
    assert [f.relative_to(corpora).as_posix() for f in list_input_files(corpora)] == ["again/wiki_00", "local.txt"]
    reasons = {Path(s["path"]).relative_to(corpora).as_posix(): s["reason"] for s in stats.skipped_files}
    assert reasons["dangling.txt"] == "broken symbolic link"
    assert "already read" in reasons["zhwiki"] and "already read" in reasons["again/loop"]


def test_gbk_file_is_named_as_undecodable(tmp_path):
    gbk = write(tmp_path / "gbk.txt", "第一段。还有一句！\n\n第二段只有一句。\n".encode("gbk"))
    utf8 = write(tmp_path / "ok.txt", PLAIN_TEXT)
    docs, stats = read_documents([gbk, utf8])
    assert stats.undecodable_files == [str(gbk)] and stats.skipped_lines == 2
    assert len(docs) == 2 and all("ok.txt" in d.id for d in docs)


# ----------------------------------------------------------------------------- tables: parquet, datasets

TABLE_TEXTS = ["第一篇。有两句。", None, "第二篇的第一段。\n第二段！", "", "第三篇。"]
TABLE_DOCS = [["第一篇。", "有两句。"], ["第二篇的第一段。", "第二段！"], ["第三篇。"]]


def write_parquet(path: Path, texts=TABLE_TEXTS, column="content") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": list(range(len(texts))), column: texts}), path, row_group_size=2)
    return path


def test_parquet_text_column_one_document_per_row(tmp_path, monkeypatch):
    import zhbert.prep.corpus as corpus

    monkeypatch.setattr(corpus, "_TABLE_BATCH", 2)  # several batches
    path = write_parquet(tmp_path / "news.parquet")
    docs, stats = read_documents([path], text_field="content", fullwidth=False)
    assert [d.sentences for d in docs] == TABLE_DOCS
    assert [d.id for d in docs] == [f"{path}:row={i}" for i in (0, 2, 4)]
    assert stats.skipped_lines == 1 and stats.skipped_locations == [f"{path}:row=1"]  # the null
    assert detect_format(path) == "parquet"
    named = write_parquet(tmp_path / "no_extension", column="text")  # PAR1 magic
    assert detect_format(named) == "parquet"
    assert [d.sentences for d in read_documents([named], fullwidth=False)[0]] == TABLE_DOCS


def test_missing_column_names_file_column_and_the_columns_there(tmp_path):
    path = write_parquet(tmp_path / "news.parquet")
    with pytest.raises(DataError) as e:
        read_documents([path], text_field="text")
    assert str(e.value).startswith(f"{path}: no column 'text' (columns: id, content)")
    assert "\n" not in str(e.value)


def test_datasets_folders_dataset_and_datasetdict(tmp_path):
    import datasets

    rows = {"content": TABLE_TEXTS, "id": list(range(len(TABLE_TEXTS)))}
    one = tmp_path / "one"
    datasets.Dataset.from_dict(rows).save_to_disk(str(one))
    both = tmp_path / "both"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "test": datasets.Dataset.from_dict({"content": ["测试集。"], "id": [0]})}
                         ).save_to_disk(str(both))
    assert detect_format(one) == detect_format(both) == "datasets"
    docs, stats = read_documents([one], text_field="content", fullwidth=False)
    assert [d.sentences for d in docs] == TABLE_DOCS and docs[0].id == f"{one}:row=0"
    docs, _ = read_documents([both], text_field="content", fullwidth=False, dedup=False)
    assert [d.sentences for d in docs] == TABLE_DOCS  # the train split by default
    docs, _ = read_documents([both], text_field="content", dataset_split="test", fullwidth=False)
    assert [d.sentences for d in docs] == [["测试集。"]]
    with pytest.raises(DataError, match=r"both: the DatasetDict has no split 'dev' \(splits: train, test\)"):
        read_documents([both], text_field="content", dataset_split="dev")
    with pytest.raises(DataError, match=r"one: no column 'text' \(columns: content, id\)"):
        read_documents([one])
    # inside a folder a datasets folder is one input (its Arrow and JSON files are not walked),
    # and the fingerprint covers every file in it
    write(tmp_path / "corpus" / "a.txt", "一段文字。\n")
    (tmp_path / "corpus" / "hf").symlink_to(one, target_is_directory=True)
    assert list_input_files(tmp_path / "corpus") == [tmp_path / "corpus" / "a.txt", tmp_path / "corpus" / "hf"]
    from zhbert.prep.corpus import walk_input_files

    walked = walk_input_files(tmp_path / "corpus")
    assert any(f.suffix == ".arrow" for f in walked) and tmp_path / "corpus" / "hf" / "state.json" in walked
    docs, stats = read_documents([tmp_path / "corpus"], text_field="content", fullwidth=False)
    assert stats.files == 2 and len(docs) == 4
    # a text format leaves tables alone: skipped in a folder, an error when named
    docs, stats = read_documents([tmp_path / "corpus"], fmt="plain")
    assert len(docs) == 1 and stats.skipped_files[0]["reason"].startswith("not text: a datasets folder")
    with pytest.raises(DataError, match=r"one: not a text corpus file: a datasets folder"):
        read_documents([one], fmt="plain")


def test_explicit_table_format_reads_only_that_kind(tmp_path):
    folder = tmp_path / "hub_snapshot"
    write_parquet(folder / "data" / "train-00000.parquet", column="text")
    write(folder / "README.md", "# 数据集说明\n\n这不是语料。\n")
    docs, stats = read_documents([folder], fmt="parquet", fullwidth=False)
    assert [d.sentences for d in docs] == TABLE_DOCS
    assert stats.skipped_files == [{"path": str(folder / "README.md"), "reason": "not a parquet input (--format parquet)"}]
    with pytest.raises(DataError, match=r"README\.md: not a parquet input \(--format parquet\); remove it"):
        read_documents([folder / "README.md"], fmt="parquet")


def test_hash_set_is_a_set_of_64_bit_ints():
    """The exact-dedup set (zhbert.prep.corpus.HashSet) against Python's set: random hashes,
    0 and 2**64 - 1, values sharing their low bits (long probe runs), repeats, growth."""
    import random

    from zhbert.prep.corpus import HashSet

    rng = random.Random(0)
    values = [rng.getrandbits(64) for _ in range(20000)] + [0, 0, 1, 2**64 - 1]
    values += [rng.getrandbits(44) << 20 for _ in range(500)]  # all in slot 0 of a small table
    values += values[:3000]
    got, want = HashSet(2), set()
    for v in values:
        assert got.add(v) == (v not in want)
        want.add(v)
    assert len(got) == len(want) == 20503
    assert all(v in got for v in want)
    assert not any(v in got for v in (rng.getrandbits(64) for _ in range(2000)) if v not in want)
    assert len(got._table) * 3 // 4 >= len(want) > len(got._table) * 3 // 8  # grew, at most 3/4 full
