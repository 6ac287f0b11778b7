"""Batch collation: pad a list of instances and draw a fresh MLM mask (dynamic masking).

Instances are the rows of the ``zhbert prepare`` output (docs/DESIGN.md): unpadded
``input_ids``, ``token_type_ids``, ``word_ids``, ``entity_ids`` (lists or numpy arrays, as
``datasets`` returns them) and ``next_sentence_label``. The collator pads them to the longest
row, rounded up to ``pad_to_multiple_of`` (tensor-core friendly) but never beyond
``max_seq_length``, and masks the whole padded batch in one vectorised call.

Dynamic masking: the mask is not stored, it is drawn here, so an instance seen in two epochs
gets two different masks. Reproducibility comes from the generator, which the trainer makes
fresh for every batch from the coordinates of that batch::

    rng = batch_rng(seed, epoch, rank, batch_index)  # = np.random.default_rng([seed, epoch, rank, batch_index])
    batch = collator(instances, rng)

so a resumed run (same seed, epoch, rank, batch index) re-draws exactly the same masks, and no
generator state has to be checkpointed or shared between DataLoader workers.

The masking budget's cap ``masking.max_predictions`` belongs to a sequence length; the
collator is where that length is known, so it resolves ``auto`` here (``self.max_predictions``,
ceil(mask_prob x max_seq_length): 20 at 128, 77 at 512) and warns, naming the key, when an
explicit cap is below it -- the 512-token phase with the 128-token cap of 20 predicts ~5% of
the tokens instead of 15%.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from zhbert.config import validate_masking
from zhbert.errors import ConfigError, DataError
from zhbert.train.masking import AUTO, IGNORE_INDEX, VocabInfo, auto_max_predictions, mask_batch


def batch_rng(seed: int, epoch: int, rank: int, batch_index: int) -> np.random.Generator:
    """The generator for one batch: independent streams for every (seed, epoch, rank, batch)."""
    parts = (seed, epoch, rank, batch_index)
    if any(int(x) < 0 for x in parts):
        raise ValueError(f"batch_rng needs non-negative integers, got {parts}")
    return np.random.default_rng([int(x) for x in parts])


class PretrainingCollator:
    """``collator(instances, rng) -> dict`` of (B, T) long tensors ``input_ids``,
    ``attention_mask``, ``token_type_ids``, ``labels`` (-100 = not predicted) and the (B,) long
    ``next_sentence_label`` (-100 where the data has none, i.e. pair_mode none)."""

    def __init__(self, vocab: VocabInfo, masking_cfg, max_seq_length: int, pad_to_multiple_of: int | None = 8):
        # The masking functions trust their config; this is where a config built in code
        # (not by load_config) meets the rules, the same ones (zhbert.config.validate_masking).
        validate_masking(masking_cfg, "PretrainingCollator")
        if max_seq_length < 2:
            raise ConfigError(f"max_seq_length: {max_seq_length} must be >= 2")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ConfigError(f"pad_to_multiple_of: {pad_to_multiple_of} must be >= 1 or None")
        self.vocab = vocab
        self.cfg = masking_cfg
        self.max_seq_length = int(max_seq_length)
        # the cap per sequence, resolved for this length (auto caps nothing: see zhbert/train/masking.py)
        auto = auto_max_predictions(masking_cfg.mask_prob, self.max_seq_length)
        self.max_predictions = auto if masking_cfg.max_predictions == AUTO else int(masking_cfg.max_predictions)
        if self.max_predictions < auto:
            warnings.warn(
                f"masking.max_predictions={self.max_predictions} caps the masked-LM budget below "
                f"mask_prob x max_seq_length = {masking_cfg.mask_prob:g} x {self.max_seq_length} -> {auto}: full-length "
                f"sequences get {100 * self.max_predictions / self.max_seq_length:.1f}% of their tokens "
                f"predicted instead of {100 * masking_cfg.mask_prob:g}%; set masking.max_predictions=auto",
                UserWarning, stacklevel=2)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.needs_words = masking_cfg.strategy != "char"
        self.needs_entities = masking_cfg.strategy == "entity"

    def padded_length(self, longest: int) -> int:
        """The batch width T for a longest row of ``longest`` tokens."""
        t = longest
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            t = -(-t // m) * m
        return min(t, self.max_seq_length)

    def __call__(self, instances: list[dict], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if not instances:
            raise ValueError("PretrainingCollator got an empty batch")
        rows = [np.asarray(x["input_ids"], dtype=np.int64) for x in instances]
        lengths = [r.size for r in rows]
        longest = max(lengths)
        if longest > self.max_seq_length:
            raise DataError(f"an instance has {longest} tokens but max_seq_length is {self.max_seq_length}; "
                            "prepare the data with a max_seq_length no larger than the model's")
        B, T = len(rows), self.padded_length(longest)

        input_ids = np.full((B, T), self.vocab.pad_id, dtype=np.int64)
        attention_mask = np.zeros((B, T), dtype=np.int64)
        token_type_ids = np.zeros((B, T), dtype=np.int64)
        word_ids = np.full((B, T), -1, dtype=np.int64) if self.needs_words else None
        entity_ids = np.full((B, T), -1, dtype=np.int64) if self.needs_entities else None
        nsp = np.full(B, IGNORE_INDEX, dtype=np.int64)
        for i, (inst, ids) in enumerate(zip(instances, rows)):
            n = ids.size
            input_ids[i, :n] = ids
            attention_mask[i, :n] = 1
            _fill(token_type_ids, i, inst, "token_type_ids", n, required=False)
            if word_ids is not None:
                _fill(word_ids, i, inst, "word_ids", n, required=True)
            if entity_ids is not None:
                _fill(entity_ids, i, inst, "entity_ids", n, required=True)
            label = inst.get("next_sentence_label")
            if label is not None:
                nsp[i] = int(label)

        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= self.vocab.vocab_size:
            raise DataError(f"token id {hi if hi >= self.vocab.vocab_size else lo} is outside the vocabulary "
                            f"(size {self.vocab.vocab_size}); was the data prepared with a different vocab?")
        masked, labels = mask_batch(input_ids, word_ids, entity_ids, self.cfg, self.vocab, rng)
        return {
            "input_ids": torch.from_numpy(masked),
            "attention_mask": torch.from_numpy(attention_mask),
            "token_type_ids": torch.from_numpy(token_type_ids),
            "labels": torch.from_numpy(labels),
            "next_sentence_label": torch.from_numpy(nsp),
        }


def _fill(dest: np.ndarray, i: int, inst: dict, name: str, n: int, required: bool) -> None:
    values = inst.get(name)
    if values is None:
        if required:
            raise DataError(f"instances lack the {name!r} column needed by this masking strategy "
                            "(re-run `zhbert prepare`, or use masking.strategy=char)")
        return
    values = np.asarray(values)
    if values.shape != (n,):
        raise DataError(f"instance column {name!r} has {values.size} entries but input_ids has {n}")
    dest[i, :n] = values
