"""The DeepSpeed JSON with a user's file / deepspeed.extra merged in (--deepspeed_config),
the plain progress lines without a terminal, and the wandb names (issue #11, items 7-10).

The wandb check reads the offline run's transaction log itself (LevelDB log framing of
wandb's protobuf records), not through wandb, so it sees what a `wandb sync` would upload.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from _pretrain_fixtures import build_data, overrides, run_script
from zhbert.config import load_config
from zhbert.train.ds_config import AUTOCAST_MIN_DEEPSPEED, _deepspeed_version, build_ds_config
from zhbert.errors import ConfigError


def ds(extra: dict | None = None, *ov: str, hidden: int = 64) -> dict:
    cfg = load_config(None, ["train.micro_batch_size=16", "train.gradient_accumulation_steps=2", *ov])
    cfg.deepspeed.extra = extra or {}
    return build_ds_config(cfg, world_size=4, device_type="cpu", hidden_size=hidden)


def test_auto_values_are_filled_from_the_config():
    got = ds({"train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
              "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
              "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "amsgrad": False}},
              "bf16": {"enabled": "auto"}, "zero_optimization": {"stage": "auto", "reduce_bucket_size": "auto",
                                                                  "stage3_prefetch_bucket_size": "auto"}})
    assert got["train_micro_batch_size_per_gpu"] == 16 and got["gradient_accumulation_steps"] == 2
    assert got["train_batch_size"] == 16 * 2 * 4 and got["gradient_clipping"] == 1.0
    assert got["optimizer"]["params"]["lr"] == 5e-4 and got["optimizer"]["params"]["betas"] == [0.9, 0.999]
    assert got["optimizer"]["params"]["amsgrad"] is False  # a param zhbert does not derive is kept
    assert got["bf16"] == {"enabled": False} and got["zero_optimization"]["stage"] == 0
    assert got["zero_optimization"]["reduce_bucket_size"] == 64 * 64
    assert got["zero_optimization"]["stage3_prefetch_bucket_size"] == int(0.9 * 64 * 64)
    assert "auto" not in json.dumps(got)


@pytest.mark.parametrize("extra, key, source", [
    ({"train_micro_batch_size_per_gpu": 32}, "train_micro_batch_size_per_gpu is 32", "train.micro_batch_size"),
    ({"train_batch_size": 64}, "train_batch_size is 64", "world size"),
    ({"zero_optimization": {"stage": 2}}, "zero_optimization.stage is 2", "deepspeed.zero_stage"),
    ({"bf16": {"enabled": True}}, "bf16.enabled is true", "deepspeed.precision"),
    ({"torch_autocast": {"enabled": True}}, "torch_autocast.enabled is true", "deepspeed.autocast"),
    ({"optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}}, "optimizer.params.lr is 0.001", "train.lr"),
    ({"scheduler": {"type": "WarmupLR"}}, 'scheduler.type is "WarmupLR"', "train.decay"),
])
def test_a_derived_key_that_disagrees_is_refused_naming_it(extra, key, source):
    with pytest.raises(ConfigError) as e:
        ds(extra)
    assert key in str(e.value) and source in str(e.value)


@pytest.mark.skipif(_deepspeed_version() < AUTOCAST_MIN_DEEPSPEED, reason="DeepSpeed < 0.17.2: no torch_autocast")
def test_autocast_maps_to_deepspeeds_torch_autocast():
    assert "torch_autocast" not in ds()
    assert ds(None, "deepspeed.autocast=bf16")["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    # repeating the derived value is fine; another dtype is refused, naming the key
    assert ds({"torch_autocast": {"enabled": True, "dtype": "bfloat16"}}, "deepspeed.autocast=bf16")["torch_autocast"][
        "enabled"] is True
    with pytest.raises(ConfigError, match='torch_autocast.dtype is "float16".*deepspeed.autocast'):
        ds({"torch_autocast": {"dtype": "float16"}}, "deepspeed.autocast=bf16")


def test_autocast_refused_in_one_line_where_deepspeed_ignores_it(monkeypatch):
    import zhbert.train.ds_config as dsc

    monkeypatch.setattr(dsc, "_deepspeed_version", lambda: (0, 14, 4))
    with pytest.raises(ConfigError) as e:
        ds(None, "deepspeed.autocast=bf16")
    assert str(e.value) == ("deepspeed.autocast=bf16 needs DeepSpeed >= 0.17.2 (its torch_autocast section); "
                            "installed: 0.14.4")
    assert "torch_autocast" not in ds()  # autocast off: any DeepSpeed


def test_equal_values_pass_and_unknown_autos_are_refused():
    assert ds({"train_micro_batch_size_per_gpu": 16, "wall_clock_breakdown": True})["wall_clock_breakdown"] is True
    with pytest.raises(ConfigError, match='comms_logger.verbose is "auto"'):
        ds({"comms_logger": {"verbose": "auto"}})


def test_config_file_errors_name_the_file(tmp_path):
    f = tmp_path / "ds.json"
    for text, what in [(None, "not found"), ("{not json", "not valid JSON"), ("[1]", "must be a JSON object")]:
        if text is not None:
            f.write_text(text)
        with pytest.raises(ConfigError, match=f"deepspeed.config_file: {f}.*{what}"):
            ds(None, f"deepspeed.config_file={f}")
        f.unlink(missing_ok=True)


def wandb_records(run_dir: Path) -> tuple[set, dict]:
    """(history keys, run config) of an offline wandb run, from its ``.wandb`` file.

    The file is a LevelDB log: a 7-byte header, then 32 KiB blocks of records, each
    ``crc32 (4) | length (2, LE) | type (1)`` + data; type 1 = whole record, 2/3/4 = first,
    middle, last fragment. Each record is a ``wandb_internal_pb2.Record``.
    """
    from wandb.proto import wandb_internal_pb2

    (path,) = list(run_dir.glob("*.wandb"))
    raw = path.read_bytes()
    keys, config, pos, buf = set(), {}, 7, b""
    while pos + 7 <= len(raw):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(buf + data if kind == 4 else data)
            buf = b""
            which = rec.WhichOneof("record_type")
            if which == "history":
                keys |= {i.key or "/".join(i.nested_key) for i in rec.history.item}
            elif which in ("run", "config"):
                updates = rec.run.config.update if which == "run" else rec.config.update
                config.update({u.key: json.loads(u.value_json) for u in updates})
        elif kind in (2, 3):
            buf += data
    return keys, config


def test_deepspeed_config_flag_progress_lines_and_wandb_names(tmp_path_factory, tmp_path):
    data = build_data(tmp_path_factory.mktemp("dsconfig_data"))
    f = tmp_path / "ds.json"
    f.write_text(json.dumps({"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
                             "train_batch_size": "auto", "optimizer": {"type": "AdamW", "params": {"lr": "auto"}},
                             "zero_optimization": {"stage": "auto"}, "wall_clock_breakdown": False}))
    out = tmp_path / "run"
    r = run_script(["--deepspeed", "--deepspeed_config", str(f),
                    *overrides(data, out, "wandb.mode=offline", "train.log_every=2", "train.eval_every=4")])
    assert r.returncode == 0, r.stderr[-3000:]
    written = json.loads((out / "ds_config.json").read_text())
    assert written["train_micro_batch_size_per_gpu"] == 2 and written["optimizer"]["params"]["lr"] == 2e-3
    # stdout is a pipe here: one plain line per logged step (steps 1, 2, 4), the wandb run, the end
    lines = [x for x in r.stdout.splitlines() if x.startswith("[zhbert] step ")]
    assert [x.split("|")[0].strip() for x in lines] == ["[zhbert] step 1/4", "[zhbert] step 2/4", "[zhbert] step 4/4"]
    assert all(" | loss " in x and " | lr " in x and " tok/s" in x for x in lines) and "ETA" in lines[0]
    assert "[zhbert] wandb run " in r.stdout and "wandb sync" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("pretrain: done at step 4; loss ")
    (run_dir,) = list((out / "wandb").glob("offline-run-*"))
    keys, config = wandb_records(run_dir)
    assert {"train/loss", "train/lr", "train/grad_norm", "train/epoch", "perf/tokens_per_s",
            "perf/samples_per_s", "eval/mlm_acc"} <= keys
    assert not {"lr", "grad_norm", "epoch", "tokens/s", "samples/s"} & keys
    assert config["model_config"]["hidden_size"] == 64 and config["model_config"]["vocab_size"] > 1000
    assert config["world_size"] == 1 and config["global_batch_size"] == 2


def test_multinode_launch_without_deepspeed_env_warns(tmp_path, monkeypatch):
    from zhbert.train.launch import multinode_env_warning

    monkeypatch.chdir(tmp_path)
    env = {"WORLD_SIZE": "16", "LOCAL_SIZE": "8", "CROSS_SIZE": "2", "WANDB_PROJECT": "x", "HF_HOME": "/h"}
    msg = multinode_env_warning(env, home=str(tmp_path / "home"))
    assert msg and "HF_HOME, WANDB_PROJECT" in msg and ".deepspeed_env" in msg
    assert multinode_env_warning({"WORLD_SIZE": "8", "LOCAL_SIZE": "8"}, home=str(tmp_path)) is None
    (tmp_path / ".deepspeed_env").write_text("WANDB_PROJECT=x\n")
    assert multinode_env_warning(env, home=str(tmp_path / "home")) is None
