"""The instance format written by ``zhbert prepare``: one table, every schema derived from it.

One row per instance, no padding; the columns are ``SCHEMA`` below. docs/DESIGN.md
("Instance format") and docs/data.md show it as :func:`markdown_table` writes it;
tests/test_format.py fails when a doc differs.

The on-disk schemas are three spellings of that table, and all three must agree, because
``prepare`` writes ``datasets``' layout without importing ``datasets`` (1-2 s per worker):

* :func:`arrow_schema` -- the pyarrow schema of every Arrow file (shards and split files);
* :func:`features_json` -- ``datasets.Features.to_dict()``, written into dataset_info.json and
  into the split files' schema metadata (key order matters: the files must be byte-identical
  to what ``save_to_disk`` writes, which a test checks);
* :func:`features` -- the ``datasets.Features`` object itself, for readers.

A type is an element dtype plus whether the column holds one value per token (a list) or
one per instance. The dtype name is the same in numpy, pyarrow and ``datasets.Value``.

Integers are stored in the narrowest type that holds every value a configuration can make
(the values themselves never change): token ids as uint16 when the vocabulary has at most
65,536 entries, word and entity ids (at most ``max_seq_length`` - 3) as int8 up to
``max_seq_length`` 128, per-instance flags as int8. At length 128 that is ~5.1 bytes per
token on disk instead of ~13.1 with int32 ids. :func:`storage_columns` gives the types of one
output; ``SCHEMA`` holds those of the defaults (bert-base-chinese's 21,128 entries, length
128). Format version 1 stored ids as int32: its outputs hold the same values and still load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

FORMAT_VERSION = 2  # zhbert_prepare.json's "format_version": bump when SCHEMA changes
# Versions whose outputs readers accept: 1 = the same columns and values with int32 ids.
READABLE_FORMAT_VERSIONS = (1, 2)


@dataclass(frozen=True)
class Column:
    """One column of the instance format.

    name: the column name (Arrow field, ``datasets`` feature, batch key of the collator).
    dtype: element type, a name numpy, pyarrow and ``datasets.Value`` all know ("int32", "int8").
    per_token: True for one value per token (``list<dtype>``, as long as ``input_ids``),
        False for one value per instance.
    meaning: what the values are (the docs' table is generated from it).
    wide: (size, limit, dtype): the element type used instead of ``dtype`` when the output's
        ``size`` ("vocab_size" or "max_seq_length") exceeds ``limit``; None = always ``dtype``.
    """

    name: str
    dtype: str
    per_token: bool
    meaning: str
    wide: Optional[tuple[str, int, str]] = None

    @property
    def type_name(self) -> str:
        """The type as the docs write it: ``list<uint16>`` or ``int8``, plus the wide case."""
        name = f"list<{self.dtype}>" if self.per_token else self.dtype
        if self.wide:
            size, limit, dtype = self.wide
            name += f" ({dtype} if {size} > {limit})"
        return name

    def stored(self, vocab_size: int, max_seq_length: int) -> "Column":
        """This column as an output with these sizes stores it (``dtype`` narrowed or widened)."""
        if self.wide is None:
            return self
        size, limit, dtype = self.wide
        value = {"vocab_size": vocab_size, "max_seq_length": max_seq_length}[size]
        return dataclasses.replace(self, dtype=dtype) if value > limit else self

    def arrow_type(self):
        import pyarrow as pa

        value = pa.from_numpy_dtype(self.dtype)
        return pa.list_(value) if self.per_token else value

    def feature_json(self) -> dict:
        """This column's entry of ``datasets.Features.to_dict()`` (in its key order)."""
        value = {"dtype": self.dtype, "_type": "Value"}
        return {"feature": value, "_type": "List"} if self.per_token else value

    def feature(self):
        import datasets

        value = datasets.Value(self.dtype)
        return datasets.List(value) if self.per_token else value


SCHEMA: tuple[Column, ...] = (
    Column("input_ids", "uint16", True,
           "`[CLS] A [SEP] B [SEP]` (pair modes) or `[CLS] A [SEP]` (`pair_mode: none`)",
           wide=("vocab_size", 65536, "int32")),
    Column("token_type_ids", "int8", True, "0 for `[CLS] A [SEP]`, 1 for `B [SEP]`"),
    Column("next_sentence_label", "int8", False,
           "nsp: 0 = B follows A, 1 = B random; sop: 0 = in order, 1 = swapped; none: -100"),
    Column("word_ids", "int8", True,
           "per token: index of its whole (jieba) word, 0, 1, 2, ... increasing within the instance; "
           "-1 for [CLS]/[SEP]; a `##` piece shares the word of its head",
           wide=("max_seq_length", 128, "int16")),
    Column("entity_ids", "int8", True,
           "per token: index of its entity/phrase span (0, 1, ...), -1 outside any span; "
           "spans are unions of whole words",
           wide=("max_seq_length", 128, "int16")),
)
COLUMNS: tuple[str, ...] = tuple(c.name for c in SCHEMA)


def storage_columns(vocab_size: int, max_seq_length: int) -> tuple[Column, ...]:
    """The columns with the element types an output of these sizes stores (see module doc)."""
    return tuple(c.stored(vocab_size, max_seq_length) for c in SCHEMA)


def arrow_schema(columns: tuple[Column, ...] = SCHEMA):
    """The ``pyarrow.Schema`` of the Arrow files (without ``datasets``' metadata)."""
    import pyarrow as pa

    return pa.schema([(c.name, c.arrow_type()) for c in columns])


def features_json(columns: tuple[Column, ...] = SCHEMA) -> dict:
    """``features(columns).to_dict()``, built without importing ``datasets``."""
    return {c.name: c.feature_json() for c in columns}


def features(columns: tuple[Column, ...] = SCHEMA):
    """The ``datasets.Features`` of the instance format (``columns``: ``storage_columns(...)``)."""
    import datasets

    return datasets.Features({c.name: c.feature() for c in columns})


def markdown_table() -> str:
    """The docs' column table (docs/DESIGN.md, docs/data.md), one line per row."""
    rows = ["| column | type | meaning |", "|---|---|---|"]
    rows += [f"| `{c.name}` | {c.type_name} | {c.meaning} |" for c in SCHEMA]
    return "\n".join(rows)
