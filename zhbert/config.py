"""Typed configuration: YAML files -> dataclasses, one section per concern.

Precedence is defaults < YAML file < command-line overrides (``section.key=value``). Every
error names the file and the dotted key: unknown keys, wrong types and impossible values are
rejected before any work starts. Cross-field checks live in each section's ``validate``.

    cfg = load_config("configs/pretrain/tiny.yaml", ["train.max_steps=20"])
    cfg.train.max_steps  # 20

Override values are parsed as YAML scalars/flow collections, so ``train.seed=3`` is an int,
``wandb.tags=[a,b]`` a list and ``model.init_from=null`` None.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from zhbert.errors import ConfigError

# ---------------------------------------------------------------------------------------
# Sections


@dataclass
class DataConfig:
    """Corpus preparation (``zhbert prepare``) and where training reads instances."""

    input: list[str] = field(default_factory=list)
    """corpus files or directories."""
    dir: str = "runs/data/sample"
    """output of `zhbert prepare` (read by training)"""
    vocab: str = "configs/vocab/sample_vocab.txt"
    """BERT vocab.txt (built from corpora/sample)"""
    format: str = "auto"
    """auto | bert | plain | jsonl | wiki | wikidump (a MediaWiki XML dump, .xml.bz2) | parquet | datasets
    (a save_to_disk folder); docs/data.md "Input formats"."""
    text_field: str = "text"
    """jsonl field / parquet or datasets column holding the text."""
    dataset_split: str = "train"
    """The split read from a `datasets` DatasetDict folder (a plain Dataset folder is read whole)."""
    fullwidth: Optional[bool] = None
    """Fold full-width ASCII forms (，！？：；（）Ａ１...) to ASCII. None = what the model's vocabulary saw:
    the model.init_from checkpoint's recorded setting, else off (as for bert-base-chinese and
    HFL's models). Folding changes 4.6% of the tokens of CLUE's dev text (docs/data.md,
    "Normalisation").
    """
    t2s: bool = False
    """traditional -> simplified Chinese."""
    dedup: bool = True
    """drop exact duplicate documents."""
    near_dedup: bool = False
    """Also drop near-duplicate documents: MinHash LSH on character 5-grams (needs datasketch; ~6 ms
    and ~3 KB per document; docs/data.md "Near-duplicate removal")."""
    near_dedup_threshold: float = 0.8
    """Estimated Jaccard similarity of 5-gram sets at or above which a document is a near duplicate."""
    near_dedup_num_perm: int = 128
    """MinHash permutations (signature length); the hash functions are drawn from data.seed."""
    max_seq_length: int = 128
    """Tokens per instance, [CLS]/[SEP] included."""
    short_seq_prob: float = 0.1
    """Google: 10% of instances get a shorter random target length."""
    pair_mode: str = "nsp"
    """nsp | sop | none."""
    dupe_factor: int = 1
    """passes over the corpus with different random pairings."""
    validation_fraction: float = 0.02
    """share of documents routed to the validation split."""
    jieba_hmm: bool = True
    """jieba's HMM for words not in its dictionary (jieba.lcut(HMM=True))."""
    jieba_user_dict: Optional[str] = None
    """Extra jieba dictionary (word [freq] [tag] per line)."""
    entity_mode: str = "dict"
    """dict | posseg | none (ERNIE entity/phrase spans)"""
    segmenter: str = "fastcut"
    """Word segmentation engine: fastcut (jieba's exact words, zhbert's faster cut) | jieba (jieba's own
    lcut) | rjieba (jieba-rs, Rust: same dictionary, not bit-identical; docs/data.md "Segmentation engine")."""
    shard_documents: int = 2000
    """documents per shard (unit of parallelism and resume) ..."""
    shard_chars: int = 2_000_000
    """... or fewer: a shard also closes at this many characters."""
    min_shards: int = 64
    """... and at 1/min_shards of the corpus size estimated from the input files, down to 250,000
    characters: a mid-sized corpus is cut finely enough that the workers start early and finish
    together (1: shards of shard_documents/shard_chars alone, as before this setting)."""
    workers: int = 1
    """Worker processes of `zhbert prepare`."""
    seed: int = 12345
    """Seed (pairing, splitting, validation choice for data; init, data order and masks for train)."""
    overwrite: bool = False
    """Replace an existing output directory (the old one stays until the new one is complete)."""

    def validate(self, where: str) -> None:
        _choice(where, "data.format", self.format,
                ["auto", "bert", "plain", "jsonl", "wiki", "wikidump", "parquet", "datasets"])
        _check(where, "data.near_dedup_threshold", 0 < self.near_dedup_threshold <= 1, "must be in (0, 1]")
        _check(where, "data.near_dedup_num_perm", 16 <= self.near_dedup_num_perm <= 1024, "must be in [16, 1024]")
        _choice(where, "data.pair_mode", self.pair_mode, ["nsp", "sop", "none"])
        _choice(where, "data.entity_mode", self.entity_mode, ["dict", "posseg", "none"])
        _choice(where, "data.segmenter", self.segmenter, ["fastcut", "jieba", "rjieba"])
        _check(where, "data.segmenter", not (self.segmenter == "rjieba" and self.entity_mode == "posseg"),
               "rjieba cannot be used with data.entity_mode=posseg (posseg cuts with jieba)")
        _check(where, "data.max_seq_length", 8 <= self.max_seq_length <= 8192, "must be in [8, 8192]")
        _check(where, "data.short_seq_prob", 0 <= self.short_seq_prob <= 1, "must be in [0, 1]")
        _check(where, "data.validation_fraction", 0 <= self.validation_fraction < 1, "must be in [0, 1)")
        _check(where, "data.dupe_factor", self.dupe_factor >= 1, "must be >= 1")
        _check(where, "data.shard_documents", self.shard_documents >= 1, "must be >= 1")
        _check(where, "data.shard_chars", self.shard_chars >= 1, "must be >= 1")
        _check(where, "data.min_shards", self.min_shards >= 1, "must be >= 1")
        _check(where, "data.workers", self.workers >= 1, "must be >= 1")


@dataclass
class ModelConfig:
    """Model shape: a BERT config file (YAML/JSON, HF field names) plus inline overrides."""

    config: Optional[str] = "configs/model/tiny.yaml"
    """A BERT config file (YAML/JSON, HF field names); the inline fields below override it."""
    init_from: Optional[str] = None
    """HF-format checkpoint dir (or registry name) to continue from."""
    vocab_size: Optional[int] = None
    """Inline fields override the file (HF names); None = take from file / default."""
    hidden_size: Optional[int] = None
    """Width H of every layer (HF name)."""
    num_hidden_layers: Optional[int] = None
    """Transformer layers L."""
    num_attention_heads: Optional[int] = None
    """Attention heads per layer (H must divide by it)."""
    intermediate_size: Optional[int] = None
    """Feed-forward inner width (usually 4H)."""
    hidden_act: Optional[str] = None
    """Feed-forward activation: gelu (BERT), gelu_new, relu, ..."""
    hidden_dropout_prob: Optional[float] = None
    """Dropout on embeddings and sublayer outputs."""
    attention_probs_dropout_prob: Optional[float] = None
    """Dropout on the attention probabilities."""
    max_position_embeddings: Optional[int] = None
    """Learned positions; must be >= data.max_seq_length."""
    type_vocab_size: Optional[int] = None
    """Segment (token type) embeddings: 2 for sentence pairs."""
    initializer_range: Optional[float] = None
    """Std of the truncated-normal weight init."""
    layer_norm_eps: Optional[float] = None
    """LayerNorm epsilon."""
    pre_layernorm: Optional[bool] = None
    """zhbert extension: LayerNorm before each sublayer + a final one (saved as zhbert-preln-bert)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (less memory, ~30% more compute)."""

    def overrides(self) -> dict[str, Any]:
        """The inline BERT fields that were set."""
        skip = {"config", "init_from", "gradient_checkpointing"}
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in skip and getattr(self, f.name) is not None
        }


MASKING_STRATEGIES = ("char", "wwm", "entity", "ngram")
REPLACE_UNITS = ("token", "word")


@dataclass
class MaskingConfig:
    """Dynamic masking (see zhbert/train/masking.py for the strategies, budget and 80/10/10 rule).

    Its rules are :func:`validate_masking`'s, the only place they are written: the masking
    functions trust their ``cfg`` (they assert only against programming errors).
    """

    strategy: str = "wwm"
    """char | wwm | entity | ngram (MASKING_STRATEGIES)"""
    mask_prob: float = 0.15
    """Fraction of real tokens to predict."""
    max_predictions: Union[int, str] = "auto"
    """Cap on predictions per sequence. auto = ceil(mask_prob * data.max_seq_length): 20 at 128, 77
    at 512, never binding. An explicit value below that warns (20 at 512 predicts ~5%).
    """
    mask_token_prob: float = 0.8
    """Share of the chosen tokens replaced by [MASK]."""
    random_token_prob: float = 0.1
    """Share replaced by a random real token; the rest stays unchanged."""
    replace_unit: str = "token"
    """Where the 80/10/10 decision is drawn: token = per chosen token (Google, HFL
    Chinese-BERT-wwm); word = once per chosen word / entity / n-gram. token | word
    (REPLACE_UNITS)
    """
    ngram_probs: list[float] = field(default_factory=lambda: [0.4, 0.3, 0.2, 0.1])
    """P(n) of an n-gram of n whole words, n = 1, 2, ... (strategy ngram; MacBERT's 40/30/20/10)"""

    def validate(self, where: str) -> None:
        validate_masking(self, where)


def validate_masking(cfg: Any, where: str) -> None:
    """The masking rules, for a MaskingConfig or any object with its fields.

    ``load_config`` applies them to a file's ``masking`` section; ``PretrainingCollator``
    (zhbert/train/collator.py) applies them to the config it is given, which may have been
    built in code. Integers may be numpy integers (never bools); the two replacement
    probabilities may sum to 1 up to rounding (1e-9).
    """
    _choice(where, "masking.strategy", cfg.strategy, list(MASKING_STRATEGIES))
    _choice(where, "masking.replace_unit", cfg.replace_unit, list(REPLACE_UNITS))
    _check(where, "masking.mask_prob", 0 < cfg.mask_prob < 1, "must be in (0, 1)")
    mp = cfg.max_predictions
    _check(where, "masking.max_predictions",
           (isinstance(mp, str) and mp == "auto")
           or (isinstance(mp, numbers.Integral) and not isinstance(mp, bool) and mp >= 1),
           f"must be auto or an integer >= 1; got {mp!r}")
    pm, pr = cfg.mask_token_prob, cfg.random_token_prob
    _check(where, "masking.mask_token_prob", pm >= 0 and pr >= 0 and pm + pr <= 1 + 1e-9,
           "mask_token_prob and random_token_prob must be >= 0 and sum to <= 1")
    probs = list(cfg.ngram_probs)
    _check(where, "masking.ngram_probs", len(probs) >= 1 and all(x >= 0 for x in probs)
           and abs(sum(probs) - 1) < 1e-6, "must be non-negative and sum to 1")


@dataclass
class TrainConfig:
    """The training loop, checkpointing and resume."""

    output_dir: str = "runs/pretrain/tiny"
    """Run directory: checkpoints/, metrics.jsonl, config.yaml, ds_config.json, wandb/."""
    max_steps: int = 300
    """Optimizer steps; the run ends at max_steps or at train.max_minutes, whichever comes first."""
    max_minutes: Optional[float] = None
    """Time budget in minutes of training time (null = none). Training time is wall time from the
    start of the first optimizer step: batch assembly, forward, backward, optimizer step, logging
    count; start-up (process group, data preparation and loading, model/DeepSpeed set-up,
    checkpoint loading) and every evaluation pass and checkpoint write (the final ones too) do
    not. At the first step boundary where the budget is used up the run evaluates, writes a
    final checkpoint and exits 0 ("stopped at the time budget"). Checkpoints record the count
    (meta.json train_seconds) and a resume continues it.
    """
    schedule: str = "steps"
    """steps | time. steps: DeepSpeed's warmup/decay over train.warmup_steps and max_steps; a
    resume is bit-exact. time (needs max_minutes): the same decay shapes and min_lr_ratio as
    functions of elapsed training time over the budget (Cramming's budget-based schedule), so
    the run stops with its LR fully decayed; a resume continues the elapsed time but is not
    bit-exact (step timings differ). Formula: docs/pretraining.md, "Time budget".
    """
    snapshot_minutes: list[float] = field(default_factory=list)
    """Training minutes at which to keep a snapshot, e.g. [5, 10, 20] (with or without a budget):
    at the first step boundary past each mark the run evaluates, writes a checkpoint and copies
    its HF export to ``output_dir/snapshots/min<M>/`` with ``snapshot.json`` (step, training
    seconds, tokens, the eval record). Snapshots are never pruned (keep_last applies to
    checkpoints/ only): the points of an "MLM accuracy vs downstream over time" curve.
    """
    warmup_fraction: float = 0.1
    """schedule: time only: share of max_minutes spent warming up linearly from lr x
    min_lr_ratio to lr, in [0, 1) (schedule: steps uses warmup_steps).
    """
    micro_batch_size: int = 16
    """per rank, per forward."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step (the final value when batch_ramp_fraction > 0)."""
    batch_ramp_fraction: float = 0.0
    """Batch-size ramp (Cramming): over this share of the run (of max_minutes with schedule: time,
    of max_steps with schedule: steps) the micro-batches per optimizer step grow linearly from
    batch_ramp_start to gradient_accumulation_steps; 0 = no ramp. The micro batch stays the same
    (the data order and masks do not change), so early steps are small and frequent.
    """
    batch_ramp_start: int = 1
    """Micro-batches per optimizer step at the start of the ramp (<= gradient_accumulation_steps)."""
    lr: float = 5e-4
    """Peak learning rate."""
    min_lr_ratio: float = 0.0
    """final lr = lr * min_lr_ratio."""
    weight_decay: float = 0.01
    """AdamW weight decay (none on biases and LayerNorm)."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.999
    """Adam beta2."""
    adam_eps: float = 1e-6
    """Adam epsilon."""
    warmup_steps: int = 30
    """Linear warmup steps of schedule: steps (>= 2: DeepSpeed schedulers)."""
    decay: str = "linear"
    """linear | cosine | constant (after warmup, down to lr x min_lr_ratio; both schedules)."""
    clip_grad_norm: float = 1.0
    """Gradient clipping by global norm; 0 = off."""
    checkpoint_every: int = 100
    """Save a checkpoint every N steps (and at the end)."""
    keep_last: int = 3
    """Complete checkpoints kept (older ones are pruned after a new one is complete)."""
    resume: str = "auto"
    """auto | never | path to a checkpoint dir."""
    seed: int = 42
    """Seed (pairing, splitting, validation choice for data; init, data order and masks for train)."""
    log_every: int = 10
    """metrics.jsonl / wandb / console record every N steps (and steps 1, last, eval, non-finite)."""
    eval_every: int = 100
    """Validation pass every N steps (and at the end)."""
    eval_batches: int = 20
    """Validation batches per pass."""
    dataloader_workers: int = 0
    """Background threads assembling batches (0: in the loop)."""
    peak_tflops: float = 0.0
    """per device, for the MFU estimate; 0 = guess from the device."""
    prepare_if_missing: bool = True
    """run `zhbert prepare` for data.dir when it does not exist."""
    resume_universal: bool = False
    """resume from a DeepSpeed universal checkpoint (world-size change)"""
    eval_seed: int = 1234
    """fixed masking rng for eval passes, so evals are comparable."""
    on_nonfinite: str = "stop"
    """A step whose loss or gradient norm is NaN/inf is never applied to the weights. `stop` ends
    the run (exit 3, naming the step and the last good checkpoint); `skip` drops the step and
    goes on, and stops after `max_nonfinite_skips` such steps in a row. stop | skip.
    """
    allow_normalization_change: bool = False
    """Resume or model.init_from with data normalised differently (data.fullwidth, data.t2s) from
    what the checkpoint was trained on is refused unless this is true.
    """
    max_nonfinite_skips: int = 5
    """With on_nonfinite=skip: stop after this many non-finite steps in a row."""

    def validate(self, where: str) -> None:
        for key in ("max_steps", "micro_batch_size", "gradient_accumulation_steps", "checkpoint_every",
                    "keep_last", "log_every", "eval_every", "eval_batches"):
            _check(where, f"train.{key}", getattr(self, key) >= 1, "must be >= 1")
        _check(where, "train.lr", self.lr > 0, "must be > 0")
        _check(where, "train.warmup_steps", self.warmup_steps >= 2,
               f"must be >= 2, got {self.warmup_steps}: DeepSpeed's warmup schedulers span at least 2 steps "
               "(0 is refused by DeepSpeed, 1 would silently mean 2)")
        _check(where, "train.min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "must be in [0, 1]")
        _check(where, "train.max_minutes", self.max_minutes is None or self.max_minutes > 0,
               f"must be > 0 (null = no time budget), got {self.max_minutes}")
        _choice(where, "train.schedule", self.schedule, ["steps", "time"])
        _check(where, "train.schedule", self.schedule != "time" or self.max_minutes is not None,
               "time needs train.max_minutes (the budget the schedule spans); set train.max_minutes "
               "or use train.schedule=steps")
        _check(where, "train.snapshot_minutes", isinstance(self.snapshot_minutes, list) and all(
            isinstance(m, (int, float)) and not isinstance(m, bool) and m > 0 for m in self.snapshot_minutes),
            f"must be a list of minutes > 0, e.g. [5, 10], got {self.snapshot_minutes!r}")
        _check(where, "train.warmup_fraction", 0 <= self.warmup_fraction < 1,
               f"must be in [0, 1), got {self.warmup_fraction}")
        _check(where, "train.batch_ramp_fraction", 0 <= self.batch_ramp_fraction <= 1,
               f"must be in [0, 1] (0 = no ramp), got {self.batch_ramp_fraction}")
        _check(where, "train.batch_ramp_start", 1 <= self.batch_ramp_start <= self.gradient_accumulation_steps,
               f"must be in [1, train.gradient_accumulation_steps = {self.gradient_accumulation_steps}], "
               f"got {self.batch_ramp_start}")
        _choice(where, "train.decay", self.decay, ["linear", "cosine", "constant"])
        _check(where, "train.clip_grad_norm", self.clip_grad_norm >= 0, "must be >= 0 (0 = off)")
        # what torch.optim.AdamW / DeepSpeed's Adam and Lamb would reject later, with a traceback
        _check(where, "train.adam_beta1", 0 <= self.adam_beta1 < 1, "must be in [0, 1)")
        _check(where, "train.adam_beta2", 0 <= self.adam_beta2 < 1, "must be in [0, 1)")
        _check(where, "train.adam_eps", self.adam_eps > 0, "must be > 0")
        _check(where, "train.weight_decay", self.weight_decay >= 0, "must be >= 0")
        _check(where, "train.peak_tflops", self.peak_tflops >= 0, "must be >= 0 (0 = guess from the device)")
        _choice(where, "train.on_nonfinite", self.on_nonfinite, ["stop", "skip"])
        _check(where, "train.max_nonfinite_skips", self.max_nonfinite_skips >= 1, "must be >= 1")


@dataclass
class DeepSpeedConfig:
    """Everything the DeepSpeed JSON is derived from (see zhbert/train/ds_config.py)."""

    zero_stage: int = 0
    """ZeRO stage 0-3 (0: plain data parallel; 1-3 shard optimizer state, gradients, parameters)."""
    precision: str = "fp32"
    """fp32 | bf16 | fp16."""
    autocast: str = "none"
    """none | bf16: the forward under ``torch.autocast`` in bf16 over fp32 weights, gradients and
    optimizer (DeepSpeed's ``torch_autocast``; DeepSpeed >= 0.17.2); needs precision fp32. Pays
    only on hardware with native bf16 (AVX-512 BF16 / AMX CPUs, recent GPUs); elsewhere it is
    many times slower (docs/pretraining.md, "Precision")."""
    optimizer: str = "adamw"
    """adamw | lamb (lamb needs CUDA)"""
    offload_optimizer: str = "none"
    """none | cpu | nvme."""
    offload_param: str = "none"
    """none | cpu | nvme (ZeRO-3 only)"""
    nvme_path: Optional[str] = None
    """Directory for nvme offload."""
    torch_adam: Optional[bool] = None
    """None = auto (True on CPU)"""
    loss_scale: float = 0.0
    """fp16: 0 = dynamic."""
    config_file: Optional[str] = None
    """A DeepSpeed JSON file merged into the derived config (``--deepspeed_config FILE``); then
    ``extra`` over it. Derived keys may only repeat the derived value or be "auto"
    (zhbert/train/ds_config.py says which and why).
    """
    extra: dict[str, Any] = field(default_factory=dict)
    """Any DeepSpeed keys, merged over config_file; derived keys may only repeat their value or be "auto"."""

    def validate(self, where: str) -> None:
        _choice(where, "deepspeed.zero_stage", self.zero_stage, [0, 1, 2, 3])
        _choice(where, "deepspeed.precision", self.precision, ["fp32", "bf16", "fp16"])
        _choice(where, "deepspeed.autocast", self.autocast, ["none", "bf16"])
        if self.autocast != "none":
            _check(where, "deepspeed.autocast", self.precision == "fp32",
                   f"autocast runs over fp32 weights: needs deepspeed.precision fp32, not {self.precision}")
        _choice(where, "deepspeed.optimizer", self.optimizer, ["adamw", "lamb"])
        _choice(where, "deepspeed.offload_optimizer", self.offload_optimizer, ["none", "cpu", "nvme"])
        _choice(where, "deepspeed.offload_param", self.offload_param, ["none", "cpu", "nvme"])
        _check(where, "deepspeed.loss_scale", self.loss_scale >= 0, "must be >= 0 (0 = dynamic)")
        if self.offload_param != "none":
            _check(where, "deepspeed.offload_param", self.zero_stage == 3, "parameter offload needs zero_stage 3")
        if self.offload_optimizer != "none":
            _check(where, "deepspeed.offload_optimizer", self.zero_stage >= 1, "optimizer offload needs zero_stage >= 1")
        if "nvme" in (self.offload_param, self.offload_optimizer):
            _check(where, "deepspeed.nvme_path", bool(self.nvme_path), "required for nvme offload")


@dataclass
class WandbConfig:
    """Weights & Biases logging (rank 0 only)."""

    mode: str = "offline"
    """online | offline | disabled."""
    project: str = "zhbert"
    """wandb project."""
    entity: Optional[str] = None
    """wandb entity (team or user); default: yours."""
    name: Optional[str] = None
    """wandb run name; default: wandb picks one."""
    group: Optional[str] = None
    """wandb group (e.g. one per ablation)."""
    tags: list[str] = field(default_factory=list)
    """wandb tags."""
    dir: Optional[str] = None
    """default: the run's output_dir."""

    def validate(self, where: str) -> None:
        _choice(where, "wandb.mode", self.mode, ["online", "offline", "disabled"])


@dataclass
class PretrainConfig:
    """The whole pretraining run: one YAML file."""

    data: DataConfig = field(default_factory=DataConfig)
    """Corpus preparation and where training reads instances."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model shape or the checkpoint to start from."""
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    """Dynamic masking."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The training loop, checkpointing and resume."""
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    """What the DeepSpeed JSON is derived from."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Weights & Biases logging."""

    def validate(self, where: str) -> None:
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "validate"):
                section.validate(where)
        if self.deepspeed.optimizer == "lamb":
            _check(where, "deepspeed.optimizer", self.deepspeed.torch_adam is not True,
                   "lamb cannot be combined with torch_adam")


@dataclass
class PrepareFileConfig:
    """A YAML file holding only the data section (``zhbert prepare --config FILE``)."""

    data: DataConfig = field(default_factory=DataConfig)
    """Corpus preparation and where training reads instances."""

    def validate(self, where: str) -> None:
        self.data.validate(where)


# ---------------------------------------------------------------------------------------
# Loading


def load_config(path: Optional[str | Path] = None, overrides: Optional[list[str]] = None,
                cls: type = PretrainConfig):
    """Load ``cls`` from a YAML file (or defaults when ``path`` is None), apply overrides, and
    validate the result once (each section's ``validate``). Paths in configs are taken
    relative to the current directory, as the CLI documents."""
    raw: dict[str, Any] = {}
    where = str(path) if path is not None else "config overrides"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not UTF-8 text") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections, got {type(loaded).__name__}")
        raw = loaded
    for ov in overrides or []:
        _apply_override(raw, ov, where)
    cfg = from_dict(cls, raw, where, prefix="")
    if hasattr(cfg, "validate"):
        cfg.validate(where)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.max_steps=20"`` -> (["train", "max_steps"], 20)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, value = text.split("=", 1)
    parts = [k for k in key.strip().split(".")]
    if not key.strip() or any(not k for k in parts):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return parts, parsed


def _apply_override(raw: dict, text: str, where: str) -> None:
    parts, value = parse_override(text)
    node = raw
    for i, k in enumerate(parts[:-1]):
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{where}: override {text!r}: {'.'.join(parts[:i + 1])} is not a section")
        node = nxt
    node[parts[-1]] = value


def from_dict(cls: type, data: Any, where: str, prefix: str = ""):
    """Build dataclass ``cls`` from a plain mapping, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {_tname(data)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {prefix}{unknown[0]!s}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + f"; valid keys in {prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, where, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, key: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, where, prefix=f"{key}.")
    if tp is Any:
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list, got {_tname(value)} {value!r}")
        (item,) = args or (Any,)
        return [_coerce(item, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping, got {_tname(value)}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} must be true or false, got {_tname(value)} {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} must be an integer, got {_tname(value)} {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML reads 5e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{where}: {key} must be a number, got {_tname(value)} {value!r}")
        if not math.isfinite(number):  # .nan / .inf / "1e999": never a meaningful setting
            raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: {key} must be a string, got {_tname(value)} {value!r}")
    return value


def to_dict(cfg) -> dict[str, Any]:
    """Plain (JSON/YAML-serialisable) dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def save_config(cfg, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True), encoding="utf-8")


def _tname(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _check(where: str, key: str, ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {key} {msg}")


def _choice(where: str, key: str, value: Any, allowed: list) -> None:
    if value not in allowed:
        raise ConfigError(f"{where}: {key} must be one of {', '.join(map(str, allowed))}; got {value!r}")


# ---------------------------------------------------------------------------------------
# The config reference (docs/config.md) is generated from the field docstrings above.


def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of a config dataclass: the string literal right after each field
    (the attribute-docstring convention Sphinx reads), taken from the source with ``ast``."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for stmt, nxt in zip(body, body[1:] + [None]):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
            else:
                docs[stmt.target.id] = ""
    return docs


def reference_markdown() -> str:
    """docs/config.md: every section and key of a pretraining config, its type, default and
    meaning (regenerate: ``python -m zhbert.config > docs/config.md``; a test checks it)."""
    lines = ["# Configuration reference", "",
             "Generated from the field docstrings of `zhbert/config.py` by `python -m zhbert.config` "
             "(`tests/test_config.py` fails when this page is stale). Defaults are the code's; a config "
             "file such as `configs/pretrain/tiny.yaml` sets its own values for some keys "
             "(`python scripts/pretrain.py` writes the resolved values to `OUTPUT_DIR/config.yaml`).", ""]
    hints = typing.get_type_hints(PretrainConfig)
    for section in dataclasses.fields(PretrainConfig):
        cls = hints[section.name]
        lines += [f"## `{section.name}`", "", " ".join((cls.__doc__ or "").split()), "",
                  "| key | type | default | meaning |", "|---|---|---|---|"]
        docs = field_docs(cls)
        types = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            typ = str(types[f.name]).replace("typing.", "").replace("<class '", "").replace("'>", "")
            lines.append(f"| `{f.name}` | {typ} | `{json.dumps(default, ensure_ascii=False)}` | "
                         f"{docs.get(f.name, '').replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m zhbert.config > docs/config.md
    print(reference_markdown(), end="")
