"""Registry, downloads and safe extraction against a local HTTP server (no internet).

The served bundle is made by `zhbert release` from a tiny random model (see test_release.py).
The server (http.server in a thread) supports Range requests, can cut the connection half way
through a file, can ignore Range, and answers 404 for anything it does not have.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml

from test_release import make_checkpoint  # tests/ is on sys.path (pytest rootdir conftest)
from zhbert.errors import CheckpointError, ConfigError, ZhbertError

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """A non-tensor object inside a .bin: torch.load(weights_only=True) must refuse it."""


# ------------------------------------------------------------------------- the test server
class Server:
    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut_next: dict[str, int] = {}  # path -> bytes to send before dropping the connection
        self.ignore_range = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                server.requests.append((path, rng))
                f = server.root / path.lstrip("/")
                if not f.is_file():
                    self.send_error(404, "Not Found")
                    return
                data = f.read_bytes()
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                cut = server.cut_next.pop(path, None)
                self.wfile.write(body if cut is None else body[:cut])
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A `zhbert release --tar` bundle of a tiny model, and the step dir it came from."""
    from zhbert.release import build_release

    root = tmp_path_factory.mktemp("bundle")
    step_dir = make_checkpoint(root)
    rel = build_release(step_dir, root / "dist" / "zhbert-tiny", tar=True)
    return rel, step_dir


@pytest.fixture
def server(tmp_path, bundle):
    rel, _ = bundle
    www = tmp_path / "www"
    www.mkdir()
    shutil.copy2(rel.tarball, www / "zhbert-tiny.tar.gz")
    srv = Server(www)
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for var in ("ZHBERT_REGISTRY", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ZHBERT_CACHE", str(tmp_path / "zcache"))


def write_registry(path: Path, entries: dict) -> Path:
    path.write_text(yaml.safe_dump({"checkpoints": entries}))
    return path


def tar_entry(rel, url: str, **kw) -> dict:
    return {"url": url, "sha256": rel.sha256, "size": rel.size, "format": "tar.gz", **kw}


def cache_is_empty(cache: Path) -> bool:
    """No placed model, no partial download, no leftover temp dir (lock files are fine)."""
    models = list((cache / "models").glob("*")) if (cache / "models").exists() else []
    parts = list((cache / "downloads").glob("*.part")) if (cache / "downloads").exists() else []
    tmps = list((cache / "tmp").glob("*")) if (cache / "tmp").exists() else []
    return not models and not parts and not tmps


def assert_same_model(model_dir: Path, step_dir: Path):
    from safetensors.torch import load_file

    a = load_file(str(model_dir / "model.safetensors"))
    b = load_file(str(step_dir / "hf" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (model_dir / "vocab.txt").read_bytes() == (step_dir / "hf" / "vocab.txt").read_bytes()


# ================================================================================ registry
def test_builtin_registry_lists_known_checkpoints():
    from zhbert.hub.registry import load_registry

    reg = load_registry(env=False)
    hub_ids = {e.hub_id for e in reg.values()}
    for hid in ("google-bert/bert-base-chinese", "hfl/chinese-bert-wwm", "hfl/chinese-bert-wwm-ext",
                "hfl/chinese-roberta-wwm-ext", "hfl/chinese-roberta-wwm-ext-large", "hfl/chinese-macbert-base",
                "hfl/chinese-macbert-large", "hfl/rbt3", "hfl/rbtl3", "uer/chinese_roberta_L-2_H-128",
                "uer/chinese_roberta_L-4_H-256", "uer/chinese_roberta_L-4_H-512",
                "uer/chinese_roberta_L-8_H-512", "uer/chinese_roberta_L-12_H-768"):
        assert hid in hub_ids
    assert reg["bert-base-chinese"].hub_id == "google-bert/bert-base-chinese"
    assert reg["uer-roberta-tiny"].hub_id == "uer/chinese_roberta_L-2_H-128"
    assert reg["rbt3"].kind == "hub" and reg["rbt3"].description


def test_registry_errors_name_file_and_entry(tmp_path):
    from zhbert.hub.registry import load_registry

    bad = write_registry(tmp_path / "bad.yaml", {"mine": {"url": "https://x.org/m.tar.gz", "sha": "ab"}})
    with pytest.raises(ConfigError, match=r"bad\.yaml: checkpoints\.mine: unknown key 'sha'"):
        load_registry([bad])
    none = write_registry(tmp_path / "none.yaml", {"empty": {"description": "no source"}})
    with pytest.raises(ConfigError, match=r"none\.yaml: checkpoints\.empty needs exactly one of hub_id or url"):
        load_registry([none])
    fmt = write_registry(tmp_path / "fmt.yaml", {"m": {"url": "https://x.org/model"}})
    with pytest.raises(ConfigError, match=r"fmt\.yaml: checkpoints\.m\.format must be one of"):
        load_registry([fmt])
    sha = write_registry(tmp_path / "sha.yaml", {"m": {"url": "https://x.org/m.zip", "sha256": "xyz"}})
    with pytest.raises(ConfigError, match="sha256 must be 64 hex digits"):
        load_registry([sha])
    with pytest.raises(ConfigError, match="registry file not found"):
        load_registry([tmp_path / "missing.yaml"])


def test_later_registry_files_override(tmp_path, monkeypatch):
    from zhbert.hub.registry import load_registry

    a = write_registry(tmp_path / "a.yaml", {"rbt3": {"url": "https://a.org/rbt3.zip"}, "x": {"hub_id": "o/x"}})
    b = write_registry(tmp_path / "b.yaml", {"x": {"hub_id": "o/y"}})
    monkeypatch.setenv("ZHBERT_REGISTRY", os.pathsep.join([str(a), str(b)]))
    reg = load_registry()
    assert reg["rbt3"].url == "https://a.org/rbt3.zip" and reg["rbt3"].format == "zip"  # env over builtin
    assert reg["x"].hub_id == "o/y" and reg["x"].source == str(b)
    c = write_registry(tmp_path / "c.yaml", {"x": {"hub_id": "o/z"}})
    assert load_registry([c])["x"].hub_id == "o/z"  # --registry over the environment


# =============================================================================== downloads
def test_download_by_url_and_cache_hit(server, bundle, tmp_path):
    from zhbert.hub import MARKER, download

    rel, step_dir = bundle
    url = server.url("zhbert-tiny.tar.gz")
    path = download(url, cache_dir=tmp_path / "c")
    assert path.parent == tmp_path / "c" / "models"
    assert_same_model(path, step_dir)  # the single top-level dir of the bundle is the model dir
    assert json.loads((path / MARKER).read_text())["url"] == url
    assert cache_is_empty_except(path, tmp_path / "c")
    n = len(server.requests)
    assert download(url, cache_dir=tmp_path / "c") == path and len(server.requests) == n  # no request


def cache_is_empty_except(path: Path, cache: Path) -> bool:
    return [p for p in (cache / "models").iterdir()] == [path] and not list((cache / "downloads").glob("*.part"))


def test_download_by_name_via_registry_flag_and_env(server, bundle, tmp_path, monkeypatch, capsys):
    from zhbert.cli import main
    from zhbert.hub import resolve_model

    rel, step_dir = bundle
    reg = write_registry(tmp_path / "mine.yaml", {"zh-tiny": tar_entry(rel, server.url("zhbert-tiny.tar.gz"))})
    assert main(["download", "zh-tiny", "--registry", str(reg), "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # the directory and nothing else on stdout
    path = Path(out.strip())
    assert_same_model(path, step_dir)

    monkeypatch.setenv("ZHBERT_REGISTRY", str(reg))
    monkeypatch.setenv("ZHBERT_CACHE", str(tmp_path / "envcache"))
    got = resolve_model("zh-tiny")
    assert got.parent == tmp_path / "envcache" / "models"
    assert_same_model(got, step_dir)

    assert main(["download", "--list"]) == 0
    listing = capsys.readouterr().out
    line = next(ln for ln in listing.splitlines() if ln.startswith("zh-tiny"))
    assert "url" in line and "✓" in line and str(got) in line
    assert "KB" in line  # size from the registry
    assert "✓" not in next(ln for ln in listing.splitlines() if ln.startswith("rbt3"))


def test_connection_cut_is_resumed_within_one_call(server, bundle, tmp_path):
    from zhbert.hub import download, sha256_file

    rel, step_dir = bundle
    reg = write_registry(tmp_path / "r.yaml", {"zh-tiny": tar_entry(rel, server.url("zhbert-tiny.tar.gz"))})
    half = rel.size // 2
    server.cut_next["/zhbert-tiny.tar.gz"] = half
    path = download("zh-tiny", cache_dir=tmp_path / "c", registry_files=[reg])
    assert server.requests == [("/zhbert-tiny.tar.gz", None), ("/zhbert-tiny.tar.gz", f"bytes={half}-")]
    assert_same_model(path, step_dir)
    assert sha256_file(rel.tarball) == rel.sha256


def test_connection_cut_then_next_run_resumes(server, bundle, tmp_path):
    from zhbert.hub import download

    rel, step_dir = bundle
    reg = write_registry(tmp_path / "r.yaml", {"zh-tiny": tar_entry(rel, server.url("zhbert-tiny.tar.gz"))})
    server.cut_next["/zhbert-tiny.tar.gz"] = 40_000
    with pytest.raises(ZhbertError, match="interrupted.*run the same command again to resume"):
        download("zh-tiny", cache_dir=tmp_path / "c", registry_files=[reg], retries=1)
    parts = list((tmp_path / "c" / "downloads").glob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == 40_000
    assert not list((tmp_path / "c" / "models").iterdir())  # nothing placed
    path = download("zh-tiny", cache_dir=tmp_path / "c", registry_files=[reg])
    assert server.requests[-1] == ("/zhbert-tiny.tar.gz", "bytes=40000-")
    assert_same_model(path, step_dir)  # sha256 of the joined file was verified on the way
    assert not list((tmp_path / "c" / "downloads").glob("*.part"))


def test_server_ignoring_range_restarts_cleanly(server, bundle, tmp_path):
    from zhbert.hub import download

    rel, step_dir = bundle
    reg = write_registry(tmp_path / "r.yaml", {"zh-tiny": tar_entry(rel, server.url("zhbert-tiny.tar.gz"))})
    server.cut_next["/zhbert-tiny.tar.gz"] = 30_000
    server.ignore_range = True
    path = download("zh-tiny", cache_dir=tmp_path / "c", registry_files=[reg])
    assert server.requests[-1] == ("/zhbert-tiny.tar.gz", "bytes=30000-")  # asked, got a 200
    assert_same_model(path, step_dir)


def test_sha256_mismatch_leaves_nothing(server, bundle, tmp_path):
    from zhbert.hub import download

    rel, _ = bundle
    reg = write_registry(tmp_path / "r.yaml", {"zh-bad": tar_entry(rel, server.url("zhbert-tiny.tar.gz"),
                                                                   sha256="0" * 64)})
    with pytest.raises(ZhbertError, match=r"sha256 mismatch: expected 0{64}, got " + rel.sha256):
        download("zh-bad", cache_dir=tmp_path / "c", registry_files=[reg])
    assert cache_is_empty(tmp_path / "c")


def test_http_404_names_url_and_status(server, tmp_path, capsys):
    from zhbert.cli import main
    from zhbert.hub import download

    url = server.url("missing.tar.gz")
    with pytest.raises(ZhbertError, match=rf"{url}: HTTP 404"):
        download(url, cache_dir=tmp_path / "c")
    assert cache_is_empty(tmp_path / "c")
    assert main(["download", url, "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "HTTP 404" in err and "Traceback" not in err


def test_files_format_entry(server, bundle, tmp_path):
    """A release directory served file by file (`zhbert release` without --tar)."""
    from zhbert.hub import download, load_registry

    rel, step_dir = bundle
    shutil.copytree(rel.directory, server.root / "plain")
    entry = yaml.safe_load((rel.directory / "registry_entry.yaml").read_text())
    assert entry["checkpoints"]["zhbert-tiny"]["format"] == "tar.gz"
    files = {line.split("  ")[1]: line.split("  ")[0]
             for line in (rel.directory / "SHA256SUMS").read_text().splitlines()}
    reg = write_registry(tmp_path / "r.yaml", {"zh-files": {"url": server.url("plain/"), "format": "files",
                                                            "files": files}})
    assert load_registry([reg])["zh-files"].files == files
    path = download("zh-files", cache_dir=tmp_path / "c", registry_files=[reg])
    assert_same_model(path, step_dir)


# ============================================================================ safe extraction
def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _device(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info, None


@pytest.mark.parametrize("members, why", [
    ([_file("m/config.json"), _file("../evil.txt")], "contains '..'"),
    ([_file("m/config.json"), _file("m/../../evil.txt")], "contains '..'"),
    ([_file("m/config.json"), _file("/tmp/zhbert-evil.txt")], "absolute path"),
    ([_file("m/config.json"), _link("m/vocab.txt", "../../../etc/passwd")], "points outside the bundle"),
    ([_file("m/config.json"), _link("m/abs", "/etc/passwd")], "points outside the bundle"),
    ([_file("m/config.json"), _link("m/hard", "../outside", tarfile.LNKTYPE)], "points outside the bundle"),
    ([_link("m/here", "."), _file("m/here/x")], "lies below a symlink"),
    ([_file("m/config.json"), _device("m/null")], "device file"),
])
def test_unsafe_tar_members_refuse_the_whole_archive(tmp_path, members, why):
    from zhbert.hub import extract_archive

    archive = _tar(tmp_path / "bad.tar.gz", members)
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match=f"refusing archive: .*{why}"):
        extract_archive(archive, out, "tar.gz")
    assert not any(out.rglob("*"))  # nothing extracted, not even the harmless members
    assert not (tmp_path / "evil.txt").exists()


def test_symlink_inside_bundle_is_fine(tmp_path):
    from zhbert.hub import extract_archive

    archive = _tar(tmp_path / "ok.tar.gz", [_file("m/a.txt", b"hello"), _link("m/b.txt", "a.txt")])
    extract_archive(archive, tmp_path / "out", "tar.gz")
    assert (tmp_path / "out" / "m" / "b.txt").read_text() == "hello"


def test_unsafe_zip_is_refused(tmp_path):
    from zhbert.hub import extract_archive

    for name in ("../evil.txt", "/abs.txt", "a/../../evil.txt"):
        zpath = tmp_path / "bad.zip"
        with zipfile.ZipFile(zpath, "w") as z:
            z.writestr("m/config.json", "{}")
            z.writestr(zipfile.ZipInfo(name), "x")
        with pytest.raises(CheckpointError, match="refusing archive"):
            extract_archive(zpath, tmp_path / "zout", "zip")
        assert not any((tmp_path / "zout").rglob("*"))
    link = zipfile.ZipInfo("m/link")
    link.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr(link, "../../etc/passwd")
    with pytest.raises(CheckpointError, match="points outside the bundle"):
        extract_archive(zpath, tmp_path / "zout", "zip")


def test_malicious_bundle_download_leaves_nothing(server, tmp_path):
    from zhbert.hub import download

    _tar(server.root / "evil.tar.gz", [_file("m/config.json", b"{}"), _file("../../evil.txt")])
    with pytest.raises(CheckpointError, match="refusing archive"):
        download(server.url("evil.tar.gz"), cache_dir=tmp_path / "c")
    assert cache_is_empty(tmp_path / "c")


def test_zip_bundle_and_non_checkpoint_bundle(server, bundle, tmp_path):
    from zhbert.hub import download

    rel, step_dir = bundle
    with zipfile.ZipFile(server.root / "m.zip", "w") as z:  # files at the top level, no folder
        for f in sorted(rel.directory.iterdir()):
            z.write(f, arcname=f.name)
    assert_same_model(download(server.url("m.zip"), cache_dir=tmp_path / "c"), step_dir)
    _tar(server.root / "junk.tar.gz", [_file("notes/readme.txt")])
    with pytest.raises(CheckpointError, match="the bundle is not a checkpoint"):
        download(server.url("junk.tar.gz"), cache_dir=tmp_path / "c2")
    assert cache_is_empty(tmp_path / "c2")


# ================================================================================ the hub
def test_offline_with_empty_cache_is_a_clear_message(tmp_path, monkeypatch, capsys):
    from zhbert.cli import main
    from zhbert.hub import resolve_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-empty"))
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE=1.*zhbert download rbt3"):
        resolve_model("rbt3")
    assert main(["download", "hfl/chinese-macbert-base"]) == 2
    err = capsys.readouterr().err
    assert "not in the Hugging Face cache" in err and "Traceback" not in err
    reg = write_registry(tmp_path / "r.yaml", {"zh-url": {"url": "http://127.0.0.1:9/x.tar.gz"}})
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE=1 forbids downloading"):
        resolve_model("zh-url", registry_files=[reg])


def _populate_hf_cache(cache: Path, repo_id: str, src: Path, revision: str = "0" * 40) -> Path:
    """huggingface_hub's layout: blobs/<sha256>, snapshots/<rev>/<file> -> ../../blobs/..., refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    for f in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
        data = (src / f).read_bytes()
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (snap / f).symlink_to(Path("..") / ".." / "blobs" / blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snap


def test_hub_entry_from_prepopulated_cache(bundle, tmp_path, monkeypatch, capsys):
    from zhbert.cli import main
    from zhbert.hub import resolve_model

    _, step_dir = bundle
    hf_home = tmp_path / "hf"
    snap = _populate_hf_cache(hf_home / "hub", "hfl/rbt3", step_dir / "hf")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("rbt3") == snap  # short name from the built-in registry
    assert resolve_model("hfl/rbt3") == snap  # the hub id works too
    assert_same_model(snap, step_dir)
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    assert main(["download", "rbt3"]) == 0
    assert capsys.readouterr().out == f"{snap}\n"
    assert main(["download", "--list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("rbt3 "))
    assert f"✓ {snap}" in line
    assert main(["download", "rbt3", "--cache-dir", str(tmp_path / "elsewhere")]) == 2  # not cached there


# ============================================================================= local / formats
def test_local_paths_resolve_to_themselves(bundle, tmp_path):
    from zhbert.hub import resolve_model

    _, step_dir = bundle
    assert resolve_model(step_dir / "hf") == step_dir / "hf"
    assert resolve_model(str(step_dir)) == step_dir  # step_<N>/: the caller picks hf/
    with pytest.raises(CheckpointError, match="not a local directory, a registered checkpoint name"):
        resolve_model("./no/such/dir")


def test_legacy_bin_loads_through_weights_only(bundle, tmp_path):
    from safetensors.torch import load_file

    from zhbert.hub import resolve_model
    from zhbert.model.modeling import BertForPreTraining

    _, step_dir = bundle
    sd = load_file(str(step_dir / "hf" / "model.safetensors"))
    legacy = {}
    for k, v in sd.items():  # TF-era names, bare BertModel prefix, a position_ids buffer
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        legacy[k.removeprefix("bert.")] = v
    legacy["embeddings.position_ids"] = torch.arange(64)[None]
    d = tmp_path / "legacy"
    d.mkdir()
    torch.save(legacy, d / "pytorch_model.bin")
    for f in ("config.json", "vocab.txt"):
        shutil.copy2(step_dir / "hf" / f, d / f)
    assert resolve_model(d) == d
    model = BertForPreTraining.from_pretrained(d)
    ours = model.state_dict()
    for k, v in sd.items():
        assert torch.equal(ours[k], v), k

    # Anything but tensors must not be unpickled (a pickle can run code).
    torch.save({"bert.embeddings.word_embeddings.weight": Payload()}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only"):
        BertForPreTraining.from_pretrained(d)


def test_google_bert_config_is_translated(bundle, tmp_path):
    from zhbert.hub import resolve_model
    from zhbert.model.convert import google_config_to_hf
    from zhbert.model.modeling import BertForPreTraining

    _, step_dir = bundle
    hf_cfg = json.loads((step_dir / "hf" / "config.json").read_text())
    google = {k: hf_cfg[k] for k in ("attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob",
                                     "hidden_size", "initializer_range", "intermediate_size",
                                     "max_position_embeddings", "num_attention_heads", "num_hidden_layers",
                                     "type_vocab_size", "vocab_size")}
    google.update(directionality="bidi", pooler_fc_size=768, pooler_num_attention_heads=12,
                  pooler_num_fc_layers=3, pooler_size_per_head=128, pooler_type="first_token_transform")
    converted = google_config_to_hf(google)
    assert "pooler_type" not in converted and converted["layer_norm_eps"] == 1e-12
    assert converted["model_type"] == "bert"

    d = tmp_path / "google"
    d.mkdir()
    (d / "bert_config.json").write_text(json.dumps(google))
    for f in ("model.safetensors", "vocab.txt"):
        shutil.copy2(step_dir / "hf" / f, d / f)
    out = resolve_model(d, cache_dir=tmp_path / "c")
    assert out != d and not (d / "config.json").exists()  # the source is left alone
    assert BertForPreTraining.from_pretrained(out).config.hidden_size == hf_cfg["hidden_size"]


def test_tensorflow_checkpoint_without_tensorflow(tmp_path):
    from zhbert.hub import resolve_model

    try:
        import tensorflow  # noqa: F401
        pytest.skip("TensorFlow is installed; this checks the message shown without it")
    except ImportError:
        pass
    d = tmp_path / "chinese_L-12_H-768_A-12"
    d.mkdir()
    (d / "bert_config.json").write_text(json.dumps({"hidden_size": 768, "vocab_size": 21128}))
    (d / "bert_model.ckpt.index").write_bytes(b"\0")
    (d / "bert_model.ckpt.data-00000-of-00001").write_bytes(b"\0")
    (d / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(CheckpointError, match=r"TensorFlow checkpoint.*`pip install tensorflow`"):
        resolve_model(d, cache_dir=tmp_path / "c")


def test_tf_variable_names_map_to_hf():
    from zhbert.model.convert import tf_name_to_hf

    assert tf_name_to_hf("bert/embeddings/word_embeddings") == ("bert.embeddings.word_embeddings.weight", False)
    assert tf_name_to_hf("bert/embeddings/LayerNorm/gamma") == ("bert.embeddings.LayerNorm.gamma", False)
    assert tf_name_to_hf("bert/encoder/layer_11/attention/self/query/kernel") == (
        "bert.encoder.layer.11.attention.self.query.weight", True)
    assert tf_name_to_hf("bert/encoder/layer_0/output/LayerNorm/beta") == (
        "bert.encoder.layer.0.output.LayerNorm.beta", False)
    assert tf_name_to_hf("bert/pooler/dense/bias") == ("bert.pooler.dense.bias", False)
    assert tf_name_to_hf("cls/predictions/output_bias") == ("cls.predictions.bias", False)
    assert tf_name_to_hf("cls/predictions/transform/dense/kernel") == ("cls.predictions.transform.dense.weight", True)
    assert tf_name_to_hf("cls/seq_relationship/output_weights") == ("cls.seq_relationship.weight", False)
    assert tf_name_to_hf("cls/seq_relationship/output_bias") == ("cls.seq_relationship.bias", False)
    assert tf_name_to_hf("bert/encoder/layer_0/output/dense/kernel/adam_m") is None
    assert tf_name_to_hf("global_step") is None


def test_shape_disagreeing_with_config_names_the_tensor(server, bundle, tmp_path):
    from zhbert.hub import download
    from zhbert.model.modeling import BertForPreTraining

    path = download(server.url("zhbert-tiny.tar.gz"), cache_dir=tmp_path / "c")
    cfg = json.loads((path / "config.json").read_text())
    cfg["vocab_size"] += 5
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"bert\.embeddings\.word_embeddings\.weight has shape"):
        BertForPreTraining.from_pretrained(path)


# ============================================================================ into CLUE
def test_downloaded_model_runs_clue_eval(server, bundle, tmp_path, monkeypatch):
    fixtures = REPO / "tests" / "fixtures" / "clue"
    if not (fixtures / "tnews_public" / "train.json").is_file():
        pytest.skip(f"{fixtures} (written by the CLUE part) is missing")
    from zhbert.cli import main

    rel, _ = bundle
    reg = write_registry(tmp_path / "r.yaml", {"zh-tiny": tar_entry(rel, server.url("zhbert-tiny.tar.gz"))})
    monkeypatch.setenv("ZHBERT_REGISTRY", str(reg))  # `eval clue` has no --registry: the env var
    out = tmp_path / "clue"
    rc = main(["eval", "clue", "--model", "zh-tiny", "--tasks", "tnews", "--data-dir", str(fixtures),
               "--output", str(out), "--seeds", "1", "--epochs", "1", "--batch-size", "8",
               "--max-seq-length", "32", "--device", "cpu", "--wandb-mode", "disabled"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    acc = results["tasks"]["tnews"]["seeds"]["1"]["dev"]["accuracy"]
    assert 0.0 <= acc <= 1.0
    assert len(server.requests) == 1  # downloaded once, by name


def test_tf_variables_convert_to_the_same_model(tmp_path):
    """The TF-free half of the Google-checkpoint conversion: variables named as Google's TF
    BERT names them (kernels stored (in, out), LayerNorm gamma/beta, optimizer slots present)
    become a state dict that gives transformers' logits exactly."""
    import re

    import torch
    import transformers
    from safetensors.torch import save_file

    from zhbert.model.convert import tf_variables_to_state_dict
    from zhbert.model.modeling import BertForPreTraining

    hf_cfg = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    ref = transformers.BertForPreTraining(hf_cfg).eval()

    def google_name(key: str) -> tuple[str, bool]:  # independent inverse of Google -> HF naming
        if key == "cls.predictions.bias":
            return "cls/predictions/output_bias", False
        if key.startswith("cls.seq_relationship."):
            return "cls/seq_relationship/output_" + ("weights" if key.endswith("weight") else "bias"), False
        name = re.sub(r"\.layer\.(\d+)\.", r".layer_\1.", key).replace(".", "/")
        if "LayerNorm" in name:
            return name.replace("/weight", "/gamma").replace("/bias", "/beta"), False
        if name.endswith("_embeddings/weight"):
            return name[: -len("/weight")], False
        return (name[: -len("/weight")] + "/kernel", True) if name.endswith("/weight") else (name, False)

    variables = [("global_step", 7)]
    for key, t in ref.state_dict().items():
        if key in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias") or "position_ids" in key:
            continue
        name, transpose = google_name(key)
        arr = t.detach().numpy()
        variables += [(name, arr.T if transpose else arr), (name + "/adam_m", arr * 0 + 1)]
    sd = tf_variables_to_state_dict(variables)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(hf_cfg.to_json_string())
    ours = BertForPreTraining.from_pretrained(tmp_path).eval()
    ids = torch.randint(5, 60, (2, 12))
    with torch.no_grad():
        a, b = ours(ids), ref(ids)
    assert torch.allclose(a.prediction_logits, b.prediction_logits, atol=1e-5)
    assert torch.allclose(a.seq_relationship_logits, b.seq_relationship_logits, atol=1e-5)
