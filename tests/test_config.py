"""Typed config: precedence, type checks, unknown keys, and every YAML in configs/ loads."""

from pathlib import Path

import pytest
import yaml

from zhbert.config import (
    DataConfig,
    PrepareFileConfig,
    PretrainConfig,
    load_config,
    parse_override,
    save_config,
)
from zhbert.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_precedence_defaults_file_overrides(tmp_path):
    p = write(tmp_path, "train:\n  max_steps: 7\n  lr: 1.0e-3\nmasking:\n  strategy: char\n")
    cfg = load_config(p, ["train.max_steps=9", "wandb.tags=[a, b]", "model.init_from=null"])
    assert cfg.train.max_steps == 9  # override beats file
    assert cfg.train.lr == pytest.approx(1e-3)  # file beats default
    assert cfg.masking.strategy == "char"
    assert cfg.train.seed == 42  # default
    assert cfg.wandb.tags == ["a", "b"]
    assert cfg.model.init_from is None


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    # PyYAML reads "5e-4" as a string; the loader must still accept it as a number.
    cfg = load_config(write(tmp_path, "train:\n  lr: 5e-4\n"))
    assert cfg.train.lr == pytest.approx(5e-4)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("train:\n  max_stepz: 3\n", "unknown key train.max_stepz"),
        ("trian:\n  max_steps: 3\n", "unknown key trian"),
        ("train:\n  max_steps: three\n", "train.max_steps must be an integer"),
        ("train:\n  max_steps: 0\n", "train.max_steps must be >= 1"),
        ("data:\n  t2s: 'yes'\n", "data.t2s must be true or false"),
        ("data:\n  input: corpus.txt\n", "data.input must be a list"),
        ("deepspeed:\n  zero_stage: 4\n", "deepspeed.zero_stage must be one of 0, 1, 2, 3"),
        ("deepspeed:\n  offload_param: cpu\n  zero_stage: 2\n", "deepspeed.offload_param parameter offload needs zero_stage 3"),
        ("masking:\n  ngram_probs: [0.5, 0.4]\n", "masking.ngram_probs"),
        ("wandb: 3\n", "wandb must be a mapping"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("train: [\n", "not valid YAML"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path, text, needle):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert needle in str(e.value)
    assert str(p) in str(e.value)


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown key train.nope"):
        load_config(None, ["train.nope=1"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["train.max_steps"])
    with pytest.raises(ConfigError, match="train.max_steps must be an integer"):
        load_config(None, ["train.max_steps.x=1"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_parse_override_types():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a.b=true") == (["a", "b"], True)
    assert parse_override("a.b=x=y") == (["a", "b"], "x=y")
    assert parse_override("a.b=[1,2]") == (["a", "b"], [1, 2])


def test_save_roundtrip(tmp_path):
    cfg = load_config(None, ["train.max_steps=11", "data.input=[x.txt]"])
    save_config(cfg, tmp_path / "out.yaml")
    again = load_config(tmp_path / "out.yaml")
    assert again == cfg


def test_prepare_only_file(tmp_path):
    cfg = load_config(write(tmp_path, "data:\n  workers: 2\n"), cls=PrepareFileConfig)
    assert isinstance(cfg.data, DataConfig) and cfg.data.workers == 2
    with pytest.raises(ConfigError, match="unknown key train"):
        load_config(write(tmp_path, "train: {}\n"), cls=PrepareFileConfig)


# ---- every YAML file under configs/ is loaded by the loader that owns its directory ----

ALL_YAML = sorted((REPO / "configs").rglob("*.yaml"))


def _load_any(path: Path):
    rel = path.relative_to(REPO / "configs")
    top = rel.parts[0]
    if top == "pretrain":
        return load_config(path, cls=PretrainConfig)
    if top == "prepare":
        return load_config(path, cls=PrepareFileConfig)
    if top == "model":
        from zhbert.model.modeling import BertConfig

        return BertConfig.from_dict(yaml.safe_load(path.read_text(encoding="utf-8")))
    if top == "clue" and rel.name == "sizes.yaml":
        from zhbert.clue.protocol import load_size_table

        return load_size_table(path)
    if top == "clue":
        from zhbert.clue.tasks import load_task_config

        return load_task_config(path)
    if rel.name == "checkpoints.yaml":
        from zhbert.hub.registry import load_registry

        return load_registry([path])
    raise AssertionError(f"no loader for {rel}: add one to tests/test_config.py")


@pytest.mark.parametrize("path", ALL_YAML, ids=[str(p.relative_to(REPO)) for p in ALL_YAML])
def test_every_config_file_loads(path):
    assert _load_any(path) is not None



def test_readme_shows_the_config_error_as_printed():
    """The README's sample error is the real one (up to its '...')."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    shown = re.search(r"^\$ python scripts/pretrain.py (\S+)\n(pretrain: error: .*?)\.\.\.$",
                      (repo / "README.md").read_text(encoding="utf-8"), re.M)
    assert shown, "README lost its sample config error"
    r = subprocess.run([sys.executable, str(repo / "scripts" / "pretrain.py"), shown.group(1)], cwd=repo,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith(shown.group(2)), r.stderr


def test_every_config_field_is_documented_and_docs_config_md_is_current():
    """docs/config.md is generated from the field docstrings (python -m zhbert.config)."""
    import dataclasses
    import typing
    from pathlib import Path

    from zhbert.config import PretrainConfig, field_docs, reference_markdown

    hints = typing.get_type_hints(PretrainConfig)
    for section in dataclasses.fields(PretrainConfig):
        docs = field_docs(hints[section.name])
        undocumented = [k for k, v in docs.items() if not v]
        assert not undocumented, f"{section.name}: fields without a docstring: {undocumented}"
        assert set(docs) == {f.name for f in dataclasses.fields(hints[section.name])}
    page = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert page.read_text(encoding="utf-8") == reference_markdown(), \
        "docs/config.md is stale: python -m zhbert.config > docs/config.md"
