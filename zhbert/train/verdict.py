"""Did pretraining work? ``zhbert verdict RUN_DIR``: the run's newest checkpoint on its whole
validation split, against the baselines a model that learned nothing would reach.

- MLM: the model's loss and accuracy on the masked tokens of the whole validation split
  (batch b of 32 rows masked with ``batch_rng(train.eval_seed, 0, 0, b)``, as the trainer's eval) against the **unigram baseline**:
  predicting every masked token from the train split's token frequencies. Its accuracy is the
  share of masked tokens equal to the most frequent token; its loss is the mean of
  ``-log p(token)`` under those frequencies (add-one smoothed over the vocabulary). A model
  below the baseline learned nothing beyond character frequency.
- NSP / SOP: accuracy on the validation rows against 50%, a coin flip (the labels are
  balanced by construction).

The verdict says which of them the model beats, by how much, on how many tokens / rows.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from zhbert.errors import DataError


EVAL_BATCH = 32  # validation rows per forward; batch b masks with batch_rng(train.eval_seed, 0, 0, b)


@dataclass
class Verdict:
    checkpoint: str
    validation_instances: int
    masked_tokens: int
    mlm_loss: float
    mlm_acc: float
    unigram_loss: float  # the baseline's mean -log p(token) on the same masked tokens
    unigram_acc: float  # share of masked tokens equal to the train split's most frequent token
    pair_rows: int  # validation rows with an NSP/SOP label (0 with pair_mode none)
    pair_acc: Optional[float]
    pair_task: str  # nsp | sop | none

    @property
    def mlm_learned(self) -> bool:
        return self.mlm_acc > self.unigram_acc and self.mlm_loss < self.unigram_loss

    def lines(self) -> list[str]:
        """The final screen of the main job (also printed by ``zhbert verdict``)."""
        out = [f"Did pretraining work? {self.checkpoint}, whole validation split "
               f"({self.validation_instances:,} instances, {self.masked_tokens:,} masked tokens)",
               f"  masked LM  loss {self.mlm_loss:.3f} vs {self.unigram_loss:.3f} for the unigram baseline; "
               f"accuracy {100 * self.mlm_acc:.1f}% vs {100 * self.unigram_acc:.1f}%"]
        if self.pair_acc is not None:
            out.append(f"  {self.pair_task.upper():<9}  accuracy {100 * self.pair_acc:.1f}% vs 50% for a coin flip "
                       f"({self.pair_rows:,} rows)")
        if self.validation_instances < 64:
            out.append("  (a validation split this small gives noisy figures)")
        if not self.mlm_learned and self.mlm_acc > self.unigram_acc:
            out.append(f"  -> partly: it guesses masked characters better than their frequency "
                       f"({100 * self.mlm_acc:.1f}% vs {100 * self.unigram_acc:.1f}%) but its probabilities are not yet "
                       "better than frequency's (loss); train longer or at a higher lr")
        elif self.mlm_learned:
            out.append(f"  -> yes: the model predicts masked characters {self.mlm_acc / max(self.unigram_acc, 1e-9):.1f}x "
                       "as often as character frequency alone"
                       + ("" if self.pair_acc is None or self.pair_acc > 0.55 else
                          f"; the {self.pair_task.upper()} head is still at chance"))
        else:
            out.append("  -> no: the model does not beat character frequency; train longer or at a higher lr")
        return out


def _unigram(train, vocab_size: int, special_ids: set[int]):
    import numpy as np

    counts = np.zeros(vocab_size, dtype=np.int64)
    for batch in train.iter(batch_size=2048):
        ids = np.concatenate([np.asarray(x, dtype=np.int64) for x in batch["input_ids"]]) if batch["input_ids"] else []
        counts += np.bincount(ids, minlength=vocab_size)[:vocab_size] if len(ids) else 0
    for s in special_ids:
        counts[s] = 0
    probs = (counts + 1) / (counts.sum() + vocab_size)  # add-one smoothing
    return probs, int(counts.argmax())


def verdict(run_dir: str | Path, max_instances: Optional[int] = None) -> Verdict:
    """Score the newest complete checkpoint of ``run_dir`` (see module docstring)."""
    import numpy as np
    import torch

    from zhbert.config import PretrainConfig, from_dict
    from zhbert.model.modeling import BertForPreTraining
    from zhbert.prep.prepare import load_prepared
    from zhbert.prep.tokenizer import ChineseTokenizer
    from zhbert.train.checkpoint import checkpoints_dir, find_latest, read_meta
    from zhbert.train.collator import PretrainingCollator
    from zhbert.train.masking import VocabInfo
    from zhbert.train.collator import batch_rng
    from zhbert.train.order import rows_to_instances

    run = Path(run_dir)
    step = find_latest(checkpoints_dir(run))
    if step is None:
        raise DataError(f"{run}: no complete checkpoint under {checkpoints_dir(run)}")
    meta = read_meta(step)
    cfg = from_dict(PretrainConfig, meta.get("config") or {}, f"{step}/meta.json")
    data_dir = meta.get("data_dir") or cfg.data.dir
    dsets = load_prepared(data_dir)
    if "validation" not in dsets or len(dsets["validation"]) == 0:
        raise DataError(f"{data_dir}: no validation split to judge the run on")
    val = dsets["validation"]
    if max_instances:
        val = val.select(range(min(max_instances, len(val))))
    tokenizer = ChineseTokenizer.from_dir(step / "hf")
    collator = PretrainingCollator(VocabInfo.from_tokenizer(tokenizer), cfg.masking, cfg.data.max_seq_length)
    specials = {tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id}
    probs, top = _unigram(dsets["train"], tokenizer.vocab_size, specials)
    log_probs = torch.from_numpy(np.log(probs))
    model = BertForPreTraining.from_pretrained(step / "hf").eval()
    loss_sum = correct = masked = base_loss = base_correct = pair_correct = pair_rows = 0.0
    with torch.no_grad():
        for b, start in enumerate(range(0, len(val), EVAL_BATCH)):  # every row, the last batch too
            batch = collator(rows_to_instances(val[start:start + EVAL_BATCH]), batch_rng(cfg.train.eval_seed, 0, 0, b))
            out = model(**batch)
            labels = batch["labels"]
            sel = labels != -100
            n = float(out.mlm_count)
            loss_sum += float(out.mlm_loss) * n
            correct += float(out.mlm_correct)
            masked += n
            gold = labels[sel]
            base_loss += float(-log_probs[gold].sum())
            base_correct += float((gold == top).sum())
            pair_rows += float(out.nsp_count)
            pair_correct += float(out.nsp_correct)
    if masked == 0:
        raise DataError(f"{data_dir}: the validation split has no masked tokens")
    return Verdict(checkpoint=str(step), validation_instances=len(val), masked_tokens=int(masked),
                   mlm_loss=loss_sum / masked, mlm_acc=correct / masked, unigram_loss=base_loss / masked,
                   unigram_acc=base_correct / masked, pair_rows=int(pair_rows),
                   pair_acc=pair_correct / pair_rows if pair_rows else None, pair_task=cfg.data.pair_mode)


def write(v: Verdict, path: Path) -> None:
    data = asdict(v)
    data["mlm_learned"] = v.mlm_learned
    path.write_text(json.dumps({k: (None if isinstance(x, float) and not math.isfinite(x) else x)
                                for k, x in data.items()}, indent=2) + "\n", encoding="utf-8")
