"""Every command of the README's "Commands" table, run verbatim and in the order shown, in a
fresh copy of the repository (what a clone holds: tracked and unignored files, no runs/).

``zhbert`` is a shim running this checkout's ``zhbert.cli``; ``zhbert download
bert-base-chinese`` is served from a pre-filled Hugging Face cache with ``HF_HUB_OFFLINE=1``
(these machines have no network). Each command must exit 0 without a traceback; the files
each one promises are checked after it.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Commands"):]
    table = table[:table.index("\n\n", table.index("| command |"))]
    return [m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", table, flags=re.M)]


def _fresh_copy(dst: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    return dst


def _hf_cache(cache: Path, repo_id: str, src: Path) -> Path:
    """huggingface_hub's cache layout (blobs, snapshots/<rev>, refs/main) holding ``src``'s files."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for f in sorted(p for p in src.iterdir() if p.is_file()):
        data = f.read_bytes()
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    return snap


def test_readme_command_table_is_literal():
    cmds = readme_commands()
    assert len(cmds) >= 8 and all("[" not in c and "…" not in c for c in cmds)  # no placeholder syntax
    assert cmds[0].startswith("zhbert prepare") and any(c.startswith("python scripts/pretrain.py") for c in cmds)


@pytest.mark.slow
def test_readme_commands_run_in_order_on_a_fresh_copy(tmp_path):
    clone = _fresh_copy(tmp_path / "clone")
    assert not (clone / "runs").exists()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "zhbert").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m zhbert.cli "$@"\n')
    (bin_dir / "zhbert").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    # a tiny stand-in for bert-base-chinese in the offline HF cache
    import torch

    from zhbert.model.modeling import BertConfig, BertForPreTraining

    stand_in = tmp_path / "stand_in"
    torch.manual_seed(0)
    BertForPreTraining(BertConfig(vocab_size=2501, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64)).save_pretrained(stand_in)
    shutil.copy(REPO / "configs" / "vocab" / "sample_vocab.txt", stand_in / "vocab.txt")
    snap = _hf_cache(tmp_path / "hf" / "hub", "google-bert/bert-base-chinese", stand_in)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(clone),
           "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu",
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("HF_HUB_CACHE", None)
    expect = {  # command prefix -> files it must leave behind
        "zhbert prepare": ["runs/data/sample/stats.json"],
        "zhbert vocab build": ["runs/vocab.txt"],
        "python scripts/pretrain.py": ["runs/pretrain/tiny/metrics.jsonl",
                                       "runs/pretrain/tiny/checkpoints/step_200/meta.json"],
        "zhbert export": ["runs/export/tiny-hf/config.json", "runs/export/tiny-hf/model.safetensors"],
        "zhbert eval clue": ["runs/clue/fixture/results.md", "runs/clue/fixture/random-init/results.json"],
        "zhbert release": ["runs/release"],
    }
    for cmd in readme_commands():
        r = subprocess.run(["bash", "-c", cmd], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, f"{cmd}\n{r.stderr[-3000:]}"
        for prefix, files in expect.items():
            if cmd.startswith(prefix):
                for f in files:
                    assert (clone / f).exists(), f"{cmd} did not write {f}"
        if cmd.startswith("zhbert download"):
            assert r.stdout.strip() == str(snap)
        if cmd.startswith("zhbert universal"):
            assert "not sharded" in r.stdout  # ZeRO 0: nothing to convert, said in one line
        if cmd.startswith("zhbert eval clue"):
            md = (clone / "runs/clue/fixture/results.md").read_text()
            assert "| `tiny` |" in md and "| `random-init` |" in md and "majority class" in md
