"""`zhbert verdict RUN`: the newest checkpoint against the unigram and coin-flip baselines,
recomputed here from the prepared Arrow files with plain Python counting."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from _pretrain_fixtures import build_data, cpu_env, overrides, run_script


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    data = build_data(tmp_path_factory.mktemp("verdict_data"))
    out = tmp_path_factory.mktemp("verdict_run") / "run"
    r = run_script(overrides(data, out, "train.max_steps=3", "train.checkpoint_every=3"))
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_baselines_match_an_independent_count(run):
    import datasets

    from zhbert.config import PretrainConfig, from_dict
    from zhbert.prep.tokenizer import ChineseTokenizer
    from zhbert.train.collator import PretrainingCollator
    from zhbert.train.masking import VocabInfo
    from zhbert.train.collator import batch_rng
    from zhbert.train.order import rows_to_instances
    from zhbert.train.verdict import verdict

    v = verdict(run)
    step = run / "checkpoints" / "step_3"
    meta = json.loads((step / "meta.json").read_text())
    cfg = from_dict(PretrainConfig, meta["config"], "meta")
    dd = datasets.load_from_disk(meta["data_dir"])
    tok = ChineseTokenizer.from_dir(step / "hf")
    special = {tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id}
    counts = Counter(i for row in dd["train"]["input_ids"] for i in row if i not in special)
    top, total = counts.most_common(1)[0][0], sum(counts.values())
    # the masked tokens of the validation split under the eval seed
    collator = PretrainingCollator(VocabInfo.from_tokenizer(tok), cfg.masking, cfg.data.max_seq_length)
    rows = dd["validation"]
    gold = [int(x) for b, start in enumerate(range(0, len(rows), 32))
            for x in collator(rows_to_instances(rows[start:start + 32]), batch_rng(cfg.train.eval_seed, 0, 0, b))
            ["labels"].flatten() if x != -100]
    assert v.masked_tokens == len(gold) and v.validation_instances == len(dd["validation"])
    assert v.unigram_acc == pytest.approx(sum(g == top for g in gold) / len(gold))
    expected_loss = sum(-math.log((counts[g] + 1) / (total + tok.vocab_size)) for g in gold) / len(gold)
    assert v.unigram_loss == pytest.approx(expected_loss, rel=1e-9)
    assert 0 <= v.mlm_acc <= 1 and v.pair_task == "nsp" and v.pair_rows == len(dd["validation"])
    # three steps learn nothing: the verdict must say so
    assert not v.mlm_learned and v.lines()[-1].startswith("  -> no:")


def test_verdict_command_prints_the_screen_and_writes_json(run, tmp_path):
    r = subprocess.run([sys.executable, "-m", "zhbert", "verdict", str(run), "--json", str(tmp_path / "v.json")],
                       env=cpu_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("Did pretraining work?") and "unigram baseline" in r.stdout and "coin flip" in r.stdout
    saved = json.loads((tmp_path / "v.json").read_text())
    assert saved["mlm_learned"] is False and saved["masked_tokens"] > 0


def test_the_three_answers():
    from zhbert.train.verdict import Verdict

    def v(loss, acc):
        return Verdict("ck", 100, 1000, loss, acc, 6.4, 0.05, 100, 0.6, "nsp").lines()[-1]

    assert v(5.0, 0.20).startswith("  -> yes:") and "4.0x" in v(5.0, 0.20)
    assert v(6.5, 0.08).startswith("  -> partly:")
    assert v(6.5, 0.04).startswith("  -> no:") and v(5.0, 0.04).startswith("  -> no:")
