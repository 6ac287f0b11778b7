"""Held-out MLM of 30-minute models at one masking rate, on the same validation batches (the
trainer's evaluate: validation split, eval_seed 1234, 20 batches of 16), so that runs trained
at different rates or strategies are compared on one yardstick.

    python mlm_at_rate.py DATA_DIR STRATEGY RATE HF_DIR...
"""
import sys

import torch

from zhbert.config import MaskingConfig
from zhbert.model.modeling import BertForPreTraining
from zhbert.prep.prepare import load_prepared
from zhbert.prep.tokenizer import ChineseTokenizer
from zhbert.train.collator import PretrainingCollator
from zhbert.train.masking import VocabInfo
from zhbert.train.order import ShardedBatches

torch.set_num_threads(1)
data, strategy, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
tok = ChineseTokenizer.from_dir(data)
val = load_prepared(data)["validation"]
col = PretrainingCollator(VocabInfo.from_tokenizer(tok), MaskingConfig(strategy=strategy, mask_prob=rate), 128)
for hf in sys.argv[4:]:
    model = BertForPreTraining.from_pretrained(hf).eval()
    b = ShardedBatches(val, col, seed=1234, rank=0, world_size=1, micro_batch_size=16, shuffle=False,
                       name="validation")
    ls = c = n = 0.0
    with torch.no_grad():
        for i in range(min(20, b.batches_per_epoch)):
            r = model(**b.batch(0, i))
            ls += float(r.mlm_loss) * float(r.mlm_count)
            c += float(r.mlm_correct)
            n += float(r.mlm_count)
    print(f"{hf}: {strategy} {rate}: loss {ls / n:.4f} acc {100 * c / n:.2f}%", flush=True)
