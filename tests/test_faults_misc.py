"""Issue #10 ("never silently wrong, never lose work"): start-up caches, CLUE inputs, messages.

* Start-up tables (punctuation code points, jieba's prefix dict and tag codes) live in a
  private per-user cache, never in the shared temp dir; a planted, corrupted or crafted
  table is a miss and results equal a run without any cache.
* ``zhbert eval clue`` refuses a dev file with nothing to score and accepts a UTF-8 BOM.
* A vocab with a BOM loads; the offline URL message names what the user typed; ``zhbert
  download --timeout`` bounds a stalled server.

Real processes and files throughout: each cache case runs a fresh interpreter (the tables
are loaded once per process), CLUE and download go through ``python -m zhbert.cli``.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_clue import FIX, _tiny_model  # tests/ is on sys.path (pytest rootdir conftest)

TABLES = ("punct", "jieba_prefix", "jieba_codes")

# Tokenize and segment a few texts; print everything as JSON. "banana" is one vocab token:
# it splits if a crafted punctuation table made "a" a stand-alone character.
PROBE = r"""
import json, sys
from zhbert.prep.segment import Segmenter
from zhbert.prep.tokenizer import ChineseTokenizer

tok = ChineseTokenizer.from_vocab(sys.argv[1])
seg = Segmenter()
texts = ["我爱北京天安门，小明在清华大学读书。", "我用iPhone13拍了banana的照片！", "今天天气晴朗，我们去颐和园划船。"]
print(json.dumps({"ids": [tok.encode(t) for t in texts], "cut": [seg.cut_codes(t) for t in texts]},
                 ensure_ascii=False))
"""


def _vocab(path: Path) -> Path:
    from zhbert.prep.tokenizer import special_layout

    chars = sorted(set("我爱北京天安门小明在清华大学读书用拍了的照片今天气晴朗们去颐和园划船，。！0123456789"
                       "abcdefghijklmnopqrstuvwxyz"))
    path.write_text("\n".join(special_layout() + chars + ["banana", "iphone", "##13"]) + "\n", encoding="utf-8")
    return path


def _probe(tmp_path: Path, env_extra: dict) -> tuple[dict, Path]:
    """Run PROBE in a fresh interpreter with an empty TMPDIR; returns (output, that TMPDIR)."""
    tmpdir = tmp_path / f"tmpdir{len(list(tmp_path.glob('tmpdir*')))}"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ZHBERT_CACHE", "XDG_CACHE_HOME")}
    env.update({"TMPDIR": str(tmpdir), "HOME": str(tmp_path / "home"), **env_extra})
    vocab = tmp_path / "vocab.txt"
    if not vocab.exists():
        _vocab(vocab)
    r = subprocess.run([sys.executable, "-c", PROBE, str(vocab)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout), tmpdir


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Output with the cache unusable (ZHBERT_CACHE is a file): every table computed afresh."""
    root = tmp_path_factory.mktemp("nocache")
    (root / "not-a-dir").write_text("")
    return _probe(root, {"ZHBERT_CACHE": str(root / "not-a-dir")})[0]


@pytest.fixture(scope="module")
def warm(tmp_path_factory, reference):
    """A cache filled by one run: {table name: (path, bytes)}."""
    root = tmp_path_factory.mktemp("warm")
    out, _ = _probe(root, {"ZHBERT_CACHE": str(root / "zc")})
    assert out == reference
    files = {}
    for name in TABLES:
        (path,) = (root / "zc" / "tables").glob(f"{name}.*.json")
        files[name] = (path, path.read_bytes())
    return files


def test_tables_go_to_a_private_per_user_dir_and_never_to_tmp(tmp_path, reference, monkeypatch):
    xdg = tmp_path / "xdg"
    out, tmpdir = _probe(tmp_path, {"XDG_CACHE_HOME": str(xdg)})
    assert out == reference
    assert not any(tmpdir.iterdir())  # nothing written to the temp dir (jieba's cache neither)
    assert not (tmp_path / "home" / ".cache").exists()  # $XDG_CACHE_HOME wins over ~/.cache
    tables = xdg / "zhbert" / "tables"
    for d in (xdg, xdg / "zhbert", tables):  # every directory we created is 0700
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    names = sorted(p.name.split(".")[0] for p in tables.iterdir())
    assert names == sorted(TABLES)  # no temp files left behind
    for p in tables.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        head, body = p.read_bytes().split(b"\n", 1)
        header = json.loads(head)  # JSON header + JSON body, no marshal/pickle
        assert header["sha256"] == hashlib.sha256(body).hexdigest() and json.loads(body)
    # a second run reads them (same bytes, same results)
    before = {p: p.read_bytes() for p in tables.iterdir()}
    assert _probe(tmp_path, {"XDG_CACHE_HOME": str(xdg)})[0] == reference
    assert {p: p.read_bytes() for p in tables.iterdir()} == before
    # ~/.cache/zhbert without XDG_CACHE_HOME; the hub's default follows the same rule
    assert _probe(tmp_path, {})[0] == reference
    assert stat.S_IMODE((tmp_path / "home" / ".cache" / "zhbert" / "tables").stat().st_mode) == 0o700
    from zhbert.hub import default_cache_dir

    monkeypatch.delenv("ZHBERT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    assert default_cache_dir() == xdg / "zhbert"
    monkeypatch.setenv("ZHBERT_CACHE", str(tmp_path / "zc"))
    assert default_cache_dir() == tmp_path / "zc"


def test_tables_planted_in_the_temp_dir_are_not_read(tmp_path, reference):
    """What another local user could do before: put marshal/JSON tables under /tmp with the
    names zhbert (and jieba) used to read. They must not change anything now."""
    import string
    import unicodedata

    import jieba

    from zhbert.prep.segment import _TAG_CODE

    tmpdir = tmp_path / "planted"
    tmpdir.mkdir()
    dict_file = Path(jieba.__file__).parent / "dict.txt"
    st = dict_file.stat()
    key = f"{dict_file}|{st.st_size}|{st.st_mtime_ns}|{sorted(_TAG_CODE.items())}"
    codes = tmpdir / f"zhbert_jieba_codes.{hashlib.sha1(key.encode()).hexdigest()[:16]}.cache"
    codes.write_bytes(marshal.dumps(("北京\n天安门\n小明", "xxx")))
    (tmpdir / "jieba.cache").write_bytes(marshal.dumps(({"北": 1, "京": 1}, 2)))
    pkey = hashlib.sha1(f"{unicodedata.unidata_version}|{string.punctuation}".encode()).hexdigest()[:16]
    (tmpdir / f"zhbert_punct.{pkey}.json").write_text(json.dumps([ord("a")]))
    planted = {p: p.read_bytes() for p in tmpdir.iterdir()}
    env = {k: v for k, v in os.environ.items() if k != "ZHBERT_CACHE"}
    env.update({"TMPDIR": str(tmpdir), "ZHBERT_CACHE": str(tmp_path / "zc")})
    r = subprocess.run([sys.executable, "-c", PROBE, str(_vocab(tmp_path / "vocab.txt"))], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout) == reference
    assert {p: p.read_bytes() for p in tmpdir.iterdir()} == planted  # untouched, nothing added


def _crafted(name: str, header: dict) -> bytes:
    """A well-formed table (right header, right sha256) whose content is wrong but plausible:
    used only if the file/dir ownership checks fail to keep it out."""
    body = {"punct": list(range(33, 48)) + [ord("a")],  # "a" as punctuation
            "jieba_prefix": {"freq": {"北": 1, "京": 1}, "total": 2},
            "jieba_codes": {"words": "北京\n小明", "codes": "xx"}}[name]
    raw = json.dumps(body, ensure_ascii=False).encode()
    return json.dumps({**header, "sha256": hashlib.sha256(raw).hexdigest()}).encode() + b"\n" + raw


def _bad_structure(name: str, header: dict) -> bytes:
    """Right header and sha256, body of the wrong shape or failing the content check."""
    body = {"punct": [ord("a"), ord("!")],  # not ascending, and "a" is not punctuation
            "jieba_prefix": {"freq": {"北": "1"}, "total": 1},
            "jieba_codes": {"words": "北京\n小明", "codes": "E"}}[name]
    raw = json.dumps(body, ensure_ascii=False).encode()
    return json.dumps({**header, "sha256": hashlib.sha256(raw).hexdigest()}).encode() + b"\n" + raw


def _edit_body(good: bytes) -> bytes:
    """One byte of the body changed (the header, with the old sha256, kept)."""
    head, body = good.split(b"\n", 1)
    i = body.index(b"1")
    return head + b"\n" + body[:i] + b"2" + body[i + 1:]


PLANTS = {
    "garbage": lambda name, good, header: os.urandom(4096),
    "truncated": lambda name, good, header: good[: len(good) // 2],
    "empty": lambda name, good, header: b"",
    # what the old cache held (a marshal payload), and a marshalled code object
    "marshal": lambda name, good, header: marshal.dumps(("北京\n小明", "EN")) if name == "jieba_codes"
    else marshal.dumps(compile("raise SystemExit(99)", "planted", "exec")),
    "edited_body": lambda name, good, header: _edit_body(good),
    "other_key": lambda name, good, header: _crafted(name, {**header, "key": "0" * 64}),
    "wrong_structure": lambda name, good, header: _bad_structure(name, header),
}


@pytest.mark.parametrize("kind", sorted(PLANTS))
def test_bad_table_is_a_miss_and_is_rewritten(tmp_path, reference, warm, kind):
    cache = tmp_path / "zc"
    (cache / "tables").mkdir(parents=True, mode=0o700)
    for name, (path, good) in warm.items():
        header = json.loads(good.split(b"\n", 1)[0])
        (cache / "tables" / path.name).write_bytes(PLANTS[kind](name, good, {k: v for k, v in header.items()
                                                                             if k != "sha256"}))
    out, tmpdir = _probe(tmp_path, {"ZHBERT_CACHE": str(cache)})
    assert out == reference
    assert not any(tmpdir.iterdir())
    for name, (path, good) in warm.items():  # rebuilt and replaced atomically (no temp left)
        assert (cache / "tables" / path.name).read_bytes() == good, name
    assert sorted(p.name for p in (cache / "tables").iterdir()) == sorted(p.name for p, _ in warm.values())


@pytest.mark.parametrize("where", ["file_writable_by_others", "dir_writable_by_others", "symlink",
                                   "file_owned_by_another_user"])
def test_planted_well_formed_table_is_not_trusted(tmp_path, reference, warm, where):
    """A table with a valid header, sha256 and structure but wrong content, placed where
    another user could have put it: ignored, results as without a cache."""
    if where == "file_owned_by_another_user" and os.getuid() != 0:
        pytest.skip("needs root to chown a file to another user")
    cache = tmp_path / "zc"
    tables = cache / "tables"
    tables.mkdir(parents=True, mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name, (path, good) in warm.items():
        header = {k: v for k, v in json.loads(good.split(b"\n", 1)[0]).items() if k != "sha256"}
        target = tables / path.name
        if where == "symlink":
            (elsewhere / path.name).write_bytes(_crafted(name, header))
            target.symlink_to(elsewhere / path.name)
        else:
            target.write_bytes(_crafted(name, header))
        if where == "file_writable_by_others":
            target.chmod(0o666)
        elif where == "file_owned_by_another_user":
            os.chown(target, 65534, 65534)
    if where == "dir_writable_by_others":
        tables.chmod(0o777)
    out, _ = _probe(tmp_path, {"ZHBERT_CACHE": str(cache)})
    assert out == reference
    if where == "dir_writable_by_others":  # nothing read from it, nothing written to it
        assert all((tables / p.name).read_bytes() != good for p, good in warm.values())
    else:  # our own private dir: the planted file is replaced by a good one
        for path, good in warm.values():
            assert not (tables / path.name).is_symlink() and (tables / path.name).read_bytes() == good


def test_cache_module_round_trip_and_misses(tmp_path, monkeypatch):
    from zhbert import cache

    monkeypatch.setenv("ZHBERT_CACHE", str(tmp_path / "c"))
    key = cache.content_key("t/1", b"data")
    assert cache.content_key("ab", "c") != cache.content_key("a", "bc")
    assert cache.load("t", key, lambda v: True) is None
    path = cache.store("t", key, {"x": [1, 2]})
    assert path.parent == tmp_path / "c" / "tables"
    assert cache.load("t", key, lambda v: True) == {"x": [1, 2]}
    assert cache.load("t", key, lambda v: False) is None  # caller's structure check
    assert cache.load("u", key, lambda v: True) is None  # another table's name
    path.write_bytes(b"[" * 100_000 + b"\n" + b"]" * 100_000)  # deep nesting: a miss, no crash
    assert cache.load("t", key, lambda v: True) is None
    monkeypatch.setenv("ZHBERT_CACHE", str(path))  # not a directory: caching off, no error
    assert cache.store("t", key, 1) is None and cache.load("t", key, lambda v: True) is None


# ================================================================================== CLUE
def _cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "zhbert.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _eval_args(model: Path, data: Path, out: Path, tasks: str) -> list[str]:
    return ["eval", "clue", "--model", str(model), "--tasks", tasks, "--data-dir", str(data), "--output", str(out),
            "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--wandb-mode", "disabled"]


def test_clue_empty_dev_file_is_refused(tiny_model, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(FIX / "tnews_public", data / "tnews_public")
    shutil.copytree(FIX / "ocnli_public", data / "ocnli_public")
    dev = data / "ocnli_public" / "dev.json"
    dev.write_text("\n\n")  # blank lines only
    r = _cli(_eval_args(tiny_model, data, tmp_path / "out", "tnews,ocnli"))
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(dev) in lines[0] and "no labelled dev examples" in lines[0]
    assert "Traceback" not in r.stderr
    # refused before anything was trained or scored: no results, no submission, no tnews run
    assert not (tmp_path / "out" / "results.json").exists() and not (tmp_path / "out" / "tnews").exists()
    # a dev file whose rows all lack a gold label ("-") is refused too, also with --tasks all
    rows = [json.loads(x) for x in (FIX / "ocnli_public" / "dev.json").read_text(encoding="utf-8").splitlines()]
    dev.write_text("".join(json.dumps({**x, "label": "-"}, ensure_ascii=False) + "\n" for x in rows),
                   encoding="utf-8")
    r = _cli(_eval_args(tiny_model, data, tmp_path / "out2", "all"))
    assert r.returncode == 2 and str(dev) in r.stderr and f"all {len(rows)} rows are labelled '-'" in r.stderr


def test_clue_files_with_a_bom_are_read(tiny_model, tmp_path):
    data = tmp_path / "data"
    for f in (FIX / "tnews_public").iterdir():
        (data / "tnews_public").mkdir(parents=True, exist_ok=True)
        (data / "tnews_public" / f.name).write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    r = _cli(_eval_args(tiny_model, data, tmp_path / "out", "tnews"))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))["tasks"]["tnews"]
    assert (res["train_size"], res["dev_size"], res["test_size"]) == (8, 4, 2)  # as without the BOM
    from zhbert.clue.data import load_task
    from zhbert.clue.tasks import TASKS

    a, b = load_task(data, TASKS["tnews"]), load_task(FIX, TASKS["tnews"])
    assert a.train.examples[0].text_a == b.train.examples[0].text_a  # no "\ufeff" glued on


# ============================================================================= messages
def test_vocab_with_bom_loads(tmp_path):
    from zhbert.errors import DataError
    from zhbert.prep.tokenizer import ChineseTokenizer

    plain = _vocab(tmp_path / "vocab.txt")
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    a, b = ChineseTokenizer.from_vocab(bom), ChineseTokenizer.from_vocab(plain)
    assert a.tokens == b.tokens and a.tokens[0] == "[PAD]" and a.pad_id == 0
    assert a.encode("我用iPhone13拍了banana") == b.encode("我用iPhone13拍了banana")
    # a vocab really lacking [PAD] still says so
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes().replace(b"[PAD]\n", b"[pad]\n"))
    with pytest.raises(DataError, match=r"lacks the special token\(s\) \[PAD\]"):
        ChineseTokenizer.from_vocab(bad)


def test_offline_url_message_names_the_url_not_the_cache_key(tmp_path, monkeypatch, capsys):
    from zhbert.cli import main
    from zhbert.hub.download import _url_key

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ZHBERT_REGISTRY", raising=False)
    url = "http://127.0.0.1:9/zhbert-tiny.tar.gz"
    assert main(["download", url, "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"HF_HUB_OFFLINE=0 zhbert download {url}`" in err and "--cache-dir" in err
    assert _url_key(url) not in err  # the internal key is not something to type


class _StallingServer:
    """Accepts connections and then sends nothing (``body=False``), or sends headers and a
    few bytes of a longer body and then nothing (``body=True``)."""

    def __init__(self, body: bool):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.body, self.conns, self.stop = body, [], threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            if self.body:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/zhbert-tiny.tar.gz"

    def close(self):
        self.stop.set()
        for c in self.conns:
            c.close()
        self.sock.close()


def test_download_timeout_flag(tmp_path):
    cache = tmp_path / "c"
    srv = _StallingServer(body=False)
    url = srv.url
    try:
        t0 = time.monotonic()
        r = _cli(["download", url, "--timeout", "1", "--cache-dir", str(cache)], timeout=60)
        took = time.monotonic() - t0
    finally:
        srv.close()
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no response within 1 s" in lines[0] and url in lines[0]
    assert 1 <= took < 20  # the default (60 s) would have run into the subprocess timeout

    srv = _StallingServer(body=True)  # stalls mid-body: each attempt gives up after 1 s
    try:
        r = _cli(["download", srv.url, "--timeout", "1", "--cache-dir", str(cache)], timeout=60)
    finally:
        srv.close()
    assert r.returncode == 2 and "no data for 1 s after 10 bytes" in r.stderr.strip().splitlines()[-1]
    (part,) = (cache / "downloads").glob("*.part")  # what did arrive is kept for the resume
    assert part.read_bytes() == b"x" * 10
    assert "Traceback" not in r.stderr

    r = _cli(["download", url, "--timeout", "0"])
    assert r.returncode == 2 and "--timeout 0: expected a positive number of seconds" in r.stderr
