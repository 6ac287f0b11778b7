"""The README's "Pretrain on your own corpus" section, run verbatim (issue #16): every command of
its code block, in order, in a fresh directory holding the repository's scripts, configs and
corpora, as a new user would."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from _pretrain_fixtures import REPO, cpu_env


def section_commands(heading: str) -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    body = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", body, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.slow
def test_own_corpus_section_runs_verbatim(tmp_path):
    if shutil.which("zhbert") is None:
        pytest.skip("the zhbert command is not installed (pip install -e .)")
    for d in ("scripts", "configs", "corpora"):
        shutil.copytree(REPO / d, tmp_path / d)
    commands = section_commands("Pretrain on your own corpus")
    assert len(commands) == 3
    outputs = []
    for cmd in commands:
        r = subprocess.run(cmd, shell=True, cwd=tmp_path, env=cpu_env(), capture_output=True, text=True,
                           timeout=900)
        assert r.returncode == 0, f"{cmd}\n{r.stderr[-3000:]}"
        outputs.append(r)
    recorded = yaml.safe_load((tmp_path / "runs/mine/pretrain/config.yaml").read_text())["data"]
    assert recorded["dir"] == "runs/mine/data" and recorded["vocab"].endswith("runs/mine/vocab.txt")
    assert "[UNK] is" in outputs[1].stderr  # prepare reported the corpus's [UNK] rate
    assert outputs[2].stdout.startswith("Did pretraining work?")
