"""Issue #10 ("never silently wrong, never lose work") for ``zhbert prepare``.

Real processes, files and signals throughout: runs go through ``python -m zhbert.cli`` (or
``zhbert.prep.prepare.prepare`` where only the on-disk result matters), kills are SIGKILL / SIGSTOP
sent to those processes, a full disk and a read-only folder are real tmpfs mounts (skipped
when this user cannot mount), Arrow files are read back with ``datasets``.

* one run per output: a second run fails at once naming the holder; stats = rows on disk;
* a killed worker stops the run with a message naming the shard; the re-run resumes;
* a killed run resumes; a shard whose files disagree with its shard.json is made again;
* ``--overwrite`` keeps the old output until the new one is complete;
* an input edited in place (same size) is seen; leftover ``shards/`` are removed;
* long lines are cut into pieces, in bounded memory, covering the text;
* corpus folders: compressed files, files that are not text, symlinked folders;
* one-line errors: bad --config, disk full, read-only output, GBK input.
"""

from __future__ import annotations

import bz2
import collections
import contextlib
import gzip
import hashlib
import json
import lzma
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from _faults import tmpfs

from zhbert.config import DataConfig
from zhbert.errors import DataError
from zhbert.prep.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
VOCAB = REPO / "configs" / "vocab" / "sample_vocab.txt"
SAMPLE_BERT = REPO / "corpora" / "sample" / "sample_bert.txt"
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
       "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}


# ----------------------------------------------------------------------------- helpers


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "zhbert.cli", *args]


def prepare_cmd(inputs, out: Path, *extra: str) -> list[str]:
    inputs = [inputs] if isinstance(inputs, (str, Path)) else inputs
    return cli("prepare", "--input", *map(str, inputs), "--output", str(out), "--vocab", str(VOCAB),
               "--max-seq-length", "32", *extra)


def run(cmd: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The run failed with exit 2 and exactly one line on stderr (no traceback)."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("zhbert prepare: error: "), r.stderr[-3000:]
    return lines[0]


def big_corpus(path: Path, copies: int) -> Path:
    """corpora/sample/sample_bert.txt repeated (run with data.dedup=false): ~38 KB each."""
    text = SAMPLE_BERT.read_text(encoding="utf-8").strip() + "\n\n"
    path.write_text(text * copies, encoding="utf-8")
    return path


_STARTED: list[subprocess.Popen] = []


def spawn(cmd: list[str]) -> subprocess.Popen:
    """A background run in its own process group (so that nothing it started outlives the test)."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    yield
    while _STARTED:
        proc = _STARTED.pop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT)
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.communicate(timeout=10)


def wait_until(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    """Poll until ``ready()``; fail if ``proc`` ended first."""
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"the run ended too early: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() - t0 < timeout, "timed out waiting for the run"
        time.sleep(0.005)


def kill_when(proc: subprocess.Popen, ready, sig=signal.SIGKILL) -> None:
    """Send ``sig`` to ``proc`` as soon as ``ready()`` is true."""
    wait_until(proc, ready)
    os.kill(proc.pid, sig)


def tables(out: Path) -> dict:
    dd = datasets.load_from_disk(str(out))
    return {split: dd[split].data.table for split in dd}


def assert_same_data(a: Path, b: Path) -> None:
    ta, tb = tables(a), tables(b)
    assert set(ta) == set(tb)
    for split in ta:
        assert ta[split].num_rows > 0 and ta[split].equals(tb[split]), split


def assert_stats_match_rows(out: Path) -> dict:
    stats = json.loads((out / "stats.json").read_text())
    marker = json.loads((out / "zhbert_prepare.json").read_text())
    dd = datasets.load_from_disk(str(out))
    rows = {split: len(dd[split]) for split in dd}
    assert marker["complete"] is True and marker["splits"] == rows
    assert stats["train_instances"] == rows["train"]
    assert stats["validation_instances"] == rows.get("validation", 0)
    assert stats["instances"] == sum(rows.values())
    assert stats["tokens"] == sum(len(ids) for split in dd for ids in dd[split]["input_ids"])
    return stats


def snapshot(d: Path) -> dict:
    """path -> sha256 of every file under ``d``: 'the output is exactly as it was'."""
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name) and p != out)


def children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            kids += [int(x) for x in (task / "children").read_text().split()]
    return kids


@pytest.fixture
def corpus(tmp_path) -> Path:
    return big_corpus(tmp_path / "corpus.txt", 1)


# ----------------------------------------------------------------------------- one run per output


def test_second_run_on_the_same_output_fails_at_once_naming_the_holder(tmp_path):
    corpus = big_corpus(tmp_path / "corpus.txt", 3)
    out = tmp_path / "out"
    args = prepare_cmd(corpus, out, "data.dedup=false", "data.shard_documents=50")
    first = spawn(args)
    lock = tmp_path / "out.lock"
    try:
        # Freeze the first run while it holds the lock (its pid is in the lock file).
        kill_when(first, lambda: f"pid {first.pid} " in (lock.read_text() if lock.exists() else ""),
                  sig=signal.SIGSTOP)
        t0 = time.monotonic()
        second = run(args, timeout=60)
        elapsed = time.monotonic() - t0
        line = one_line_error(second)
        assert f"pid {first.pid} on host {socket.gethostname()}" in line and str(out) in line
        assert elapsed < 30  # at once: it does not wait for the holder
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=180)
    assert first.returncode == 0, err[-2000:]
    stats = assert_stats_match_rows(out)
    assert stats["shards"] >= 2 and stats["shards_reused"] == 0
    assert not lock.exists()  # released
    # Free again: a third run finds the output complete.
    third = run(args)
    assert third.returncode == 0 and json.loads(third.stdout)["already_prepared"] is True


def test_killed_run_resumes_and_a_shard_that_disagrees_with_its_files_is_redone(tmp_path):
    corpus = big_corpus(tmp_path / "corpus.txt", 4)
    out = tmp_path / "out"
    args = prepare_cmd(corpus, out, "data.dedup=false", "data.shard_documents=60")
    proc = spawn(args)
    shard = out / "shards" / "shard_{:05d}"
    kill_when(proc, lambda: (Path(str(shard).format(2)) / "shard.json").exists())
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((out / "zhbert_prepare.json").read_text())["complete"] is False
    # What two runs writing one output left behind: shard 0's Arrow file replaced by
    # another shard's while its shard.json still describes the old one.
    s0, s1 = (Path(str(shard).format(i)) for i in (0, 1))
    rows = [json.loads((s / "shard.json").read_text())["train_instances"] for s in (s0, s1)]
    assert rows[0] != rows[1]
    shutil.copy(s1 / "train.arrow", s0 / "train.arrow")

    r = run(args)
    assert r.returncode == 0, r.stderr[-2000:]
    stats = json.loads(r.stdout)
    assert stats["shards_reused"] >= 2 and stats["shards_reused"] < stats["shards"]  # 1.. reused, 0 redone
    assert_stats_match_rows(out)
    clean = tmp_path / "clean"
    assert run(prepare_cmd(corpus, clean, "data.dedup=false", "data.shard_documents=60")).returncode == 0
    assert_same_data(out, clean)
    assert not (out / "shards").exists()


# ----------------------------------------------------------------------------- dead workers


def test_killed_worker_stops_the_run_naming_the_shard_and_the_rerun_resumes(tmp_path):
    corpus = big_corpus(tmp_path / "corpus.txt", 3)
    out = tmp_path / "out"
    args = prepare_cmd(corpus, out, "--workers", "2", "data.dedup=false", "data.shard_documents=30")
    proc = spawn(args)

    def workers() -> list[int]:
        # Forked workers (Linux) run the main process's command line; the other child is
        # multiprocessing's resource tracker (`python -c "from multiprocessing.resource_tracker ..."`).
        found = []
        with contextlib.suppress(OSError):
            main = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        for pid in children(proc.pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes() == main:
                    found.append(pid)
        return found

    # Once both workers are preparing shards, SIGKILL one, as the out-of-memory killer would.
    busy = lambda: all((out / "shards" / f"shard_0000{i}").exists() for i in (0, 1)) and len(workers()) == 2
    wait_until(proc, busy)
    victim = min(workers())
    os.kill(victim, signal.SIGKILL)
    try:
        _, err = proc.communicate(timeout=90)  # it used to hang here forever
    except subprocess.TimeoutExpired:
        pytest.fail("prepare hung after a worker was killed")
    r = subprocess.CompletedProcess(args, proc.returncode, "", err)
    line = one_line_error(r)
    assert f"(pid {victim}) was killed by SIGKILL while preparing shard " in line
    assert "--workers" in line and "data.shard_chars" in line
    assert not any(p.exists() for p in (out / "shards").glob("shard_*/train.arrow")
                   if not (p.parent / "shard.json").exists())  # no half shard left

    again = run(args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["shards"] >= 5
    clean = tmp_path / "clean"
    assert run(prepare_cmd(corpus, clean, "data.dedup=false", "data.shard_documents=30")).returncode == 0
    assert_same_data(out, clean)


# ----------------------------------------------------------------------------- never lose an output


def test_overwrite_keeps_the_old_output_until_the_new_one_is_complete(tmp_path):
    corpus = big_corpus(tmp_path / "corpus.txt", 4)
    out = tmp_path / "out"
    old_args = prepare_cmd(corpus, out, "data.dedup=false", "data.shard_documents=60")
    assert run(old_args).returncode == 0
    before = snapshot(out)

    new_args = prepare_cmd(corpus, out, "--overwrite", "--seed", "99", "data.dedup=false", "data.shard_documents=60")
    proc = spawn(new_args)
    partial = tmp_path / "out.zhbert-partial"
    kill_when(proc, lambda: (partial / "shards" / "shard_00001" / "shard.json").exists())
    proc.wait(timeout=60)
    assert snapshot(out) == before  # killed mid-way: the old output is untouched and complete
    assert_stats_match_rows(out)

    r = run(new_args)  # resumes the replacement, then swaps it in
    assert r.returncode == 0, r.stderr[-2000:]
    stats = json.loads(r.stdout)
    assert stats["shards_reused"] >= 2
    assert json.loads((out / "prepare_config.json").read_text())["config"]["seed"] == 99
    assert siblings(out) == []  # no partial, old or lock left beside it
    clean = tmp_path / "clean"
    clean_args = prepare_cmd(corpus, clean, "--seed", "99", "data.dedup=false", "data.shard_documents=60")
    assert run(clean_args).returncode == 0
    assert_same_data(out, clean)


def test_input_edited_in_place_is_not_served_stale(tmp_path, corpus):
    cfg = DataConfig(input=[str(corpus)], dir=str(tmp_path / "out"), vocab=str(VOCAB), max_seq_length=32)
    prepare(cfg)
    text = corpus.read_text(encoding="utf-8")
    assert "北京" in text
    time.sleep(0.05)
    corpus.write_text(text.replace("北京", "上海", 1), encoding="utf-8")  # same byte size
    assert len(corpus.read_bytes()) == len(text.encode("utf-8"))
    with pytest.raises(DataError, match=r"differs in input_files \(corpus\.txt\)"):
        prepare(cfg)
    assert json.loads((tmp_path / "out" / "zhbert_prepare.json").read_text())["complete"] is True
    stats = prepare(DataConfig(**{**cfg.__dict__, "overwrite": True}))
    assert "already_prepared" not in stats
    # Touched but not changed: the content hash says it is the same input.
    os.utime(corpus, ns=(time.time_ns(), time.time_ns()))
    assert prepare(cfg)["already_prepared"] is True


def test_shards_left_by_a_kill_after_the_complete_marker_are_removed(tmp_path, corpus):
    cfg = DataConfig(input=[str(corpus)], dir=str(tmp_path / "out"), vocab=str(VOCAB), max_seq_length=32)
    prepare(cfg)
    out = tmp_path / "out"
    # The state a kill between the complete marker and the shard clean-up leaves.
    leftover = out / "shards" / "shard_00000"
    leftover.mkdir(parents=True)
    shutil.copy(out / "train" / "data-00000-of-00001.arrow", leftover / "train.arrow")
    (leftover / "shard.json").write_text("{}")
    assert prepare(cfg)["already_prepared"] is True
    assert not (out / "shards").exists()


# ----------------------------------------------------------------------------- long lines


RSS_PROBE = r"""
import json, resource, subprocess, sys
r = subprocess.run(json.loads(sys.argv[1]), capture_output=True, text=True)
print(json.dumps({"rc": r.returncode, "err": r.stderr[-2000:],
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def test_long_line_is_cut_into_pieces_in_bounded_memory(tmp_path):
    from zhbert.prep.tokenizer import ChineseTokenizer

    # The sample corpus' Chinese characters without any punctuation, as one 600 KB line.
    han = "".join(c for c in SAMPLE_BERT.read_text(encoding="utf-8") if "\u4e00" <= c <= "\u9fff")
    line = (han * (200_000 // len(han) + 1))[:200_000]
    long = tmp_path / "long.txt"
    long.write_text(line + "\n", encoding="utf-8")
    short = tmp_path / "short.txt"  # the same text in 100-character lines: the baseline
    short.write_text("".join(line[i:i + 100] + "\n" for i in range(0, len(line), 100)), encoding="utf-8")
    extra = ("--pair-mode", "none", "data.short_seq_prob=0", "data.shard_chars=50000", "data.dedup=false")

    def peak(path: Path, out: Path) -> int:
        cmd = prepare_cmd(path, out, *extra)
        r = subprocess.run([sys.executable, "-c", RSS_PROBE, json.dumps(cmd)], env=ENV, capture_output=True,
                           text=True, timeout=300)
        got = json.loads(r.stdout)
        assert got["rc"] == 0, got["err"]
        return got["maxrss_kb"] * 1024

    base = peak(short, tmp_path / "short_out")
    used = peak(long, tmp_path / "long_out")
    line_bytes = long.stat().st_size
    print(f"peak RSS: {base / 2**20:.1f} MiB in short lines, {used / 2**20:.1f} MiB as one line of "
          f"{line_bytes / 2**20:.2f} MiB")
    assert used < base + 20 * line_bytes, (used, base, line_bytes)  # it was ~100x the line

    stats = json.loads((tmp_path / "long_out" / "stats.json").read_text())
    assert stats["split_long_sentences"] == 1 and stats["shards"] >= 4
    # The pieces cover the text: every character is in exactly one instance ([CLS] X [SEP]).
    dd = datasets.load_from_disk(str(tmp_path / "long_out"))
    got = collections.Counter(i for split in dd for ids in dd[split]["input_ids"] for i in ids[1:-1])
    assert got == collections.Counter(ChineseTokenizer.from_vocab(VOCAB).encode(line)[0])
    assert max(len(ids) for ids in dd["train"]["input_ids"]) <= 32


# ----------------------------------------------------------------------------- corpus folders


def test_corpus_folder_compressed_binary_and_symlinked(tmp_path):
    docs = SAMPLE_BERT.read_text(encoding="utf-8").strip().split("\n\n")
    parts = ["\n\n".join(docs[i::4]) + "\n" for i in range(4)]
    folder = tmp_path / "corpora"
    folder.mkdir()
    (folder / "a.txt.gz").write_bytes(gzip.compress(parts[0].encode()))
    (folder / "b.txt.bz2").write_bytes(bz2.compress(parts[1].encode()))
    (folder / "c.txt.xz").write_bytes(lzma.compress(parts[2].encode()))
    elsewhere = tmp_path / "data" / "zhwiki"  # corpora/zhwiki -> data/zhwiki
    elsewhere.mkdir(parents=True)
    (elsewhere / "wiki_00").write_text(parts[3], encoding="utf-8")
    (folder / "zhwiki").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "up").symlink_to(folder, target_is_directory=True)  # a loop
    (folder / "archive.zip").write_bytes(b"PK\x03\x04" + bytes(200))
    (folder / "figure.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (folder / "model.bin").write_bytes(os.urandom(4096))
    out = tmp_path / "out"
    r = run(prepare_cmd(folder, out))
    assert r.returncode == 0, r.stderr[-2000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["files"] == 4 and stats["documents"] == len(docs)
    skipped = {Path(s["path"]).name: s["reason"] for s in stats["skipped_files"]}
    assert skipped == {"archive.zip": "not text: .zip extension", "figure.png": "not text: .png extension",
                       "model.bin": "not text: .bin extension",
                       "up": f"folder {folder.resolve()} already read (symbolic link loop or second link)"}
    assert stats["files_skipped"] == 4

    # Named explicitly, a file that is not text is an error naming it.
    line = one_line_error(run(prepare_cmd([folder / "a.txt.gz", folder / "figure.png"], tmp_path / "o2")))
    assert "figure.png: not a text corpus file" in line
    assert not (tmp_path / "o2").exists()


# ----------------------------------------------------------------------------- one-line errors


def test_bad_config_file_is_one_line_and_loses_nothing(tmp_path, corpus):
    out = tmp_path / "out"
    assert run(prepare_cmd(corpus, out)).returncode == 0
    before = snapshot(out)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("data:\n  input: [a, b\n  seed: 3\n", encoding="utf-8")
    not_utf8 = tmp_path / "gbk.yaml"
    not_utf8.write_bytes("data:\n  seed: 3  # 种子\n".encode("gbk"))
    for config, expect in ((tmp_path / "missing.yaml", "missing.yaml: config file not found"),
                           (bad_yaml, "bad.yaml:"), (not_utf8, "gbk.yaml: not UTF-8")):
        line = one_line_error(run(prepare_cmd(corpus, out, "--config", str(config))))
        assert expect in line
    assert snapshot(out) == before


def test_disk_full_names_the_path_and_keeps_the_old_output(tmp_path, corpus):
    with tmpfs(tmp_path / "disk", "size=2m") as disk:
        out = disk / "out"
        assert run(prepare_cmd(corpus, out)).returncode == 0
        before = snapshot(out)
        st = os.statvfs(disk)
        (disk / "filler").write_bytes(bytes(st.f_bavail * st.f_frsize - 48 * 1024))  # leave 48 KB
        line = one_line_error(run(prepare_cmd(corpus, out, "--overwrite", "--seed", "5")))
        assert "no space left on device: " in line and str(disk) in line
        assert snapshot(out) == before and siblings(out) == []  # old output intact, temp files gone
        assert not [p for p in disk.rglob("*") if ".tmp" in p.name]
        (disk / "filler").unlink()  # with space again, the same command succeeds
        r = run(prepare_cmd(corpus, out, "--overwrite", "--seed", "5"))
        assert r.returncode == 0, r.stderr[-2000:]
        assert_stats_match_rows(out)


def test_read_only_output_folder_is_one_line(tmp_path, corpus):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        line = one_line_error(run(prepare_cmd(corpus, ro / "out")))
        assert "read-only file system" in line and str(ro / "out") in line
    # A writable output folder in a read-only parent: the lock file goes inside it.
    with tmpfs(tmp_path / "parent", "size=1m") as parent:
        with tmpfs(parent / "out", "size=4m") as out:
            subprocess.run(["mount", "-o", "remount,ro", str(parent)], check=True)
            r = run(prepare_cmd(corpus, out))
            assert r.returncode == 0, r.stderr[-2000:]
            assert_stats_match_rows(out)
            assert not (out / ".zhbert.lock").exists()


def test_all_gbk_input_says_every_line_failed_utf8(tmp_path):
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes(SAMPLE_BERT.read_text(encoding="utf-8")[:3000].encode("gbk", errors="replace"))
    line = one_line_error(run(prepare_cmd(gbk, tmp_path / "out")))
    assert f"every line of {gbk} failed UTF-8 decoding" in line
    assert not (tmp_path / "out").exists()
