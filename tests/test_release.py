"""`zhbert release`: a tiny pretraining checkpoint -> HF dir + model card + SHA256SUMS + tar.gz.

The checkpoint is built here in the trainer's layout (RUN/checkpoints/step_<N>/{hf/, meta.json}
+ RUN/metrics.jsonl + the data dir's stats.json), from a randomly initialised tiny model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

from zhbert.errors import CheckpointError, ZhbertError

CHARS = ("的一是了我不人在他有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会家可下而过天去能对"
         "小多然于心学么之都好看起发当没成只如事把还用第样道想作种开美总从无情己面最女但现前些所同日手又行意"
         "动方期它头经长儿回位分爱老因很给名法间斯知世什两次使身者被高已亲其进此话常与活正感北京天气今很好")


def make_checkpoint(root: Path, step: int = 20, seed: int = 0, heads: bool = True) -> Path:
    """RUN/checkpoints/step_<step>/ of a random tiny BertForPreTraining; returns the step dir."""
    from zhbert.model.modeling import BertConfig, BertForPreTraining
    from zhbert.prep.tokenizer import ChineseTokenizer, special_layout

    tokens = special_layout() + list(dict.fromkeys(CHARS))
    tok = ChineseTokenizer(tokens)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    run = root / "run"
    step_dir = run / "checkpoints" / f"step_{step}"
    hf = step_dir / "hf"
    BertForPreTraining(cfg).save_pretrained(hf)
    tok.save(hf)
    if not heads:  # an encoder-only export: strip the MLM/NSP heads
        from safetensors.torch import load_file, save_file

        sd = load_file(str(hf / "model.safetensors"))
        save_file({k: v for k, v in sd.items() if not k.startswith("cls.")}, str(hf / "model.safetensors"))
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "stats.json").write_text(json.dumps(  # as `zhbert prepare` writes it
        {"documents": 12, "train_documents": 11, "sentences": 80, "chars": 7000, "instances": 104,
         "train_instances": 100, "validation_instances": 4, "tokens": 6250}))
    meta = {"step": step, "samples_seen": 32 * step, "tokens_seen": 2048 * step, "world_size": 1,
            "precision": "fp32", "data_dir": str(data.resolve()),  # as the trainer writes meta.json
            "config": {"data": {"dir": "relative/elsewhere", "pair_mode": "nsp", "max_seq_length": 64},
                       "masking": {"strategy": "wwm"},
                       "train": {"lr": 5e-4, "micro_batch_size": 32, "gradient_accumulation_steps": 1}},
            "complete": True}  # written last by the trainer: the step is finished
    (step_dir / "meta.json").write_text(json.dumps(meta))
    rows = [{"step": 10, "loss": 7.0, "mlm_loss": 6.3, "nsp_loss": 0.7, "lr": 1e-4},
            {"step": step, "loss": 6.25, "mlm_loss": 5.5, "nsp_loss": 0.75, "mlm_acc": 0.1, "lr": 5e-4,
             "eval/mlm_loss": 5.75, "eval/nsp_loss": 0.75, "eval/loss": 6.5},  # eval shares the row
            {"step": step + 10, "loss": 1.0, "mlm_loss": 0.5, "nsp_loss": 0.5}]  # after this checkpoint
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 9')
    return step_dir


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    from zhbert.release import build_release

    root = tmp_path_factory.mktemp("release")
    step_dir = make_checkpoint(root)
    rel = build_release(step_dir, root / "dist" / "zhbert-tiny", tar=True,
                        url_placeholder="http://example.invalid/zhbert-tiny.tar.gz")
    return step_dir, rel


def test_bundle_files_and_manifest(released):
    _, rel = released
    d = rel.directory
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
            "README.md", "SHA256SUMS", "pretraining_meta.json", "registry_entry.yaml"} <= names
    listed = {}
    for line in (d / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == digest
    assert set(listed) == names - {"SHA256SUMS", "registry_entry.yaml"}
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=d, check=True)


def test_bundle_has_both_heads_and_loads_in_transformers(released):
    from safetensors.torch import load_file

    from zhbert.model.modeling import BertForPreTraining

    step_dir, rel = released
    sd = load_file(str(rel.directory / "model.safetensors"))
    assert "cls.predictions.transform.dense.weight" in sd and "cls.seq_relationship.weight" in sd
    transformers = pytest.importorskip("transformers")
    ours = BertForPreTraining.from_pretrained(step_dir / "hf").eval()
    ref = transformers.BertForPreTraining.from_pretrained(str(rel.directory)).eval()
    ids = torch.tensor([[102, 104, 110, 120, 103, 130, 140, 103]])
    tt = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1]])
    with torch.no_grad():
        a = ours(input_ids=ids, token_type_ids=tt)
        b = ref(input_ids=ids, token_type_ids=tt)
    torch.testing.assert_close(a.prediction_logits, b.prediction_logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.seq_relationship_logits, b.seq_relationship_logits, atol=1e-5, rtol=1e-4)


def test_model_card_contents(released):
    _, rel = released
    card = (rel.directory / "README.md").read_text()
    vocab_size = len((rel.directory / "vocab.txt").read_text().splitlines())
    assert f"**{vocab_size:,}** tokens" in card
    assert "| 2 | 32 | 2 | 64 | 64 | gelu | false |" in card  # layers hidden heads inter pos act preLN
    assert "| masking strategy | wwm |" in card
    assert "| optimizer steps | 20 |" in card
    assert "| tokens seen | 40,960 |" in card
    # The last train row at or before step 20 (not the later one, not the torn last line).
    assert "loss 6.2500, mlm_loss 5.5000, nsp_loss 0.7500" in card
    assert "| final eval loss (step 20) | eval/mlm_loss 5.7500, eval/nsp_loss 0.7500, eval/loss 6.5000 |" in card
    assert "| batch (sequences per step) | 32 (32 × 1 accumulation × 1 ranks) |" in card
    assert "| documents | 12 |" in card and "| instances | 104 |" in card and "| tokens | 6,250 |" in card
    assert "CLUE" not in card.split("## Use")[0]  # no results given
    # the tokenizer class that gives the pretraining ids, and no path of the machine it was built on
    assert "AutoTokenizer.from_pretrained" in card and "BertTokenizerFast.from_pretrained" not in card
    meta = json.loads((rel.directory / "zhbert_meta.json").read_text()) if (rel.directory / "zhbert_meta.json").exists() else {}
    for path in filter(None, [meta.get("data_dir"), str(Path(__file__).resolve().parents[1]), "/tmp/"]):
        assert path not in card, path


def test_tarball_is_deterministic_and_registry_entry_matches(released, tmp_path):
    from zhbert.hub import load_registry, sha256_file
    from zhbert.release import build_release

    step_dir, rel = released
    assert rel.tarball == rel.directory.parent / "zhbert-tiny.tar.gz"
    assert sha256_file(rel.tarball) == rel.sha256 and rel.tarball.stat().st_size == rel.size
    with tarfile.open(rel.tarball) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names[0] == "zhbert-tiny" and names[1:] == sorted(names[1:])
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    assert "zhbert-tiny/registry_entry.yaml" not in names and "zhbert-tiny/SHA256SUMS" in names
    again = build_release(step_dir, tmp_path / "other" / "zhbert-tiny", tar=True)
    assert again.sha256 == rel.sha256  # same checkpoint, same bytes

    reg = load_registry([rel.directory / "registry_entry.yaml"], builtin=False, env=False)
    e = reg["zhbert-tiny"]
    assert (e.url, e.sha256, e.size, e.format) == ("http://example.invalid/zhbert-tiny.tar.gz", rel.sha256,
                                                   rel.size, "tar.gz")


def test_release_without_tar_gives_files_entry(tmp_path):
    from zhbert.hub.registry import load_registry
    from zhbert.release import build_release

    rel = build_release(make_checkpoint(tmp_path), tmp_path / "out" / "plain", name="zh-plain")
    assert rel.tarball is None
    e = load_registry([rel.directory / "registry_entry.yaml"], builtin=False, env=False)["zh-plain"]
    assert e.format == "files" and e.url.endswith("/")
    assert e.files["model.safetensors"] == hashlib.sha256(
        (rel.directory / "model.safetensors").read_bytes()).hexdigest()


def test_clue_results_in_card(tmp_path):
    from zhbert.release import build_release

    results = {"model": "zhbert-tiny", "seeds": [1, 2],
               "tasks": {"afqmc": {"max": 0.7, "mean": 0.69, "train_size": 10, "dev_size": 5,
                                   "dropped": {"train": 0, "dev": 0},
                                   "hyperparameters": {"lr": 2e-5, "epochs": 3, "batch_size": 32,
                                                       "max_seq_length": 128},
                                   "seeds": {"1": {"dev_accuracy": 0.7}, "2": {"dev_accuracy": 0.68}}}},
               "clue_average": {"max": 0.7, "mean": 0.69}, "skipped": {}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    rel = build_release(make_checkpoint(tmp_path), tmp_path / "a", results=tmp_path / "results.json")
    card = (rel.directory / "README.md").read_text()
    assert "## CLUE (dev)" in card and "70.00 (69.00)" in card
    assert (rel.directory / "clue_results.json").is_file()
    # A results file of another shape still gives a (generic) table, not a crash.
    (tmp_path / "odd.json").write_text(json.dumps({"tasks": {"tnews": {"max": 0.5}}}))
    rel = build_release(tmp_path / "run", tmp_path / "b", results=tmp_path / "odd.json")  # run dir: newest step
    assert "| tnews | 50.00 |" in (rel.directory / "README.md").read_text()


def test_release_errors(tmp_path):
    from zhbert.release import build_release

    step_dir = make_checkpoint(tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(ZhbertError, match="not empty"):
        build_release(step_dir, tmp_path / "full")
    with pytest.raises(CheckpointError, match="not found"):
        build_release(tmp_path / "nope", tmp_path / "o1")
    with pytest.raises(CheckpointError, match="MLM or NSP head"):
        build_release(make_checkpoint(tmp_path / "y", heads=False), tmp_path / "o2")
    assert not (tmp_path / "o2").exists()  # nothing half-built left behind
    cfg = json.loads((step_dir / "hf" / "config.json").read_text())
    cfg["hidden_size"] = 64
    cfg["intermediate_size"] = 128
    (step_dir / "hf" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"x/run/checkpoints/step_20/hf.*tensor bert\.embeddings\.\S+ has shape"):
        build_release(step_dir, tmp_path / "o3")
    assert not (tmp_path / "o3").exists()


def test_release_cli(tmp_path, capsys):
    from zhbert.cli import main

    step_dir = make_checkpoint(tmp_path)
    assert main(["release", str(step_dir), str(tmp_path / "dist" / "r"), "--tar", "--name", "zh-r"]) == 0
    out = capsys.readouterr().out
    entry = yaml.safe_load(out)["checkpoints"]["zh-r"]
    assert entry["format"] == "tar.gz" and (tmp_path / "dist" / "zh-r.tar.gz").stat().st_size == entry["size"]
    assert main(["release", str(tmp_path / "missing"), str(tmp_path / "o")]) == 2
