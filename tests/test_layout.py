"""The package layout follows the pipeline and its import rule holds (docs/DESIGN.md).

Every ``import zhbert...`` / ``from zhbert... import`` in every module of the package, also
inside functions, is read from the source with ``ast``: a stage may import only from the
stages upstream of it and the shared modules, so the rule cannot silently rot.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "zhbert"

SHARED = {"zhbert", "zhbert.config", "zhbert.errors", "zhbert.files", "zhbert.cache"}
# stage -> the stages it may import from (besides itself and SHARED)
UPSTREAM = {
    "model": set(),
    "hub": {"model"},  # names -> checkpoint directories (downloads, Google checkpoint conversion)
    "prep": {"hub"},  # data.vocab may be a checkpoint name
    "train": {"prep", "model", "hub"},
    "clue": {"prep", "model", "hub", "train"},
}
# release.py is the last stage and cli.py the front door: both may import every stage
TOP_LEVEL = {"__init__", "__main__", "config", "errors", "files", "cache", "cli", "release"}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "zhbert"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "zhbert":
            # "from zhbert.train import checkpoint" imports zhbert.train.checkpoint
            out += [(node.lineno, f"{node.module}.{a.name}" if node.module.count(".") == 1 and node.module != "zhbert"
                     and (PKG / node.module.split(".")[1] / f"{a.name}.py").exists() else node.module)
                    for a in node.names]
    return out


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_ls_zhbert_reads_as_the_pipeline():
    names = {p.stem for p in PKG.iterdir() if p.suffix == ".py"}
    packages = {p.name for p in PKG.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(UPSTREAM)
    assert names <= TOP_LEVEL, f"modules outside the stage packages: {sorted(names - TOP_LEVEL)}"


def test_each_stage_imports_only_from_upstream_and_shared():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if len(rel.parts) == 1:  # top level: shared modules import nothing from stages (cli may)
            if rel.stem in ("cli", "__main__", "__init__", "release"):
                continue
            allowed = set()
        else:
            stage = rel.parts[0]
            allowed = UPSTREAM[stage] | {stage}
        for line, mod in _imports(path):
            if mod in SHARED or _stage(mod) in allowed:
                continue
            if len(rel.parts) == 1 and re.fullmatch(r"zhbert\.(config|errors|files|cache)", mod):
                continue
            bad.append(f"zhbert/{rel}:{line} imports {mod}")
    assert not bad, "imports against the pipeline order (docs/DESIGN.md):\n" + "\n".join(bad)


def test_old_module_paths_still_import_with_a_deprecation_warning():
    import importlib
    import warnings

    import zhbert

    for old, new in zhbert.MOVED.items():
        if old == new:
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(f"zhbert.{old}")
        assert module is importlib.import_module(f"zhbert.{new}")
    from zhbert import BertConfig, BertForPreTraining  # the documented import path

    assert BertConfig.__module__ == "zhbert.model.modeling" and BertForPreTraining.__name__ == "BertForPreTraining"
