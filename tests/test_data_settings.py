"""A run trains on the data it asks for, normalised as its checkpoint was (issues #11 item 1 and
#16 item 1): real `zhbert prepare` outputs and real runs of scripts/pretrain.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from _pretrain_fixtures import REPO, SAMPLE, TINY_MODEL, build_data, cpu_env, overrides, run_script

VOCAB = REPO / "tests" / "golden" / "sample_vocab.txt"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_data(tmp_path_factory.mktemp("settings_data"))  # prepared with data.fullwidth=true


@pytest.fixture(scope="module")
def folded_checkpoint(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("settings_run") / "run"
    r = run_script(overrides(data, out, "train.max_steps=2", "train.checkpoint_every=2"))
    assert r.returncode == 0, r.stderr[-2000:]
    return out / "checkpoints" / "step_2"


def own_corpus_run(tmp_path: Path, *extra: str) -> list[str]:
    """A run that names its corpus (data.input) and a data.dir of its own."""
    return [f"data.input=[{SAMPLE}]", f"data.vocab={VOCAB}", "data.max_seq_length=64",
            "data.validation_fraction=0.2", f"data.dir={tmp_path / 'data'}", f"train.output_dir={tmp_path / 'run'}",
            "train.max_steps=2", "train.micro_batch_size=2", "train.checkpoint_every=2", "wandb.mode=disabled",
            *TINY_MODEL, *extra]


def error_line(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return [x for x in r.stderr.splitlines() if x.strip()][-1]


def test_a_data_dir_prepared_from_other_settings_is_refused_naming_the_keys(data, tmp_path):
    # data.dir exists, prepared at length 64 with folding; the run asks for 128 and no folding
    r = run_script(own_corpus_run(tmp_path, f"data.dir={data}", "data.max_seq_length=128",
                                  "data.fullwidth=false"))
    assert r.returncode == 2, r.stderr[-3000:]
    msg = error_line(r)
    assert f"data.dir {data} was prepared with other settings" in msg
    assert "data.fullwidth" in msg and "data.max_seq_length" in msg and "data.input" not in msg
    # another vocab of the same corpus
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(VOCAB.read_text(encoding="utf-8").replace("\n的\n", "\n的的\n", 1), encoding="utf-8")
    r = run_script(own_corpus_run(tmp_path, f"data.dir={data}", f"data.vocab={vocab}", "data.fullwidth=true"))
    assert r.returncode == 2 and "data.vocab (sha256)" in error_line(r), r.stderr[-3000:]


def test_without_data_input_the_run_records_the_data_it_trained_on(data, tmp_path):
    out = tmp_path / "run"
    # the run's own data section says 128 and no folding; the directory holds length-64 folded data
    r = run_script(overrides(data, out, "data.max_seq_length=128", "data.fullwidth=false", "train.max_steps=1"))
    assert r.returncode == 0, r.stderr[-3000:]
    recorded = yaml.safe_load((out / "config.yaml").read_text())["data"]
    prepared = json.loads((data / "prepare_config.json").read_text())["config"]
    assert recorded["max_seq_length"] == prepared["max_seq_length"] == 64
    assert recorded["fullwidth"] is True and recorded["input"] == prepared["input"]


def test_init_from_follows_the_checkpoints_normalisation_and_refuses_another(folded_checkpoint, tmp_path):
    # default (data.fullwidth unset): the data is prepared as the checkpoint's text was (folded)
    r = run_script(own_corpus_run(tmp_path / "a", f"model.init_from={folded_checkpoint}"))
    assert r.returncode == 0, r.stderr[-3000:]
    norm = json.loads((tmp_path / "a" / "data" / "tokenizer_config.json").read_text())["zhbert_text_normalization"]
    assert norm == {"fullwidth": True, "t2s": False}
    # an explicit other setting is refused, naming the override key ...
    r = run_script(own_corpus_run(tmp_path / "b", f"model.init_from={folded_checkpoint}", "data.fullwidth=false"))
    assert r.returncode == 2, r.stderr[-3000:]
    msg = error_line(r)
    assert "trained on text normalised with fullwidth=True" in msg and "train.allow_normalization_change" in msg
    # ... which lets it train anyway
    r = run_script(own_corpus_run(tmp_path / "b", f"model.init_from={folded_checkpoint}", "data.fullwidth=false",
                                  "train.allow_normalization_change=true"), PYTHONWARNINGS="default")
    assert r.returncode == 0 and "allow_normalization_change=true" in r.stderr, r.stderr[-3000:]


def test_default_preparation_does_not_fold(tmp_path):
    r = subprocess.run([sys.executable, "-m", "zhbert.cli", "prepare", "--input", str(SAMPLE), "--output",
                        str(tmp_path / "d"), "--vocab", str(VOCAB), "--max-seq-length", "64"],
                       env=cpu_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    config = json.loads((tmp_path / "d" / "prepare_config.json").read_text())["config"]
    assert config["fullwidth"] is False
