"""`zhbert prepare` end to end on tiny corpora: real jieba, tokenizers and Arrow files."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

import zhbert.prep.prepare as prep
from zhbert.config import DataConfig
from zhbert.prep.corpus import ReadStats
from zhbert.errors import ConfigError, DataError
from zhbert.prep.prepare import load_prepared, prepare, read_prepare_meta
from zhbert.prep.tokenizer import ChineseTokenizer, special_layout

SHARED_VOCAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "bert_base_chinese" / "vocab.txt"

# Eight short documents (BERT format: one sentence per line, blank line between documents).
DOCS = [
    ["我今天在北京大学图书馆看书。", "图书馆里人很多，大家都很安静。", "下午我用iPhone13拍了几张照片。"],
    ["上海是中国最大的城市之一。", "黄浦江从市中心穿过。", "外滩的夜景非常漂亮。", "很多游客晚上去那里散步。"],
    ["机器学习是人工智能的一个分支。", "深度学习使用多层神经网络。", "预训练语言模型改变了自然语言处理。"],
    ["春天来了，花园里的花都开了。", "小鸟在树上唱歌。", "孩子们在草地上玩耍。"],
    ["他每天早上六点起床跑步。", "跑完步以后吃早饭。", "然后坐地铁去公司上班。"],
    ["长江是中国最长的河流。", "它流经十一个省份。", "最后在上海注入东海。"],
    ["这家餐厅的饺子很好吃。", "老板是山东人，为人热情。", "周末常常需要排队。"],
    ["我们明天开会讨论新项目。", "请大家提前准备材料。", "会议在三楼的会议室举行。", "时间是上午十点。"],
]


def write_corpus(path: Path, docs=DOCS) -> Path:
    path.write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> Path:
    if SHARED_VOCAB.is_file():
        return SHARED_VOCAB
    # No shared data: BERT special layout + every character of the corpus + a few pieces.
    chars = sorted({c for d in DOCS for s in d for c in s.lower()} - set("0123456789iphone"))
    tokens = special_layout() + chars + ["iphone", "##13", "1", "3", "13"]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return path


def config(tmp_path, vocab, **kw) -> DataConfig:
    base = dict(input=[str(tmp_path / "corpus.txt")], dir=str(tmp_path / "out"), vocab=str(vocab),
                max_seq_length=32, shard_documents=3, validation_fraction=0.2, seed=7)
    base.update(kw)
    return DataConfig(**base)


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus.txt")


def test_output_format_stats_and_word_alignment(tmp_path, vocab, corpus):
    cfg = config(tmp_path, vocab)
    stats = prepare(cfg)
    out = Path(cfg.dir)

    dd = datasets.load_from_disk(str(out))
    assert set(dd) == {"train", "validation"}
    assert dd["train"].features == prep.features()
    assert list(dd["train"].column_names) == list(prep.COLUMNS)
    assert len(dd["validation"]) > 0 and len(dd["train"]) > 0
    assert {p.name for p in out.iterdir()} >= {"train", "validation", "dataset_dict.json", "vocab.txt",
                                              "tokenizer.json", "stats.json", "prepare_config.json",
                                              "zhbert_prepare.json"}
    assert not (out / "shards").exists()
    assert json.loads((out / "zhbert_prepare.json").read_text())["complete"] is True
    assert json.loads((out / "stats.json").read_text()) == stats
    meta = read_prepare_meta(out)
    assert meta["vocab_sha256"] == hashlib.sha256(Path(vocab).read_bytes()).hexdigest()
    assert meta["config"]["max_seq_length"] == 32

    tok = ChineseTokenizer.from_vocab(vocab)
    rows = [r for split in ("train", "validation") for r in dd[split]]
    assert stats["instances"] == len(rows)
    assert stats["train_instances"] == len(dd["train"]) and stats["validation_instances"] == len(dd["validation"])
    assert stats["tokens"] == sum(len(r["input_ids"]) for r in rows)
    assert stats["unk_tokens"] == sum(r["input_ids"].count(tok.unk_id) for r in rows)
    assert stats["documents"] == len(DOCS) == stats["train_documents"] + stats["validation_documents"]
    assert stats["sentences"] == sum(map(len, DOCS))
    assert stats["chars"] == sum(len(s) for d in DOCS for s in d)
    assert stats["shards"] == 3 and stats["shards_reused"] == 0
    assert 0 <= stats["nsp_random_fraction"] <= 1
    assert stats["mean_tokens_per_instance"] == pytest.approx(stats["tokens"] / stats["instances"], abs=1e-3)
    for key in ("duplicates_dropped", "skipped_lines", "skipped_locations", "alignment_failures", "seconds",
                "chars_per_second"):
        assert key in stats
    assert set(stats["cpu_seconds"]) == {"read", "segment", "pairs", "write", "finalise"}
    assert all(v >= 0 for v in stats["cpu_seconds"].values())

    # The whole corpus' text appears (no instance is all [UNK]) and iPhone13 -> iphone ##13.
    pieces = 0
    for r in rows:
        ids, words, types = r["input_ids"], r["word_ids"], r["token_type_ids"]
        assert len(ids) <= 32 and len(words) == len(ids) == len(types) == len(r["entity_ids"])
        for k, t in enumerate(ids):
            special = t in (tok.cls_id, tok.sep_id)
            assert (words[k] == -1) == special
            if special:
                assert r["entity_ids"][k] == -1
            elif tok.tokens[t].startswith("##"):
                assert words[k] == words[k - 1]  # a ## piece shares the word of its head
                pieces += 1
        real = [w for w in words if w >= 0]
        assert real[0] == 0 and all(b - a in (0, 1) for a, b in zip(real, real[1:]))
        ents = [e for e in r["entity_ids"] if e >= 0]
        assert all(b - a in (0, 1) for a, b in zip(ents, ents[1:]))
        sep = ids.index(tok.sep_id)
        assert types == [0] * (sep + 1) + [1] * (len(ids) - sep - 1)
    assert pieces >= 1


def test_output_layout_is_what_datasets_writes(tmp_path, vocab, corpus):
    # prepare writes the save_to_disk layout itself (no datasets import, no re-encoding);
    # datasets' own save_to_disk of the same data must give the same metadata and schema.
    import pyarrow as pa

    cfg = config(tmp_path, vocab, shard_documents=2)
    prepare(cfg)
    out = Path(cfg.dir)
    dd = datasets.load_from_disk(str(out))
    ref = tmp_path / "ref"
    dd.save_to_disk(str(ref))
    assert json.loads((out / "dataset_dict.json").read_text()) == json.loads((ref / "dataset_dict.json").read_text())
    for split in ("train", "validation"):
        assert json.loads((out / split / "dataset_info.json").read_text()) == \
            json.loads((ref / split / "dataset_info.json").read_text())
        ours = json.loads((out / split / "state.json").read_text())
        theirs = json.loads((ref / split / "state.json").read_text())
        assert {k: v for k, v in ours.items() if k != "_fingerprint"} == \
            {k: v for k, v in theirs.items() if k != "_fingerprint"}
        (f,) = (out / split).glob("data-*.arrow")
        (g,) = (ref / split).glob("data-*.arrow")
        ta, tb = (pa.ipc.open_stream(pa.memory_map(str(x))).read_all() for x in (f, g))
        assert ta.schema.equals(tb.schema, check_metadata=True)
        assert ta.equals(tb)
    assert prep._features_json() == prep.features().to_dict()


def test_split_files_capped_in_size(tmp_path, vocab, corpus, monkeypatch):
    # Shards are streamed into data-0000i-of-0000n.arrow files of at most ~_MAX_SPLIT_FILE_BYTES.
    monkeypatch.setattr(prep, "_MAX_SPLIT_FILE_BYTES", 1)
    cfg = config(tmp_path, vocab, shard_documents=2, validation_fraction=0)
    stats = prepare(cfg)
    files = sorted(p.name for p in (Path(cfg.dir) / "train").glob("*.arrow"))
    n = stats["shards"]
    assert files == [f"data-{k:05d}-of-{n:05d}.arrow" for k in range(n)]
    whole = config(tmp_path, vocab, shard_documents=2, validation_fraction=0, dir=str(tmp_path / "whole"))
    monkeypatch.setattr(prep, "_MAX_SPLIT_FILE_BYTES", 500 * 2**20)
    prepare(whole)
    assert len(list((tmp_path / "whole" / "train").glob("*.arrow"))) == 1
    assert datasets.load_from_disk(cfg.dir)["train"].data.table.equals(
        datasets.load_from_disk(whole.dir)["train"].data.table)


def test_same_output_with_one_or_two_workers(tmp_path, vocab, corpus):
    a = prepare(config(tmp_path, vocab, dir=str(tmp_path / "w1"), workers=1))
    b = prepare(config(tmp_path, vocab, dir=str(tmp_path / "w2"), workers=2))
    for split in ("train", "validation"):
        ta = datasets.load_from_disk(str(tmp_path / "w1" / split)).data.table
        tb = datasets.load_from_disk(str(tmp_path / "w2" / split)).data.table
        assert ta.equals(tb)
    drop = ("seconds", "chars_per_second", "workers", "cpu_seconds")
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    # A different seed gives different pairs.
    prepare(config(tmp_path, vocab, dir=str(tmp_path / "s2"), seed=8))
    tc = datasets.load_from_disk(str(tmp_path / "s2" / "train")).data.table
    assert not tc.equals(datasets.load_from_disk(str(tmp_path / "w1" / "train")).data.table)


def test_job_packed_for_a_worker_gives_back_the_same_sentences():
    # What a worker rebuilds from the packed job (one joined string) is the job's own
    # sentences, document sentence counts and validation flags, empty sentences included.
    docs = [("a", ["春天来了", "", "花开了"], False), ("b", ["x"], True), ("c", [""], False)]
    job = {"index": 0, "docs": docs, "cut": {}}
    packed = prep._pack(job)
    assert packed["docs"] is None and isinstance(packed["packed"][3], str)
    texts, counts, flags = prep._shard_sentences(packed)
    assert texts == ["春天来了", "", "花开了", "x", ""]
    assert counts.tolist() == [3, 1, 1] and flags.tolist() == [False, True, False]
    assert [x.tolist() if hasattr(x, "tolist") else x for x in prep._shard_sentences(job)] == \
        [texts, [3, 1, 1], [False, True, False]]
    # A sentence holding "\n" could not be split back: that job goes as it is.
    odd = {"index": 1, "docs": [("a", ["一\n二", "三"], False)], "cut": {}}
    assert prep._pack(odd) is odd
    assert prep._shard_sentences(odd)[0] == ["一\n二", "三"]
    # No sentence at all.
    none = prep._pack({"index": 2, "docs": [], "cut": {}})
    assert prep._shard_sentences(none)[0] == [] and len(prep._shard_sentences(none)[1]) == 0


def test_resume_redoes_only_missing_shards(tmp_path, vocab, corpus, monkeypatch):
    cfg = config(tmp_path, vocab)
    real = prep.process_shard

    out = Path(cfg.dir)
    merged = []

    def failing(job):
        if job["index"] == 2:
            # Shards 0 and 1 are already in the output's train file, merged while this one
            # is made (before, the whole output was copied after the last shard).
            merged.extend(p.name for p in (out / "train").glob("*.arrow"))
            raise KeyboardInterrupt  # the run is interrupted while shard 2 is being made
        return real(job)

    monkeypatch.setattr(prep, "process_shard", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg)
    monkeypatch.setattr(prep, "process_shard", real)
    assert merged == [".part-00000.arrow"]
    assert not (out / "train").exists() and not (out / "validation").exists()  # half-merged files removed
    marker = json.loads((out / "zhbert_prepare.json").read_text())
    assert marker["complete"] is False
    with pytest.raises(DataError, match="did not finish"):
        load_prepared(out)
    assert (out / "shards" / "shard_00001" / "shard.json").exists()
    assert not (out / "shards" / "shard_00002" / "shard.json").exists()

    # Lose shard 1's marker as well: only shard 0 can be reused.
    (out / "shards" / "shard_00001" / "shard.json").unlink()
    stats = prepare(cfg)
    assert stats["shards"] == 3 and stats["shards_reused"] == 1
    fresh = prepare(config(tmp_path, vocab, dir=str(tmp_path / "fresh")))
    for split in ("train", "validation"):
        assert load_prepared(out)[split].data.table.equals(load_prepared(tmp_path / "fresh")[split].data.table)
    assert fresh["instances"] == stats["instances"]

    # Complete and unchanged: returned as it is.
    again = prepare(cfg)
    assert again["already_prepared"] is True and again["instances"] == stats["instances"]


def test_changed_config_refused_unless_overwrite(tmp_path, vocab, corpus):
    prepare(config(tmp_path, vocab))
    before = (tmp_path / "out" / "stats.json").read_text()
    with pytest.raises(DataError, match=r"out.*data\.max_seq_length"):
        prepare(config(tmp_path, vocab, max_seq_length=64))
    assert (tmp_path / "out" / "stats.json").read_text() == before
    stats = prepare(config(tmp_path, vocab, max_seq_length=64, overwrite=True))
    assert read_prepare_meta(tmp_path / "out")["config"]["max_seq_length"] == 64
    assert max(len(r) for r in load_prepared(tmp_path / "out")["train"]["input_ids"]) <= 64
    assert "already_prepared" not in stats


def test_foreign_directory_refused_and_kept(tmp_path, vocab, corpus):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=str(out)):
        prepare(config(tmp_path, vocab))
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(DataError, match="not a zhbert prepare output"):
        load_prepared(out)
    with pytest.raises(DataError, match="not a zhbert prepare output"):
        read_prepare_meta(out)
    prepare(config(tmp_path, vocab, overwrite=True))
    assert not (out / "notes.txt").exists() and load_prepared(out)["train"].num_rows > 0


def test_bad_inputs_name_the_path(tmp_path, vocab, corpus):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError, match=str(missing)):
        prepare(config(tmp_path, vocab, input=[str(missing)]))
    assert not (tmp_path / "out").exists()

    bad_vocab = tmp_path / "vocab.txt"
    bad_vocab.write_bytes(b"\xff\xfe not a vocab")
    with pytest.raises(DataError, match=str(bad_vocab)):
        prepare(config(tmp_path, bad_vocab))
    with pytest.raises(DataError, match="absent"):
        prepare(config(tmp_path, tmp_path / "absent.txt"))
    assert not (tmp_path / "out").exists()

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no documents"):
        prepare(config(tmp_path, vocab, input=[str(empty)]))
    assert not (tmp_path / "out").exists()


def test_existing_output_untouched_by_failed_run(tmp_path, vocab, corpus):
    prepare(config(tmp_path, vocab))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "out").rglob("*"))
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError):
        prepare(config(tmp_path, vocab, input=[str(empty)], overwrite=True))
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "out").rglob("*")) == before


def test_undecodable_lines_are_counted_with_locations(tmp_path, vocab):
    path = tmp_path / "corpus.txt"
    good = "\n\n".join("\n".join(d) for d in DOCS[:4]).encode("utf-8")
    lines = good.split(b"\n")
    lines.insert(2, b"\xff\xfe\xfa broken line")
    path.write_bytes(b"\n".join(lines) + b"\n")
    stats = prepare(config(tmp_path, vocab))
    assert stats["skipped_lines"] == 1
    assert stats["skipped_locations"] == [f"{path}:3"]
    assert stats["documents"] == 4


def test_sop_and_none_modes(tmp_path, vocab, corpus):
    sop = prepare(config(tmp_path, vocab, dir=str(tmp_path / "sop"), pair_mode="sop"))
    assert sop["nsp_random_fraction"] is None and 0 <= sop["sop_swapped_fraction"] <= 1
    none = prepare(config(tmp_path, vocab, dir=str(tmp_path / "none"), pair_mode="none"))
    rows = load_prepared(tmp_path / "none")["train"]
    assert set(rows["next_sentence_label"]) == {-100}
    assert all(set(t) == {0} for t in rows["token_type_ids"])
    assert none["instances"] > 0


def test_no_validation_split_when_fraction_zero(tmp_path, vocab, corpus):
    stats = prepare(config(tmp_path, vocab, validation_fraction=0.0))
    dd = load_prepared(tmp_path / "out")
    assert set(dd) == {"train"} and stats["validation_instances"] == 0
    assert len(dd["train"]) == stats["instances"]


def test_tokenizer_files_record_the_corpus_normalisation(tmp_path, vocab, corpus):
    """Fine-tuning must see text as pretraining did: the prepared dir's tokenizer records
    the normalisation, and ChineseTokenizer.normalize applies it (，→, under fullwidth)."""
    from zhbert.prep.tokenizer import ChineseTokenizer

    out = tmp_path / "out"
    prepare(config(tmp_path, vocab, dir=str(out), fullwidth=True))
    tok = ChineseTokenizer.from_dir(out)
    assert tok.normalization == {"fullwidth": True, "t2s": False}
    assert tok.normalize("你好，ＡＢＣ！") == "你好,ABC!"
    # the default is what bert-base-chinese's models saw: no folding
    prepare(config(tmp_path, vocab, dir=str(tmp_path / "default")))
    assert ChineseTokenizer.from_dir(tmp_path / "default").normalization == {"fullwidth": False, "t2s": False}
    raw = ChineseTokenizer.from_vocab(vocab)
    assert raw.normalization is None and raw.normalize("你好，") == "你好，"


def test_same_output_wherever_the_corpus_lives(tmp_path, vocab, corpus):
    """The validation split and the pairs depend on content and seed only, not on the corpus
    path (another checkout or machine must prepare the same instances)."""
    moved = tmp_path / "elsewhere" / "deeper" / "corpus.txt"
    moved.parent.mkdir(parents=True)
    moved.write_bytes(corpus.read_bytes())
    prepare(config(tmp_path, vocab, dir=str(tmp_path / "a")))
    prepare(config(tmp_path, vocab, dir=str(tmp_path / "b"), input=[str(moved)]))
    for split in ("train", "validation"):
        ta = datasets.load_from_disk(str(tmp_path / "a" / split)).data.table
        tb = datasets.load_from_disk(str(tmp_path / "b" / split)).data.table
        assert ta.num_rows > 0 and ta.equals(tb)


def test_a_training_run_accepts_its_prepared_data_after_the_corpus_moved(tmp_path, vocab, corpus):
    """A copied experiment directory (corpus and prepared data at new paths): training on the
    prepared data with data.input naming the moved corpus is accepted when the files have the
    recorded names, sizes and content; an edited or renamed copy is still refused."""
    cfg = config(tmp_path, vocab)
    prepare(cfg)
    moved = tmp_path / "copy" / "corpus.txt"
    moved.parent.mkdir()
    moved.write_bytes(corpus.read_bytes())
    assert prep.check_prepared_matches(dataclasses.replace(cfg, input=[str(moved)])).input == [str(moved)]
    moved.write_bytes(corpus.read_bytes().replace("。".encode(), "！".encode(), 1))  # same size in UTF-8
    assert moved.stat().st_size == corpus.stat().st_size
    with pytest.raises(DataError, match=r"differs in data\.input\)"):
        prep.check_prepared_matches(dataclasses.replace(cfg, input=[str(moved)]))
    renamed = tmp_path / "copy" / "other.txt"
    renamed.write_bytes(corpus.read_bytes())
    with pytest.raises(DataError, match=r"differs in data\.input\)"):
        prep.check_prepared_matches(dataclasses.replace(cfg, input=[str(renamed)]))


def test_vocab_given_as_directory_or_checkpoint_name(tmp_path, vocab, corpus, monkeypatch):
    """data.vocab may name a directory holding vocab.txt, or a registered checkpoint whose
    vocab.txt is used (here resolved offline from a pre-populated huggingface_hub cache)."""
    import shutil

    vdir = tmp_path / "tokdir"
    vdir.mkdir()
    shutil.copy(vocab, vdir / "vocab.txt")
    def cfg(out, v):
        return dataclasses.replace(config(tmp_path, vocab, dir=str(tmp_path / out)), vocab=v)

    a = prepare(cfg("a", str(vdir)))

    cache = tmp_path / "hf" / "hub"
    snap = cache / "models--org--chinese-vocab" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    shutil.copy(vocab, snap / "vocab.txt")
    (snap / "config.json").write_text('{"model_type": "bert"}')
    import torch
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(snap / "model.safetensors"))  # a hub checkpoint has weights
    (cache / "models--org--chinese-vocab" / "refs").mkdir()
    (cache / "models--org--chinese-vocab" / "refs" / "main").write_text("0" * 40)
    reg = tmp_path / "reg.yaml"
    reg.write_text("checkpoints:\n  my-vocab:\n    hub_id: org/chinese-vocab\n", encoding="utf-8")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ZHBERT_REGISTRY", str(reg))
    b = prepare(cfg("b", "my-vocab"))
    assert a["vocab_sha256"] == b["vocab_sha256"] == hashlib.sha256(vocab.read_bytes()).hexdigest()
    assert datasets.load_from_disk(str(tmp_path / "a" / "train")).data.table.equals(
        datasets.load_from_disk(str(tmp_path / "b" / "train")).data.table)
    with pytest.raises(DataError, match="missing.txt: vocab file not found"):
        prepare(cfg("c", str(tmp_path / "missing.txt")))



def test_shards_close_at_shard_chars(tmp_path, vocab):
    # Documents of 10, 10, 30, 5, 5, 5 characters; a shard closes when its documents reach 20
    # characters (before 100 documents): [10, 10] [30] [5, 5, 5].
    docs = [["春天来了花园里的花都开"[:10]], ["小鸟在树上唱歌孩子们"], ["上海是中国最大的城市之一黄浦江从市中心穿过外滩的夜景非常漂亮"[:30]],
            ["他每天早上"], ["长江是中国"], ["这家餐厅的"]]
    assert [len(d[0]) for d in docs] == [10, 10, 30, 5, 5, 5]
    write_corpus(tmp_path / "corpus.txt", docs)
    cfg = config(tmp_path, vocab, shard_documents=100, shard_chars=20, validation_fraction=0)
    jobs = list(prep._shard_jobs(cfg, ReadStats(), Path(cfg.dir)))
    assert [[len(s[0]) for _, s, _ in j["docs"]] for j in jobs] == [[10, 10], [30], [5, 5, 5]]
    assert prepare(cfg)["shards"] == 3


def test_shard_cap_from_the_estimated_corpus_size():
    # Hand-worked: ~3 bytes a character, x4 for compressed files; 1/min_shards of that, within
    # [MIN_SHARD_CHARS = 250,000, shard_chars].
    files = [{"path": "/c/a.txt", "size": 90_000_000}, {"path": "/c/b.txt.gz", "size": 7_500_000}]
    # (90M + 4 x 7.5M) / 3 = 40M characters; / 64 = 625,000
    assert prep.shard_cap(DataConfig(), files) == 625_000
    assert prep.shard_cap(DataConfig(min_shards=10), files) == 2_000_000  # 4M > shard_chars
    assert prep.shard_cap(DataConfig(min_shards=1000), files) == 250_000  # 40,000: the floor
    assert prep.shard_cap(DataConfig(min_shards=1000, shard_chars=1000), files) == 1000  # never above shard_chars
    assert prep.shard_cap(DataConfig(min_shards=1), files) == 2_000_000  # 1: shard_chars alone
    with pytest.raises(ConfigError, match="data.min_shards"):
        DataConfig(min_shards=0).validate("x")


def test_mid_sized_corpus_is_cut_into_min_shards(tmp_path, vocab, monkeypatch):
    # Floor lowered so a test-sized corpus shows the rule: 60 documents of 12 characters (36
    # bytes of UTF-8 each + newlines), min_shards 6 -> shards close at size / 3 / 6 characters.
    monkeypatch.setattr(prep, "MIN_SHARD_CHARS", 1)
    doc = "春天来了花园里的花都开了"
    assert len(doc) == 12
    docs = [[doc[i % 12:] + doc[:i % 12]] for i in range(12)] * 5  # 60 documents, 12 of them distinct
    path = write_corpus(tmp_path / "corpus.txt", docs)
    cap = int(path.stat().st_size / 3 // 6)
    cfg = config(tmp_path, vocab, shard_documents=100, min_shards=6, validation_fraction=0, dedup=False)
    stats = prepare(cfg)
    assert stats["shard_cap"] == cap == read_prepare_meta(cfg.dir)["shard_cap"]
    per_shard = -(-cap // 12)  # documents until a shard's characters reach the cap
    assert stats["shards"] == -(-60 // per_shard)
    # the same corpus with min_shards 1: one shard (shard_documents 100, shard_chars 2M)
    assert prepare(config(tmp_path, vocab, shard_documents=100, validation_fraction=0, dedup=False,
                          dir=str(tmp_path / "one"), min_shards=1))["shards"] == 1
    # a finished output is not re-made for another min_shards (same documents, same settings)
    assert prepare(dataclasses.replace(cfg, min_shards=1))["already_prepared"] is True


def test_resume_refused_when_shards_would_close_elsewhere(tmp_path, vocab, corpus, monkeypatch):
    # A partial output started with other shard boundaries (by an older zhbert, or with another
    # data.min_shards) cannot be resumed by index: refused, naming the setting that resumes it.
    monkeypatch.setattr(prep, "MIN_SHARD_CHARS", 1)
    cfg = config(tmp_path, vocab, min_shards=1)
    real = prep.process_shard

    def failing(job):
        if job["index"] == 1:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(prep, "process_shard", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg)
    monkeypatch.setattr(prep, "process_shard", real)
    out = Path(cfg.dir)
    assert (out / "shards" / "shard_00000" / "shard.json").exists()
    with pytest.raises(DataError, match=r"out: holds a partial output .* data.min_shards=1 to resume"):
        prepare(dataclasses.replace(cfg, min_shards=64))
    assert (out / "shards" / "shard_00000" / "shard.json").exists()  # nothing lost
    stats = prepare(cfg)
    assert stats["shards_reused"] == 1
    fresh = prepare(config(tmp_path, vocab, min_shards=1, dir=str(tmp_path / "fresh")))
    assert fresh["instances"] == stats["instances"]


def test_sentence_over_the_budget_is_cut_into_pieces(tmp_path, vocab):
    # A 600-character "sentence" with no sentence end used to become one truncated instance.
    chars = "".join(sorted({c for d in DOCS for s in d for c in s if "\u4e00" <= c <= "\u9fff"}))
    long = (chars * (600 // len(chars) + 1))[:600]
    write_corpus(tmp_path / "corpus.txt", DOCS[:3] + [[long]] + DOCS[3:])
    stats = prepare(config(tmp_path, vocab, validation_fraction=0.0, short_seq_prob=0.0))
    assert stats["split_long_sentences"] == 1
    rows = load_prepared(tmp_path / "out")["train"]
    assert max(map(len, rows["input_ids"])) <= 32
    # pieces of at most half the budget (32 - 3) // 2 = 14 tokens, so a pair fits whole
    assert stats["instances"] >= 600 // 29 and stats["tokens"] >= 600


def test_split_long_cuts_at_word_boundaries_and_renumbers():
    from zhbert.prep.segment import AlignedSentence

    # words: 0 0 0 | 1 1 | 2 | 3 3 3 3 ; entity spans on words 1 and 3
    sent = AlignedSentence(list(range(10)), [0, 0, 0, 1, 1, 2, 3, 3, 3, 3], [-1, -1, -1, 0, 0, -1, 1, 1, 1, 1])
    pieces = prep._split_long(sent, 4)
    assert [p.ids for p in pieces] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]  # cut where words change
    assert [p.word_ids for p in pieces] == [[0, 0, 0], [0, 0, 1], [0, 0, 0, 0]]
    assert [p.entity_ids for p in pieces] == [[-1, -1, -1], [0, 0, -1], [0, 0, 0, 0]]
    one_word = AlignedSentence(list(range(9)), [0] * 9, [-1] * 9)  # no boundary: cut inside the word
    assert [len(p.ids) for p in prep._split_long(one_word, 4)] == [4, 4, 1]


def test_validation_split_has_a_useful_minimum():
    """Hand-worked: instances ~ bytes / 3 / (0.9 x max_seq_length); validation gets
    max(fraction, min(64 / instances, 25%))."""
    from zhbert.prep.prepare import validation_fraction

    cfg = DataConfig(max_seq_length=128, validation_fraction=0.02)
    assert validation_fraction(cfg, [{"path": "a.txt", "size": 3_000_000}]) == 0.02  # 8,681 instances: 0.7% < 2%
    assert validation_fraction(cfg, [{"path": "a.txt", "size": 100_000}]) == pytest.approx(64 / (100_000 / 3 / 115.2))
    assert validation_fraction(cfg, [{"path": "a.txt", "size": 30_000}]) == 0.25  # 87 instances: capped
    assert validation_fraction(cfg, [{"path": "a.txt.gz", "size": 25_000}]) == pytest.approx(64 / (100_000 / 3 / 115.2))
    assert validation_fraction(DataConfig(validation_fraction=0.0), [{"path": "a", "size": 10}]) == 0.0


def test_the_bundled_sample_gets_eval_data_and_prepare_reports_progress_and_unk_rate(tmp_path):
    """corpora/sample (107 documents, ~210 instances) used to give a validation split of one
    instance; without a terminal prepare prints plain progress lines and the [UNK] rate."""
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "zhbert.cli", "prepare", "--input", str(repo / "corpora" / "sample"),
                        "--output", str(tmp_path / "out"), "--vocab", str(repo / "configs" / "vocab" / "sample_vocab.txt")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)  # stdout stays the stats JSON
    assert 40 <= stats["validation_instances"] <= 0.35 * stats["instances"]
    assert "[zhbert] prepare: 1 shards" in r.stderr
    assert f"[UNK] is {stats['unk_rate']:.2%} of the tokens" in r.stderr
