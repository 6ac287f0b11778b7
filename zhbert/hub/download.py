"""Fetching registered checkpoints: hub snapshots, and URL bundles placed atomically.

``download(name)`` looks ``name`` up in the registry (:mod:`zhbert.hub.registry`); a name
that is not registered may still be a hub id (``org/name``) or an http(s) URL. Then:

Hub entries go through ``huggingface_hub.snapshot_download`` and its own cache, so
``HF_HOME``, ``HF_HUB_CACHE``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` work as usual. Only
what a model directory needs is fetched: configs and tokenizer files, then ONE weights
format (``model.safetensors``; ``pytorch_model.bin`` only for a repository without it).

URL entries land in zhbert's cache (``--cache-dir``, else :func:`zhbert.cache.cache_root`:
``$ZHBERT_CACHE``, ``$XDG_CACHE_HOME/zhbert`` or ``~/.cache/zhbert``)::

    downloads/<key>.lock      one download of a key at a time (two ranks, two shells): filelock
    downloads/<key>.part      the bytes so far; after a dropped connection the next attempt
                              (or the next run) asks for the rest with ``Range: bytes=<size>-``
    tmp/<key>.XXXX/           the bundle extracted and checked (zhbert.hub.archive)
    models/<key>/             os.replace-d here only when complete, with .zhbert_source.json

``<key>`` is the entry's name (or the URL's file name) plus 12 hex digits of the URL's sha256.
A directory under ``models/`` is therefore always complete, and a failed download leaves
nothing there. Resuming (:func:`fetch_with_resume`): a server that ignores Range (answers 200)
restarts the file from byte 0, one that answers 416 or a Content-Range for another offset
has changed the file, and the partial file is dropped. ``timeout`` bounds every wait for the
server (connecting, the reply, each read); a stall mid-file counts as a dropped connection.
The registry's ``size`` and ``sha256`` are checked before anything is extracted; a mismatch
deletes the download.

Google-format bundles (``bert_config.json``, TensorFlow checkpoints) are placed as downloaded
and converted there (:mod:`zhbert.model.convert`), so a missing TensorFlow costs an install,
not a second download.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from zhbert.errors import CheckpointError, ZhbertError
from zhbert.hub.archive import check_member_name, extract_archive, single_top_dir, sniff_format
from zhbert.hub.registry import (RegistryEntry, format_from_name, load_registry, looks_like_hub_id,
                                 looks_like_url, lookup)
from zhbert.model.convert import TF_INDEX, ensure_hf_layout, write_hf_config
from zhbert.model.weights import WEIGHT_FILES, has_weights

MARKER = ".zhbert_source.json"  # written into every placed URL download

# What a hub snapshot needs: configs and tokenizer files first, then ONE weights format.
HUB_BASE_PATTERNS = ["config.json", "bert_config.json", "vocab.txt", "tokenizer.json",
                     "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"]
HUB_SAFETENSORS_PATTERNS = ["model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
HUB_BIN_PATTERNS = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"]


# ============================================================================ cache paths
def default_cache_dir() -> Path:
    from zhbert.cache import cache_root

    return cache_root()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_cache_dir(cache_dir: Optional[Path]) -> Optional[str]:
    """Where snapshot_download should look, read from the environment at call time."""
    if cache_dir is not None:
        return str(Path(cache_dir) / "hub")
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None  # huggingface_hub's default


def _url_key(url: str, name: Optional[str] = None) -> str:
    stem = name or PurePosixPath(urlparse(url).path).name or "download"
    for suffix in (".tar.gz", ".tgz", ".zip", ".tar"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "download"
    return f"{stem}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def cached_path(entry: RegistryEntry, cache_dir: Optional[Path] = None) -> Optional[Path]:
    """The local directory of ``entry`` if it is already cached (no network)."""
    if entry.hub_id:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(entry.hub_id, "config.json", cache_dir=_hub_cache_dir(cache_dir),
                                       revision=entry.revision)
        if isinstance(found, str):
            return Path(found).parent
        return None
    final = Path(cache_dir or default_cache_dir()) / "models" / _url_key(entry.url, entry.name)
    return final if final.is_dir() else None


# ============================================================================== download
def download(name_or_url: str, cache_dir: Optional[str | Path] = None, revision: Optional[str] = None,
             registry_files: Optional[list[str | Path]] = None, retries: int = 3,
             timeout: float = 60.0) -> Path:
    """Fetch a registered name, hub id or URL into the cache; return the model directory."""
    cache = Path(cache_dir).expanduser() if cache_dir else None
    registry = load_registry(registry_files)
    entry = lookup(registry, name_or_url)  # also a hub id or URL registered under a short name
    if entry is None:
        if looks_like_url(name_or_url):
            entry = RegistryEntry(name=_url_key(name_or_url), url=name_or_url,
                                  format=format_from_name(name_or_url), source="<command line>")
            if entry.format is None:
                entry.format = "tar.gz"  # sniffed again from the bytes after download
            return _download_url(entry, cache or default_cache_dir(), retries, timeout, raw=True)
        if looks_like_hub_id(name_or_url):
            entry = RegistryEntry(name=name_or_url, hub_id=name_or_url, source="<command line>")
        else:
            known = ", ".join(sorted(registry)) or "(none)"
            raise CheckpointError(
                f"{name_or_url!r} is not a local directory, a registered checkpoint name, a hub id "
                f"(org/name) or a URL. Registered names: {known}")
    if entry.hub_id:
        return _download_hub(entry, cache, revision or entry.revision)
    if revision:
        print(f"zhbert: note: --revision is ignored for URL checkpoint {entry.name}", file=sys.stderr)
    return _download_url(entry, cache or default_cache_dir(), retries, timeout)


# ---------------------------------------------------------------------------------- hub
class _NeverRaised(Exception):
    """Stands in for a huggingface_hub exception class that the installed version lacks."""


class _HubErrors:
    """huggingface_hub's exception classes, by name, across its versions: recent releases
    define them all in ``huggingface_hub.errors`` (``IncompleteSnapshotError`` only from 1.30),
    older ones (0.24, the floor, as on a transformers 4.x stack) keep ``LocalEntryNotFoundError``,
    ``RepositoryNotFoundError`` & co in ``huggingface_hub.utils``. A class that neither module
    has resolves to :class:`_NeverRaised`, so its ``except`` clause is simply inert."""

    def __getattr__(self, name: str) -> type:
        import importlib

        for module in ("huggingface_hub.errors", "huggingface_hub.utils"):
            try:
                cls = getattr(importlib.import_module(module), name, None)
            except ImportError:
                continue
            if isinstance(cls, type) and issubclass(cls, BaseException):
                return cls
        return _NeverRaised


def _download_hub(entry: RegistryEntry, cache: Optional[Path], revision: Optional[str]) -> Path:
    from huggingface_hub import snapshot_download

    hf_errors = _HubErrors()
    hub_cache = _hub_cache_dir(cache)
    offline = _offline()
    label = entry.hub_id if entry.name == entry.hub_id else f"{entry.name} ({entry.hub_id})"

    def fetch(patterns: list[str]) -> Path:
        try:
            return Path(snapshot_download(entry.hub_id, revision=revision, cache_dir=hub_cache,
                                          allow_patterns=patterns, local_files_only=offline))
        except (hf_errors.LocalEntryNotFoundError, hf_errors.IncompleteSnapshotError) as e:
            where = hub_cache or "the default Hugging Face cache (~/.cache/huggingface/hub)"
            if offline:
                raise CheckpointError(
                    f"{label} is not in the Hugging Face cache at {where} and HF_HUB_OFFLINE=1 forbids "
                    f"downloading it. Either unset HF_HUB_OFFLINE and run `zhbert download "
                    f"{entry.name}` once with network access, point HF_HOME / HF_HUB_CACHE at a cache "
                    f"that holds it, or pass a local checkpoint directory instead.") from None
            raise CheckpointError(f"{label}: cannot reach the hub ({_first_line(e)}) and it is not "
                                  f"cached in {where}; check the network / HF_ENDPOINT, or pass a "
                                  f"local checkpoint directory") from None
        except hf_errors.GatedRepoError:  # before RepositoryNotFoundError: it is a subclass of it
            raise CheckpointError(f"{label}: the repository is gated; accept its terms on the hub "
                                  f"and log in (`hf auth login`)") from None
        except hf_errors.RepositoryNotFoundError:
            raise CheckpointError(f"{label}: no such repository on the hub "
                                  f"({os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}); "
                                  f"check the name, or log in for private repos") from None
        except hf_errors.RevisionNotFoundError:
            raise CheckpointError(f"{label}: revision {revision!r} not found on the hub") from None
        except (hf_errors.HfHubHTTPError, OSError, ValueError) as e:
            raise CheckpointError(f"{label}: hub download failed: {type(e).__name__}: "
                                  f"{_first_line(e)}") from None
        except Exception as e:  # httpx connection errors and the like: no library tracebacks
            raise CheckpointError(f"{label}: hub download failed: {type(e).__name__}: "
                                  f"{_first_line(e)}") from None

    path = fetch(HUB_BASE_PATTERNS + HUB_SAFETENSORS_PATTERNS)
    if not has_weights(path) and not offline:
        path = fetch(HUB_BASE_PATTERNS + HUB_BIN_PATTERNS)  # an older repo without safetensors
    if not has_weights(path) and not (path / TF_INDEX).is_file():
        raise CheckpointError(f"{label}: the snapshot at {path} has no model weights "
                              f"({', '.join(WEIGHT_FILES)})")
    return ensure_hf_layout(path, cache)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


# ---------------------------------------------------------------------------------- URL
@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialise concurrent downloads of the same key (two ranks, two shells). ``filelock``
    (flock on POSIX, msvcrt on Windows) waits for the holder; the OS drops a dead one's lock."""
    from filelock import FileLock

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path)):
        yield


def _download_url(entry: RegistryEntry, cache: Path, retries: int, timeout: float,
                  raw: bool = False) -> Path:
    key = _url_key(entry.url, None if raw else entry.name)
    final = cache / "models" / key
    if final.is_dir():
        return ensure_hf_layout(final, cache, in_place=True)
    if _offline():
        # A raw URL's entry name is our internal cache key: tell the user what they typed.
        what, again = (entry.url, entry.url) if raw else (f"{entry.name} ({entry.url})", entry.name)
        raise CheckpointError(
            f"{what} is not in the zhbert cache {cache / 'models'} and HF_HUB_OFFLINE=1 forbids "
            f"downloading it. Run `HF_HUB_OFFLINE=0 zhbert download {again}` once with network "
            f"access, pass --cache-dir / set ZHBERT_CACHE to a cache that holds it, or fetch "
            f"{entry.url} yourself, unpack it and pass the model directory instead.")
    downloads = cache / "downloads"
    tmp_root = cache / "tmp"
    for d in (downloads, tmp_root, final.parent):
        d.mkdir(parents=True, exist_ok=True)
    with _locked(downloads / f"{key}.lock"):
        if final.is_dir():  # another process finished it while we waited
            return ensure_hf_layout(final, cache, in_place=True)
        work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=tmp_root))
        try:
            if entry.format == "files":
                model_dir = work / "model"
                model_dir.mkdir()
                base = entry.url if entry.url.endswith("/") else entry.url + "/"
                for fname, digest in sorted(entry.files.items()):
                    check_member_name(fname, base)
                    part = downloads / f"{_url_key(base + fname)}.part"
                    fetch_with_resume(base + fname, part, sha256=digest, retries=retries,
                                      timeout=timeout)
                    (model_dir / fname).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(part, model_dir / fname)
            else:
                part = downloads / f"{key}.part"
                fetch_with_resume(entry.url, part, sha256=entry.sha256, size=entry.size,
                                  retries=retries, timeout=timeout)
                try:  # a complete, verified file that is refused is not worth resuming: drop it
                    fmt = sniff_format(part, entry.url) if raw else entry.format
                    out = work / "extract"
                    extract_archive(part, out, fmt, label=entry.url)
                    model_dir = single_top_dir(out)
                    _check_bundle(model_dir, entry.url)
                finally:
                    part.unlink(missing_ok=True)
            _check_bundle(model_dir, entry.url)
            (model_dir / MARKER).write_text(json.dumps(
                {"name": entry.name, "url": entry.url, "sha256": entry.sha256, "format": entry.format,
                 "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
            try:
                os.replace(model_dir, final)
            except OSError:
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    # A TF bundle is placed as downloaded and converted here, so a missing TensorFlow costs
    # an install, not a second download.
    return ensure_hf_layout(final, cache, in_place=True)


def _check_bundle(model_dir: Path, label: str) -> None:
    """Refuse bundles that are not checkpoints; translate a Google bert_config.json."""
    has_config = (model_dir / "config.json").is_file() or (model_dir / "bert_config.json").is_file()
    if not has_config or not (has_weights(model_dir) or (model_dir / TF_INDEX).is_file()):
        found = ", ".join(sorted(p.name for p in model_dir.iterdir())[:10]) or "nothing"
        raise CheckpointError(f"{label}: the bundle is not a checkpoint: expected config.json (or "
                              f"bert_config.json) and one of {', '.join(WEIGHT_FILES)} or a "
                              f"TensorFlow {TF_INDEX}; found {found}")
    if not (model_dir / "config.json").is_file() and has_weights(model_dir):
        write_hf_config(model_dir / "bert_config.json", model_dir / "config.json")


class _Interrupted(Exception):
    pass


def fetch_with_resume(url: str, part: Path, *, sha256: Optional[str] = None, size: Optional[int] = None,
                      retries: int = 3, timeout: float = 60.0) -> Path:
    """Download ``url`` into ``part``, resuming an existing partial file with HTTP Range.

    A server that ignores Range (answers 200) restarts the file from byte 0. A dropped
    connection is retried up to ``retries`` times in total, each time from where it stopped;
    after the last attempt the partial file is kept so the next run resumes. A sha256 or size
    mismatch deletes the file and raises.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    attempt = 0
    while True:
        attempt += 1
        try:
            _fetch_once(url, part, size, timeout)
            break
        except _Interrupted as e:
            if attempt >= max(1, retries):
                raise ZhbertError(f"download of {url} interrupted ({e}); the partial file {part} is "
                                  f"kept: run the same command again to resume") from None
            print(f"zhbert: {url}: {e}; resuming (attempt {attempt + 1}/{retries})", file=sys.stderr)
            time.sleep(min(2.0 ** (attempt - 1) * 0.2, 5.0))
    got_size = part.stat().st_size
    if size is not None and got_size != size:
        part.unlink()
        raise ZhbertError(f"{url}: downloaded {got_size} bytes but the registry says {size}; "
                          f"nothing was kept")
    if sha256:
        got = sha256_file(part)
        if got != sha256.lower():
            part.unlink()
            raise ZhbertError(f"{url}: sha256 mismatch: expected {sha256}, got {got}; the download was "
                              f"deleted (a corrupt or replaced file, or a wrong registry entry)")
    return part


def _fetch_once(url: str, part: Path, size: Optional[int], timeout: float) -> None:
    from tqdm import tqdm

    from zhbert import __version__

    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset >= size:
        if offset == size:
            return  # complete already; the sha256 check decides
        part.unlink()
        offset = 0
    headers = {"User-Agent": f"zhbert/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        if e.code == 416 and offset:  # our partial file is not a prefix of what is served now
            part.unlink()
            raise _Interrupted("server refused to resume (HTTP 416), restarting from 0") from None
        raise ZhbertError(f"download failed: {url}: HTTP {e.code} {e.reason}") from None
    except TimeoutError:  # connected, but no response headers in time
        raise ZhbertError(f"download failed: {url}: no response within {timeout:g} s "
                          f"(zhbert download --timeout SECONDS)") from None
    except URLError as e:
        if isinstance(e.reason, TimeoutError):  # could not connect in time
            raise ZhbertError(f"download failed: {url}: cannot connect within {timeout:g} s "
                              f"(zhbert download --timeout SECONDS)") from None
        raise ZhbertError(f"download failed: {url}: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise ZhbertError(f"download failed: {url}: {type(e).__name__}: {e}") from None
    with resp:
        status = getattr(resp, "status", 200)
        if offset and status == 206:
            crange = resp.headers.get("Content-Range", "")
            if not crange.startswith(f"bytes {offset}-"):
                part.unlink()
                raise _Interrupted(f"unexpected Content-Range {crange!r}, restarting from 0")
            mode = "ab"
        else:
            offset, mode = 0, "wb"  # no Range sent, or the server ignored it: start over
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else size
        done = offset
        try:
            with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                             unit_divisor=1024, desc=PurePosixPath(urlparse(url).path).name,
                                             disable=None, file=sys.stderr) as bar:
                # read1: whatever has arrived (up to 1 MiB), so a stall mid-chunk keeps the
                # bytes received so far in the .part file for the next resume.
                read = getattr(resp, "read1", resp.read)
                while True:
                    chunk = read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
        except TimeoutError:
            raise _Interrupted(f"no data for {timeout:g} s after {done} bytes") from None
        except (http.client.IncompleteRead, ConnectionError) as e:
            raise _Interrupted(f"connection lost after {done} bytes: {type(e).__name__}") from None
        if total is not None and done < total:
            raise _Interrupted(f"connection closed after {done} of {total} bytes")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ========================================================================= the listing
def _human(n: Optional[int]) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def list_registry(registry_files: Optional[list[str | Path]] = None,
                  cache_dir: Optional[str | Path] = None) -> str:
    """The registry as a table, with a ✓ and the path for what is already cached."""
    reg = load_registry(registry_files)
    cache = Path(cache_dir).expanduser() if cache_dir else None
    rows = [("name", "kind", "source", "size", "cached")]
    for name in sorted(reg):
        e = reg[name]
        try:
            hit = cached_path(e, cache)
        except Exception:  # a broken cache entry must not break the listing
            hit = None
        rows.append((name, e.kind, e.location, _human(e.size), f"✓ {hit}" if hit else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4]
                     for r in rows).rstrip() + "\n"
