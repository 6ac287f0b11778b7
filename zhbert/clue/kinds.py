"""What differs between CLUE task kinds, behind one interface the fine-tuning loop calls.

=============== ============================== =========================== ==================
kind            tasks                          model head (HF names)       selection metric
=============== ============================== =========================== ==================
classification  AFQMC TNEWS IFLYTEK CMNLI      BertForSequenceClassification accuracy
                OCNLI WSC CSL
span            CMRC2018                       BertForQuestionAnswering    EM (F1 reported)
choice          C3, ChID                       BertForMultipleChoice       accuracy
=============== ============================== =========================== ==================

A :class:`Kind` knows how to read a task's files into splits (:class:`~zhbert.clue.data.TaskData`),
build the model, turn a split into features (one per example; CMRC2018: one per context
window), pad a batch of features into model inputs, predict one answer per example (class id,
answer text, option index), score predictions, give the "learned nothing" floor (majority
class; for C3/ChID the most frequent gold option position), and write prediction files in
CLUE's submission format. :func:`zhbert.clue.finetune.finetune_seed` is the loop around them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Optional

from zhbert.clue.data import Split, TaskData, find_task_dir, load_task
from zhbert.clue.metrics import accuracy
from zhbert.clue.tasks import ClueTaskConfig, TaskSpec
from zhbert.errors import DataError


def subsample(examples: list, n: Optional[int]) -> list:
    """A fixed random subset of ``n`` examples in file order (``random.Random(0)``: the same
    for every seed, model and grid point), or all of them."""
    if n is None or len(examples) <= n:
        return examples
    keep = sorted(random.Random(0).sample(range(len(examples)), n))
    return [examples[i] for i in keep]


def _split(path: Path, examples: list) -> Split:
    return Split(path=path, examples=examples, rows=list(range(len(examples))))


def _pad(rows: list[list[int]], fill: int, T: int) -> list[list[int]]:
    return [r + [fill] * (T - len(r)) for r in rows]


class Kind:
    """Interface (and the classification implementation, the common case)."""

    name = "classification"
    metric = "accuracy"  # selects the best step / grid point
    metrics: tuple[str, ...] = ("accuracy",)  # all reported, metric first

    def __init__(self, spec: TaskSpec):
        self.spec = spec

    # -- data ----------------------------------------------------------------------------
    def load(self, data_dir, max_train_samples: Optional[int] = None, max_eval_samples: Optional[int] = None,
             train_file: Optional[Path] = None) -> TaskData:
        from zhbert.clue.data import load_split

        data = load_task(data_dir, self.spec, None, max_eval_samples)
        if train_file is not None:
            data.train = load_split(self.spec, Path(train_file), labeled=True)
            data.files["train"] = [Path(train_file)]
        if data.train is not None:
            data.train.examples = subsample(data.train.examples, max_train_samples)
        return data

    def labels(self, split: Split) -> list:
        return [e.label for e in split.examples]

    # -- model ---------------------------------------------------------------------------
    def model(self, model_dir):
        from zhbert.model.modeling import BertForSequenceClassification

        return BertForSequenceClassification.from_pretrained(model_dir, num_labels=self.spec.num_labels)

    def features(self, tokenizer, split: Split, cfg: ClueTaskConfig, train: bool) -> list[dict]:
        from zhbert.clue.finetune import encode

        enc = encode(tokenizer, split.examples, cfg.max_seq_length)
        for f, e in zip(enc, split.examples):
            if e.label is not None:
                f["labels"] = e.label
        return enc

    def collate(self, feats: list[dict], pad_id: int) -> dict:
        """(B, T) long tensors padded to the longest feature, + ``labels`` (B,) when present."""
        import torch

        T = max(len(f["input_ids"]) for f in feats)
        batch = {k: torch.tensor(_pad([f[k] for f in feats], fill, T), dtype=torch.long)
                 for k, fill in (("input_ids", pad_id), ("token_type_ids", 0), ("attention_mask", 0))}
        if "labels" in feats[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in feats], dtype=torch.long)
        return batch

    def _logits(self, model, feats: list[dict], cfg: ClueTaskConfig, device, pad_id: int, key: str = "logits"):
        """Model outputs ``key`` for every feature, in order, as float numpy rows (no labels fed)."""
        import numpy as np
        import torch

        from zhbert.clue.finetune import _autocast

        model.eval()
        out = []
        with torch.no_grad(), _autocast(device):
            for i in range(0, len(feats), cfg.eval_batch_size):
                chunk = [{k: v for k, v in f.items() if k not in ("labels", "start_positions", "end_positions")}
                         for f in feats[i:i + cfg.eval_batch_size]]
                batch = {k: v.to(device) for k, v in self.collate(chunk, pad_id).items()}
                res = model(**batch)
                if isinstance(key, tuple):
                    out.extend(zip(*(res[k].float().cpu().numpy() for k in key)))
                else:
                    out.extend(res[key].float().cpu().numpy())
        model.train()
        return out if isinstance(key, tuple) else np.asarray(out)

    def predict(self, model, split: Split, feats: list[dict], cfg: ClueTaskConfig, device, pad_id: int) -> list:
        return self._logits(model, feats, cfg, device, pad_id).argmax(-1).tolist() if feats else []

    def score(self, split: Split, predictions: list) -> dict[str, float]:
        return {"accuracy": accuracy(predictions, self.labels(split))}

    def floor(self, split: Split) -> Optional[dict]:
        """The score of a model that learned nothing, with its name (None when undefined)."""
        from zhbert.clue.report import majority_rate

        return {"name": "majority class", "value": majority_rate(self.labels(split))}

    # -- outputs -------------------------------------------------------------------------
    def dev_rows(self, split: Split, predictions: list) -> list[dict]:
        """One row per dev-file line, in file order; dropped rows ("-" labels) get null."""
        return [{"label": None if k is None else self.spec.labels[predictions[k]]} for k in split.rows]

    def submission(self, split: Split, predictions: list) -> str:
        """Text of the CLUE submission file for the test predictions (JSON lines here)."""
        rows = []
        for ex, p in zip(split.examples, predictions):
            row = {"id": ex.id, "label": self.spec.labels[p]}
            if self.spec.label_descs:
                row["label_desc"] = self.spec.label_descs[self.spec.labels[p]]
            rows.append(row)
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


class SpanKind(Kind):
    """CMRC2018: SQuAD-style span extraction (zhbert.clue.span), scored by the official script
    (zhbert.clue.cmrc_eval). No train file in a data dir: the trial set is trained on."""

    name = "span"
    metric = "em"
    metrics = ("em", "f1")
    TRAIN = ("train.json", "cmrc2018_train.json")
    TRIAL = ("trial.json", "cmrc2018_trial.json")
    DEV = ("dev.json", "cmrc2018_dev.json")
    TEST = ("test.json", "cmrc2018_test.json")

    def load(self, data_dir, max_train_samples=None, max_eval_samples=None, train_file=None) -> TaskData:
        from zhbert.clue.span import load_cmrc

        d = find_task_dir(data_dir, self.spec)
        first = lambda names: next((d / n for n in names if (d / n).is_file()), None)  # noqa: E731
        notes = []
        train_path = Path(train_file) if train_file else first(self.TRAIN)
        if train_path is None and first(self.TRIAL) is not None:
            train_path = first(self.TRIAL)
            notes.append(f"trained on the trial set ({train_path.name}): the data dir has no train file")
        dev_path, test_path = first(self.DEV), first(self.TEST)
        train = _split(train_path, subsample(load_cmrc(train_path, labeled=True, train=True), max_train_samples)) \
            if train_path else None
        dev = _split(dev_path, load_cmrc(dev_path, labeled=True, limit=max_eval_samples))
        if not dev.examples:
            raise DataError(f"{dev_path}: no questions to score CMRC2018 on")
        test = _split(test_path, load_cmrc(test_path, labeled=False)) if test_path else None
        files = {"train": [train_path] if train_path else [], "dev": [dev_path], "test": [test_path] if test_path else []}
        return TaskData(self.spec, d, train, dev, test, notes=notes, files=files)

    def model(self, model_dir):
        from zhbert.model.modeling import BertForQuestionAnswering

        return BertForQuestionAnswering.from_pretrained(model_dir)

    def features(self, tokenizer, split, cfg, train):
        from zhbert.clue.span import qa_features

        feats = qa_features(tokenizer, split.examples, max_seq_length=cfg.max_seq_length, doc_stride=cfg.doc_stride,
                            max_query_length=cfg.max_query_length, train=train)
        out = []
        for f in feats:
            row = {"input_ids": f.input_ids, "token_type_ids": f.token_type_ids, "attention_mask": f.attention_mask,
                   "_feature": f}
            if train:
                row["start_positions"], row["end_positions"] = f.start_position, f.end_position
            out.append(row)
        return out

    def collate(self, feats, pad_id):
        import torch

        batch = super().collate([{k: v for k, v in f.items() if k in ("input_ids", "token_type_ids", "attention_mask")}
                                 for f in feats], pad_id)
        if "start_positions" in feats[0]:
            for k in ("start_positions", "end_positions"):
                batch[k] = torch.tensor([f[k] for f in feats], dtype=torch.long)
        return batch

    def predict(self, model, split, feats, cfg, device, pad_id):
        from zhbert.clue.span import best_answers

        if not feats:
            return ["" for _ in split.examples]
        pairs = self._logits(model, [{k: v for k, v in f.items() if k != "_feature"} for f in feats], cfg, device,
                             pad_id, key=("start_logits", "end_logits"))
        features = [f["_feature"] for f in feats]
        starts = [s[:len(f.input_ids)] for (s, _), f in zip(pairs, features)]
        ends = [e[:len(f.input_ids)] for (_, e), f in zip(pairs, features)]
        best = best_answers(split.examples, features, starts, ends, n_best_size=cfg.n_best_size,
                            max_answer_length=cfg.max_answer_length)
        return [best.get(e.id, "") for e in split.examples]

    def score(self, split, predictions):
        from zhbert.clue.cmrc_eval import evaluate

        res = evaluate({e.id: e.answers for e in split.examples}, {e.id: p for e, p in zip(split.examples, predictions)})
        return {"em": res["em"], "f1": res["f1"]}

    def floor(self, split):
        return None  # no class prior for spans; an empty answer scores 0/0

    def dev_rows(self, split, predictions):
        return [{"id": e.id, "answer": p} for e, p in zip(split.examples, predictions)]

    def submission(self, split, predictions):
        return json.dumps({e.id: p for e, p in zip(split.examples, predictions)}, ensure_ascii=False, indent=1) + "\n"


class ChoiceKind(Kind):
    """C3 and ChID: one [CLS] pair per option through BertForMultipleChoice (zhbert.clue.choice).
    ChID in CLUE's own format decodes the blanks of a passage jointly."""

    name = "choice"

    def load(self, data_dir, max_train_samples=None, max_eval_samples=None, train_file=None) -> TaskData:
        from zhbert.clue import choice

        d = find_task_dir(data_dir, self.spec)
        notes: list[str] = []
        extra: dict = {}
        if self.spec.name == "c3":
            paths = {s: choice.c3_files(d, s) for s in ("train", "dev", "test")}
            read = lambda s, **kw: choice.load_c3(paths[s], **kw)  # noqa: E731
        else:
            paths, read, fmt = self._chid_files(d)
            notes.append(f"scored in the {fmt} format: "
                         + ("7 candidates, one blank; not comparable with CLUE 1.1's ChID"
                            if fmt == "FewCLUE" else "10 candidates, the blanks of a line decoded jointly"))
            if "test_public" in paths:
                extra["test_public"] = _split(paths["test_public"][0], read("test_public", labeled=True))
        if train_file is not None:
            paths["train"] = [Path(train_file)]
        train = _split(paths["train"][0], subsample(read("train", labeled=True), max_train_samples)) \
            if paths.get("train") else None
        dev = _split(paths["dev"][0], read("dev", labeled=True, limit=max_eval_samples))
        if not dev.examples:
            raise DataError(f"{paths['dev'][0]}: no questions to score {self.spec.title} on")
        test = _split(paths["test"][0], read("test", labeled=False)) if paths.get("test") else None
        files = {s: list(p) for s, p in paths.items()}
        return TaskData(self.spec, d, train, dev, test, extra=extra, notes=notes, files=files)

    @staticmethod
    def _chid_files(d: Path):
        """FewCLUE (train_few_all/dev_few_all/test_public/test) or CLUE 1.1 (train/dev/test + *_answer.json)."""
        from zhbert.clue import choice

        if (d / "dev_few_all.json").is_file():
            names = {"train": "train_few_all.json", "dev": "dev_few_all.json", "test_public": "test_public.json",
                     "test": "test.json"}
            paths = {s: [d / n] for s, n in names.items() if (d / n).is_file()}
            return paths, (lambda s, **kw: choice.load_chid_fewclue(paths[s][0], **kw)), "FewCLUE"
        paths = {s: [d / f"{s}.json"] for s in ("train", "dev", "test") if (d / f"{s}.json").is_file()}

        def read(s, labeled=True, limit=None):
            ans = paths[s][0].with_name(paths[s][0].stem + "_answer.json")
            if labeled and not ans.is_file():
                raise DataError(f"{ans}: ChID answer file not found (CLUE's ChID keeps the answers of "
                                f"{paths[s][0].name} in {ans.name})")
            return choice.load_chid_clue(paths[s][0], ans if labeled else None, labeled=labeled, limit=limit)

        return paths, read, "CLUE 1.1"

    def labels(self, split):
        return [e.label for e in split.examples]

    def model(self, model_dir):
        from zhbert.model.modeling import BertForMultipleChoice

        return BertForMultipleChoice.from_pretrained(model_dir)

    def features(self, tokenizer, split, cfg, train):
        from zhbert.clue.choice import choice_features

        feats = choice_features(tokenizer, split.examples, cfg.max_seq_length, task=self.spec.name)
        for f, e in zip(feats, split.examples):
            if e.label is not None:
                f["labels"] = e.label
        return feats

    def collate(self, feats, pad_id):
        """(B, C, T) long tensors: every option of every example padded to the longest."""
        import torch

        C = max(len(f["input_ids"]) for f in feats)
        T = max(len(r) for f in feats for r in f["input_ids"])
        batch = {}
        for k, fill in (("input_ids", pad_id), ("token_type_ids", 0), ("attention_mask", 0)):
            batch[k] = torch.tensor([_pad(f[k] + [[]] * (C - len(f[k])), fill, T) for f in feats], dtype=torch.long)
        if "labels" in feats[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in feats], dtype=torch.long)
        return batch

    def predict(self, model, split, feats, cfg, device, pad_id):
        from zhbert.clue.choice import joint_decode

        if not feats:
            return []
        return [int(x) for x in joint_decode(split.examples, self._logits(model, feats, cfg, device, pad_id))]

    def floor(self, split):
        from zhbert.clue.choice import majority_position_rate

        return {"name": "most frequent answer position", "value": majority_position_rate(split.examples)}

    def dev_rows(self, split, predictions):
        return [{"id": e.id, "label": p, "answer": e.options[p]} for e, p in zip(split.examples, predictions)]

    def submission(self, split, predictions):
        if self.spec.name == "chid" and any(e.group is not None for e in split.examples):
            # CLUE 1.1 ChID: one JSON object {"#idiom004441#": candidate index, ...}
            return json.dumps({e.id: p for e, p in zip(split.examples, predictions)}, ensure_ascii=False) + "\n"
        key = "answer" if self.spec.name == "chid" else "label"  # FewCLUE ChID rows: {"id", "answer"}
        return "".join(json.dumps({"id": e.id, key: p}, ensure_ascii=False) + "\n"
                       for e, p in zip(split.examples, predictions))


def kind_of(spec: TaskSpec) -> Kind:
    return {"classification": Kind, "span": SpanKind, "choice": ChoiceKind}[spec.kind](spec)
