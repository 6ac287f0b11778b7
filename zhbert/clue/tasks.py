"""CLUE 1.1 classification tasks: what each file looks like and how a row becomes model input.

One :class:`TaskSpec` per task. A spec knows the CLUE directory name (``tnews_public``), its
file names, the label set (in a fixed order: label id i = ``labels[i]``), how to turn a JSON
row into ``(text_a, text_b)`` and the file name CLUE's 1.1 leaderboard expects for the test
predictions. Hyperparameters live apart in :class:`ClueTaskConfig` (configs/clue/<task>.yaml).

Two tasks need more than copying fields:

* CLUEWSC2020 marks the two spans inside the text, as CLUE's baseline
  (``baselines/models_pytorch/classifier_pytorch/processors/clue.py``, ``WscProcessor``) does:
  the candidate noun (span1) is wrapped in ``_`` and the pronoun (span2) in ``[`` ``]``::

      text   有些这样的“洋人”就站在大众之间……他们排在非凡的甲菜盆后面
      span1  洋人 (index 6)     span2  他们 (index 35)
      input  有些这样的“_洋人_”就站在大众之间……[他们]排在非凡的甲菜盆后面

* CSL joins the keyword list with a space (CLUE's ``CslProcessor``: ``" ".join(keyword)``)
  as the first segment; the abstract is the second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from zhbert.config import _check


@dataclass
class ClueTaskConfig:
    """Fine-tuning hyperparameters of one task (configs/clue/<task>.yaml; flags override)."""

    lr: float = 2e-5
    epochs: float = 3.0  # may be fractional: training stops after ceil(epochs * steps/epoch) steps
    batch_size: int = 32
    eval_batch_size: int = 64
    max_seq_length: int = 128
    warmup_ratio: float = 0.1  # share of the total steps with linearly rising lr
    weight_decay: float = 0.01  # not applied to biases and LayerNorm weights
    clip_grad_norm: float = 1.0  # 0 = off
    eval_every: int = 0  # evaluate on dev every N optimizer steps (0 = only at epoch ends)
    # reading comprehension only (CMRC2018): sliding windows and answer decoding
    doc_stride: int = 128  # tokens between the starts of two windows over a long context
    max_query_length: int = 64  # question tokens kept
    max_answer_length: int = 30  # longest answer (tokens) the decoder may return
    n_best_size: int = 20  # start/end candidates per window searched by the decoder

    def validate(self, where: str) -> None:
        _check(where, "lr", self.lr > 0, "must be > 0")
        _check(where, "epochs", self.epochs > 0, "must be > 0")
        for key in ("batch_size", "eval_batch_size"):
            _check(where, key, getattr(self, key) >= 1, "must be >= 1")
        _check(where, "max_seq_length", 8 <= self.max_seq_length <= 512, "must be in [8, 512]")
        _check(where, "warmup_ratio", 0 <= self.warmup_ratio < 1, "must be in [0, 1)")
        _check(where, "weight_decay", self.weight_decay >= 0, "must be >= 0")
        _check(where, "clip_grad_norm", self.clip_grad_norm >= 0, "must be >= 0 (0 = off)")
        _check(where, "eval_every", self.eval_every >= 0, "must be >= 0 (0 = epoch ends only)")
        _check(where, "doc_stride", self.doc_stride >= 1, "must be >= 1")
        for key in ("max_query_length", "max_answer_length", "n_best_size"):
            _check(where, key, getattr(self, key) >= 1, "must be >= 1")


def load_task_config(path, overrides: Optional[list[str]] = None) -> ClueTaskConfig:
    """configs/clue/<task>.yaml (flat keys of :class:`ClueTaskConfig`) + ``key=value`` overrides."""
    from zhbert.config import load_config

    return load_config(path, overrides, cls=ClueTaskConfig)


Texts = tuple[str, Optional[str]]


@dataclass(frozen=True)
class TaskSpec:
    name: str  # our name: afqmc, tnews, ...
    dir_name: str  # CLUE's directory: afqmc_public, ...
    train_file: str
    dev_file: str
    test_file: str
    labels: tuple[str, ...]  # label id i <-> labels[i] (the strings written in the files)
    texts: Optional[Callable[[dict], Texts]]  # JSON row -> (text_a, text_b or None); None: not a classification task
    submission_file: str  # CLUE 1.1 leaderboard file name for the test predictions
    title: str = ""
    label_descs: Optional[dict[str, str]] = None  # TNEWS: label -> label_desc (submission)
    drop_label: Optional[str] = None  # rows with this label are dropped (NLI: "-")
    kind: str = "classification"  # classification | span (CMRC2018) | choice (C3, ChID): see zhbert.clue.kinds
    alt_dirs: tuple[str, ...] = ()  # other folder names the task is found under (chid_fewclue)
    alt_dev_files: tuple[str, ...] = ()  # other names of the dev file (cmrc2018_dev.json, c3-d-dev.json ...)

    @property
    def num_labels(self) -> int:
        return len(self.labels)


def _fields(a: str, b: Optional[str] = None) -> Callable[[dict], Texts]:
    return lambda row: (str(row[a]), str(row[b]) if b else None)


def mark_wsc_spans(text: str, target: dict) -> str:
    """Insert ``_`` around span1 (the noun) and ``[``/``]`` around span2 (the pronoun).

    Character indices refer to ``text`` (CLUE's ``span*_index``); raises ValueError when the
    span text is not at its index (the loader turns that into file:line).
    """
    i1, t1 = int(target["span1_index"]), str(target["span1_text"])
    i2, t2 = int(target["span2_index"]), str(target["span2_text"])
    for k, (i, t) in enumerate(((i1, t1), (i2, t2)), 1):
        if text[i:i + len(t)] != t:
            raise ValueError(f"span{k}_text {t!r} is not at span{k}_index {i} (found {text[i:i + len(t)]!r})")
    # Insert from the right so that the earlier indices stay valid.
    marks = sorted([(i1, "_", len(t1), "_"), (i2, "[", len(t2), "]")], reverse=True)
    for i, left, n, right in marks:
        text = text[:i] + left + text[i:i + n] + right + text[i + n:]
    return text


def _wsc(row: dict) -> Texts:
    return mark_wsc_spans(str(row["text"]), row["target"]), None


def _csl(row: dict) -> Texts:
    keywords = row["keyword"]
    if not isinstance(keywords, list):
        raise ValueError(f"keyword must be a list, got {type(keywords).__name__}")
    return " ".join(str(k) for k in keywords), str(row["abst"])


TNEWS_LABEL_DESCS = {
    "100": "news_story", "101": "news_culture", "102": "news_entertainment", "103": "news_sports",
    "104": "news_finance", "106": "news_house", "107": "news_car", "108": "news_edu",
    "109": "news_tech", "110": "news_military", "112": "news_travel", "113": "news_world",
    "114": "news_stock", "115": "news_agriculture", "116": "news_game",
}
NLI_LABELS = ("entailment", "neutral", "contradiction")

TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("afqmc", "afqmc_public", "train.json", "dev.json", "test.json", ("0", "1"),
             _fields("sentence1", "sentence2"), "afqmc_predict.json", "AFQMC"),
    TaskSpec("tnews", "tnews_public", "train.json", "dev.json", "test.json", tuple(TNEWS_LABEL_DESCS),
             _fields("sentence"), "tnews11_predict.json", "TNEWS", label_descs=TNEWS_LABEL_DESCS),
    TaskSpec("iflytek", "iflytek_public", "train.json", "dev.json", "test.json",
             tuple(str(i) for i in range(119)), _fields("sentence"), "iflytek_predict.json", "IFLYTEK"),
    TaskSpec("cmnli", "cmnli_public", "train.json", "dev.json", "test.json", NLI_LABELS,
             _fields("sentence1", "sentence2"), "cmnli_predict.json", "CMNLI", drop_label="-"),
    TaskSpec("ocnli", "ocnli_public", "train.50k.json", "dev.json", "test.json", NLI_LABELS,
             _fields("sentence1", "sentence2"), "ocnli_50k_predict.json", "OCNLI", drop_label="-"),
    TaskSpec("wsc", "cluewsc2020_public", "train.json", "dev.json", "test.json", ("true", "false"),
             _wsc, "cluewsc11_predict.json", "WSC"),
    TaskSpec("csl", "csl_public", "train.json", "dev.json", "test.json", ("0", "1"),
             _csl, "csl_predict.json", "CSL"),
    # Reading comprehension: files and formats in zhbert.clue.span / zhbert.clue.choice.
    TaskSpec("cmrc2018", "cmrc2018_public", "train.json", "dev.json", "test.json", (), None,
             "cmrc2018_predict.json", "CMRC2018", kind="span", alt_dev_files=("cmrc2018_dev.json",)),
    TaskSpec("chid", "chid_public", "train.json", "dev.json", "test.json", (), None,
             "chid11_predict.json", "ChID", kind="choice", alt_dirs=("chid_fewclue",),
             alt_dev_files=("dev_few_all.json",)),
    TaskSpec("c3", "c3_public", "d-train.json", "d-dev.json", "test1.1.json", (), None,
             "c311_predict.json", "C3", kind="choice", alt_dev_files=("c3-d-dev.json", "m-dev.json", "c3-m-dev.json")),
)}
CLASSIFICATION = tuple(t for t in TASKS if TASKS[t].kind == "classification")
ALIASES = {"cluewsc2020": "wsc", "cluewsc": "wsc", "tnews11": "tnews", "ocnli_50k": "ocnli", "cmrc": "cmrc2018",
           "c311": "c3", "chid11": "chid"}


def parse_tasks(text: str) -> list[TaskSpec]:
    """``"tnews,ocnli"`` or ``"all"`` -> specs in CLUE's order; unknown names -> ConfigError."""
    from zhbert.errors import ConfigError

    if text.strip().lower() == "all":
        return list(TASKS.values())
    out: list[TaskSpec] = []
    for name in (n.strip().lower() for n in text.split(",") if n.strip()):
        name = ALIASES.get(name, name)
        if name not in TASKS:
            raise ConfigError(f"--tasks: unknown CLUE task {name!r}; choose from {', '.join(TASKS)} or all")
        if TASKS[name] not in out:
            out.append(TASKS[name])
    if not out:
        raise ConfigError("--tasks: no task given")
    return out
