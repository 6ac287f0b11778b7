"""The pretraining corpus of the CLUE experiment (issue 14), and its leak check.

    python scripts/experiment_corpus.py --output runs/exp/corpus

Sources, all unlabeled text:

* ``corpora/sample`` (bundled) and ``../shared/data/pretrain_corpus`` (CLUECorpusSmall samples,
  the four classical novels, one zhwiki WikiExtractor shard), copied as they are;
* the **train** text of the CLUE tasks the experiment evaluates: TNEWS titles (8 per
  pseudo-document), OCNLI premises each followed by its hypotheses, C3 train dialogues and
  passages, CMRC2018 trial contexts (the trial set is what zhbert trains CMRC2018 on offline).

Never dev or test text. The check: every dev/test text of TNEWS, OCNLI, C3 and CMRC2018 is cut
into sentences (``split_sentences``); every corpus line is cut the same way, and a corpus line
that contains a dev/test sentence of at least ``MIN_CHARS`` characters is dropped (TNEWS has
titles that occur in both its train and dev files, and CLUECorpusSmall is news too). The counts
go to ``corpus_stats.json``; after writing, the corpus is read back and checked again, and the
script fails if any dev/test sentence is still in it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
MIN_CHARS = 8  # shorter sentences ("是的。", "你好吗？") occur everywhere by chance
_SENT_END = re.compile(r"(?<=[。！？!?；;…])|\n")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: cut after 。！？!?；;… and at newlines, whitespace stripped."""
    return [s for s in (p.strip() for p in _SENT_END.split(text)) if s]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.open(encoding="utf-8") if x.strip()]


def train_documents(clue: Path) -> dict[str, list[list[str]]]:
    """Per task, the documents (lists of lines) made from its train file."""
    titles = [r["sentence"] for r in _jsonl(clue / "tnews_public" / "train.json")]
    by_premise: dict[str, list[str]] = {}
    for r in _jsonl(clue / "ocnli_public" / "train.50k.json"):
        by_premise.setdefault(r["sentence1"], []).append(r["sentence2"])
    c3 = []
    for f in ("c3-d-train.json", "c3-m-train.json"):
        c3 += [list(item[0]) for item in json.loads((clue / "c3" / f).read_text(encoding="utf-8"))]
    trial = json.loads((clue / "cmrc2018" / "cmrc2018_trial.json").read_text(encoding="utf-8"))
    cmrc = [[p["context"]] for a in trial["data"] for p in a["paragraphs"]]
    return {"tnews": [titles[i:i + 8] for i in range(0, len(titles), 8)],
            "ocnli": [[p, *hs] for p, hs in by_premise.items()], "c3": c3, "cmrc2018": cmrc}


def heldout_texts(clue: Path) -> list[str]:
    """Every dev and test text of the evaluated tasks (what must not be pretrained on)."""
    out: list[str] = []
    out += [r["sentence"] for r in _jsonl(clue / "tnews_public" / "dev.json")]
    for f in ("dev.json", "test.json"):
        for r in _jsonl(clue / "ocnli_public" / f):
            out += [r["sentence1"], r["sentence2"]]
    for f in ("c3-d-dev.json", "c3-m-dev.json", "c3-d-test.json", "c3-m-test.json"):
        for item in json.loads((clue / "c3" / f).read_text(encoding="utf-8")):
            out += list(item[0]) + [q["question"] for q in item[1]]
    for f in ("cmrc2018_dev.json", "test.json"):
        for a in json.loads((clue / "cmrc2018" / f).read_text(encoding="utf-8"))["data"]:
            for p in a["paragraphs"]:
                out.append(p["context"])
                out += [q["question"] for q in p["qas"]]
    return out


def heldout_sentences(clue: Path) -> set[str]:
    return {s for t in heldout_texts(clue) for s in split_sentences(t) if len(s) >= MIN_CHARS}


def _leaks(line: str, held: set[str]) -> bool:
    return any(s in held for s in split_sentences(line) if len(s) >= MIN_CHARS)


def check_pretrain_corpus(pretrain: Path) -> None:
    """One line naming the directory when it is missing or holds no file."""
    if not pretrain.is_dir():
        raise SystemExit(f"--pretrain-corpus {pretrain}: not a directory (the shared data's pretrain_corpus)")
    if not any(p.is_file() for p in pretrain.rglob("*")):
        raise SystemExit(f"--pretrain-corpus {pretrain}: no files in it")


def build(out: Path, clue: Path = SHARED / "clue", pretrain: Path = SHARED / "pretrain_corpus") -> dict:
    """Write the corpus under ``out`` (one directory of files for ``zhbert prepare``); return stats.

    ``pretrain`` must hold at least one file: a missing directory (a checkout without the shared
    data beside it) is an error, not a silently smaller corpus (a third of the characters)."""
    check_pretrain_corpus(pretrain)
    held = heldout_sentences(clue)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    stats: dict = {"heldout_sentences": len(held), "min_chars": MIN_CHARS, "files": {}}
    # external text: filter line by line, keep the file's own format (blank lines = documents)
    sources = sorted((REPO / "corpora" / "sample").glob("sample_bert.txt")) + sorted(
        p for p in pretrain.rglob("*") if p.is_file())
    for i, src in enumerate(sources):
        lines = src.read_text(encoding="utf-8", errors="replace").splitlines()
        kept = [x for x in lines if not _leaks(x, held)]
        name = f"{i:02d}_{src.parent.name}_{src.name}"
        if not name.endswith(".txt") and src.parent.name != "zhwiki_sample":
            name += ".txt"
        (out / name).write_text("\n".join(kept) + "\n", encoding="utf-8")
        stats["files"][name] = {"source": str(src.relative_to(src.parents[1])) if src.is_relative_to(pretrain)
                                else str(src.relative_to(REPO)), "lines": len(lines),
                                "dropped_lines": len(lines) - len(kept)}
    for task, docs in train_documents(clue).items():
        kept_docs, dropped = [], 0
        for d in docs:
            k = [x for x in d if not _leaks(x, held)]
            dropped += len(d) - len(k)
            if k:
                kept_docs.append(k)
        name = f"clue_{task}_train_text.txt"
        (out / name).write_text("\n\n".join("\n".join(d) for d in kept_docs) + "\n", encoding="utf-8")
        stats["files"][name] = {"source": f"{task} train", "documents": len(kept_docs),
                                "lines": sum(map(len, docs)), "dropped_lines": dropped}
    # read back: no held-out sentence may remain
    left = sum(_leaks(x, held) for p in out.iterdir() for x in p.read_text(encoding="utf-8").splitlines())
    if left:
        raise SystemExit(f"leak check failed: {left} corpus lines still contain dev/test sentences")
    stats["leak_check"] = "passed: no dev/test sentence of >= %d characters occurs in a corpus line" % MIN_CHARS
    stats["chars"] = sum(len(p.read_text(encoding="utf-8")) for p in out.iterdir())
    (out.parent / "corpus_stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True, help="directory to write the corpus files into")
    ap.add_argument("--clue-dir", default=str(SHARED / "clue"))
    ap.add_argument("--pretrain-corpus", default=str(SHARED / "pretrain_corpus"))
    a = ap.parse_args()
    s = build(Path(a.output), Path(a.clue_dir), Path(a.pretrain_corpus))
    print(json.dumps({k: s[k] for k in ("heldout_sentences", "chars", "leak_check")}, ensure_ascii=False))
    print("dropped lines:", {k: v["dropped_lines"] for k, v in s["files"].items() if v["dropped_lines"]})
    return 0


def run_main(main) -> None:
    """``sys.exit(main())``, where bad input (a ``SystemExit`` with its one-line message) exits 2,
    the project's convention, instead of ``SystemExit``'s 1. Shared with clue_experiment.py."""
    try:
        code = main()
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            sys.exit(2)
        raise
    sys.exit(code)


if __name__ == "__main__":
    run_main(main)
