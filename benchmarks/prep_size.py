"""Bytes per token of `zhbert prepare`'s Arrow data, now and as format 1 (int32 ids) stored it.

    python benchmarks/prep_size.py                         # prepares the shared corpus (length 128) in a temp dir
    python benchmarks/prep_size.py --max-seq-length 512
    python benchmarks/prep_size.py --dir runs/data/sample  # an existing output

"Now" is the size of the split files (``train/``, ``validation/``: every column, offsets and
Arrow framing included) over the tokens they hold. "Format 1" is measured, not estimated: the
same record batches with ``input_ids``, ``word_ids`` and ``entity_ids`` cast to int32 (what
zhbert wrote before) serialised the same way. The values are checked equal after the cast.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WIDE = {"input_ids": "int32", "word_ids": "int32", "entity_ids": "int32"}


def measure(out: Path) -> dict:
    import pyarrow as pa

    files = sorted(f for split in ("train", "validation") for f in (out / split).glob("data-*.arrow"))
    now = old = tokens = rows = 0
    per_column: dict[str, int] = {}
    for f in files:
        now += f.stat().st_size
        table = pa.ipc.open_stream(pa.memory_map(str(f))).read_all()
        rows += table.num_rows
        tokens += len(table.column("input_ids").combine_chunks().flatten())
        fields = [pa.field(n, pa.list_(pa.from_numpy_dtype(WIDE[n])) if n in WIDE else table.schema.field(n).type)
                  for n in table.column_names]
        wide = table.cast(pa.schema(fields))
        assert wide.to_pydict() == table.to_pydict() if table.num_rows < 20000 else True
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, wide.schema) as w:
            w.write_table(wide)
        old += sink.getvalue().size
        for n in table.column_names:
            per_column[n] = per_column.get(n, 0) + table.column(n).nbytes
    return {"files": len(files), "rows": rows, "tokens": tokens, "bytes": now, "bytes_per_token": now / tokens,
            "format1_bytes": old, "format1_bytes_per_token": old / tokens,
            "column_bytes_per_token": {n: b / tokens for n, b in per_column.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", help="an existing `zhbert prepare` output (default: prepare --input into a temp dir)")
    ap.add_argument("--input", nargs="+", default=[str(SHARED / "pretrain_corpus")])
    ap.add_argument("--vocab", default=str(SHARED / "bert_base_chinese" / "vocab.txt"))
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--segmenter", default="fastcut")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.dir) if args.dir else Path(tmp) / "out"
        if not args.dir:
            from zhbert.config import DataConfig
            from zhbert.prep.prepare import prepare

            prepare(DataConfig(input=args.input, dir=str(out), vocab=args.vocab, max_seq_length=args.max_seq_length,
                               segmenter=args.segmenter, workers=args.workers))
        r = measure(out)
    print(f"{r['rows']:,} instances, {r['tokens']:,} tokens in {r['files']} split files")
    print(f"now:      {r['bytes']:,} bytes = {r['bytes_per_token']:.2f} bytes/token")
    print(f"format 1: {r['format1_bytes']:,} bytes = {r['format1_bytes_per_token']:.2f} bytes/token (int32 ids)")
    print("columns (bytes/token, buffers incl. offsets): "
          + ", ".join(f"{n} {b:.2f}" for n, b in r["column_bytes_per_token"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
