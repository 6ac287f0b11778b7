"""Held-out MLM of an ablation row's final model at a given masking rate (the trainer's evaluate:
validation split, eval_seed 1234, 20 batches of 16, wwm). ROOT: the ablate.py --output of the
rows (default runs/ablate3, this table's), e.g. for table 5:
    ROOT=runs/ablate10r python mlm_at_rate.py 0.15 recipe r_char r_mask40"""
import sys, glob, torch
from zhbert.config import MaskingConfig
from zhbert.model.modeling import BertForPreTraining
from zhbert.prep.prepare import load_prepared
from zhbert.prep.tokenizer import ChineseTokenizer
from zhbert.train.collator import PretrainingCollator
from zhbert.train.masking import VocabInfo
from zhbert.train.order import ShardedBatches
torch.set_num_threads(1)
import os
root = os.environ.get("ROOT", "runs/ablate3")
data = f"{root}/data/fit_sop_128"
tok = ChineseTokenizer.from_dir(data)
val = load_prepared(data)["validation"]
for row in sys.argv[2:]:
    hf = sorted(glob.glob(f"{root}/{row}/pretrain/checkpoints/step_*/hf"), key=lambda p: int(p.split("step_")[1].split("/")[0]))[-1]
    model = BertForPreTraining.from_pretrained(hf).eval()
    col = PretrainingCollator(VocabInfo.from_tokenizer(tok), MaskingConfig(strategy="wwm", mask_prob=float(sys.argv[1])), 128)
    b = ShardedBatches(val, col, seed=1234, rank=0, world_size=1, micro_batch_size=16, shuffle=False, name="validation")
    ls = c = n = 0.0
    with torch.no_grad():
        for i in range(min(20, b.batches_per_epoch)):
            r = model(**b.batch(0, i))
            ls += float(r.mlm_loss) * float(r.mlm_count); c += float(r.mlm_correct); n += float(r.mlm_count)
    print(row, hf.split("/pretrain/")[1], f"mask {sys.argv[1]}: loss {ls/n:.4f} acc {100*c/n:.2f}%", flush=True)
