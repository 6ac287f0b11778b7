"""Narrow integer columns of `zhbert prepare` (issue 15, "Memory and size"): the values round-trip
exactly, format-1 outputs (int32 ids) still load and give the same batches, and a real prepared
sample takes at most 7 bytes per token on disk."""

import dataclasses
import json
import random
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest

import zhbert.prep.prepare as prep
from zhbert.config import DataConfig, MaskingConfig
from zhbert.errors import DataError
from zhbert.prep import format as fmt
from zhbert.prep.prepare import load_prepared, prepare
from zhbert.prep.tokenizer import ChineseTokenizer
from zhbert.train.collator import PretrainingCollator
from zhbert.train.masking import VocabInfo
from zhbert.train.order import ShardedBatches

from test_prepare import config, vocab, write_corpus  # noqa: F401  (vocab: a fixture)


def _instances(rng: random.Random, n: int, length: int, vocab_size: int) -> list[dict]:
    """Valid-looking rows that hit the edges of each narrow type (id vocab_size - 1, word id
    length - 3, -1, -100)."""
    out = []
    for k in range(n):
        t = rng.randint(3, length)
        ids = [rng.randrange(vocab_size) for _ in range(t)]
        ids[-1] = vocab_size - 1
        words = [-1] + list(range(t - 2)) + [-1]
        out.append({"input_ids": ids, "token_type_ids": [0] * (t // 2) + [1] * (t - t // 2),
                    "next_sentence_label": [-100, 0, 1][k % 3], "word_ids": words,
                    "entity_ids": [w if w % 2 else -1 for w in words]})
    return out


@pytest.mark.parametrize("vocab_size, length, stored", [
    (21128, 128, ("uint16", "int8", "int8", "int8", "int8")),   # the defaults
    (65536, 130, ("uint16", "int8", "int8", "int16", "int16")),
    (70000, 512, ("int32", "int8", "int8", "int16", "int16")),
])
def test_values_round_trip_exactly(tmp_path, vocab_size, length, stored):
    cols = fmt.storage_columns(vocab_size, length)
    assert tuple(c.dtype for c in cols) == stored
    rows = _instances(random.Random(0), 50, length, vocab_size)
    path = tmp_path / "x.arrow"
    prep._write_arrow(path, rows, cols)
    table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
    assert table.schema == fmt.arrow_schema(cols)
    assert table.to_pylist() == rows
    # and through datasets, with the features prepare records
    ds = datasets.Dataset.from_file(str(path))
    assert ds.to_list() == rows


def test_a_value_outside_the_stored_type_is_refused_not_wrapped(tmp_path):
    rows = _instances(random.Random(1), 3, 128, 21128)
    rows[1]["word_ids"][1] = 128  # cannot be made at length 128; int8 would wrap it to -128
    with pytest.raises(DataError, match=r"do not fit the stored type int8"):
        prep._write_arrow(tmp_path / "x.arrow", rows, fmt.storage_columns(21128, 128))


def _as_format_1(monkeypatch):
    """What zhbert wrote before narrow types: every id column int32, format_version 1."""
    wide = tuple(dataclasses.replace(c, dtype="int32") if c.name in ("input_ids", "word_ids", "entity_ids") else c
                 for c in fmt.SCHEMA)
    monkeypatch.setattr(prep, "storage_columns", lambda vocab_size, max_seq_length: wide)
    monkeypatch.setattr(prep, "FORMAT_VERSION", 1)


def test_format_1_outputs_still_load_and_give_the_same_batches(tmp_path, vocab, monkeypatch):
    write_corpus(tmp_path / "corpus.txt")
    new = config(tmp_path, vocab, dir=str(tmp_path / "new"))
    prepare(new)
    with monkeypatch.context() as m:
        _as_format_1(m)
        old = config(tmp_path, vocab, dir=str(tmp_path / "old"))
        prepare(old)
    assert json.loads((tmp_path / "old" / prep.MARKER).read_text())["format_version"] == 1
    a, b = load_prepared(new.dir), load_prepared(old.dir)
    assert b["train"].features["input_ids"].feature.dtype == "int32"
    assert a["train"].features["input_ids"].feature.dtype == "uint16"
    assert a["train"].features["word_ids"].feature.dtype == "int8"
    for split in ("train", "validation"):
        assert a[split].to_list() == b[split].to_list()  # identical values

    tok = ChineseTokenizer.from_dir(new.dir)
    for strategy in ("wwm", "entity"):
        collator = PretrainingCollator(VocabInfo.from_tokenizer(tok), MaskingConfig(strategy=strategy), 32)
        batches = [ShardedBatches(d["train"], collator, seed=3, rank=0, world_size=1, micro_batch_size=4)
                   for d in (a, b)]
        for g in range(min(3, batches[0].batches_per_epoch)):
            x, y = batches[0][g], batches[1][g]
            assert x.keys() == y.keys()
            for k in x:
                assert x[k].dtype == y[k].dtype and bool((x[k] == y[k]).all()), (strategy, g, k)

    # Re-preparing a format-1 directory names the difference in one line (--overwrite replaces it).
    with pytest.raises(DataError, match=r"differs in format_version\); pass --overwrite"):
        prepare(old)
    prepare(dataclasses.replace(old, overwrite=True))
    assert json.loads((tmp_path / "old" / prep.MARKER).read_text())["format_version"] == fmt.FORMAT_VERSION


def _bytes_per_token(out: Path) -> float:
    tokens = json.loads((out / "stats.json").read_text())["tokens"]
    size = sum(f.stat().st_size for split in ("train", "validation") for f in (out / split).glob("data-*.arrow"))
    return size / tokens


def test_at_most_7_bytes_per_token_on_a_real_prepared_sample(tmp_path, bert_chinese_vocab, shared_corpus_sample):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(shared_corpus_sample(300)) + "\n", encoding="utf-8")  # ~100 K characters
    cfg = DataConfig(input=[str(corpus)], dir=str(tmp_path / "out"), vocab=str(bert_chinese_vocab),
                     format="plain")
    stats = prepare(cfg)
    assert stats["tokens"] > 50_000
    per_token = _bytes_per_token(tmp_path / "out")
    assert per_token <= 7.0, per_token
    # the stored types are the narrow ones, and the ids are what the tokenizer makes
    ds = load_prepared(cfg.dir)["train"]
    assert [ds.features[c].feature.dtype for c in ("input_ids", "token_type_ids", "word_ids", "entity_ids")] == \
        ["uint16", "int8", "int8", "int8"]
    ids = np.concatenate([np.asarray(r, dtype=np.int64) for r in ds[:50]["input_ids"]])
    assert ids.max() < 21128 and ids.min() >= 0
