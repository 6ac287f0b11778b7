"""BERT (Devlin et al. 2018) for pretraining and fine-tuning, with transformers' weight names.

Architecture: embeddings (word + learned position + token type, LayerNorm, dropout) -> L
Transformer layers (post-LN as in the paper; ``pre_layernorm: true`` for pre-LN) -> pooler
(dense + tanh on [CLS]). Heads: MLM (dense + act + LayerNorm, decoder tied to the word
embeddings with its own bias), NSP (2-way linear on the pooled output), and for fine-tuning
a sequence classifier, an extractive-QA span head (start/end per token) and a multiple-choice
scorer.

Checkpoint contract: every module is named as in HF ``modeling_bert.py``, so
``BertForPreTraining.state_dict()`` has exactly the keys and shapes of
``transformers.BertForPreTraining`` (``bert.encoder.layer.0.attention.self.query.weight``,
``cls.predictions.decoder.weight`` tied to ``bert.embeddings.word_embeddings.weight``,
``cls.predictions.decoder.bias`` tied to ``cls.predictions.bias`` ...). ``save_pretrained``
writes ``config.json`` + ``model.safetensors`` that ``transformers`` loads as is, and
``from_pretrained`` reads any hub Chinese BERT through :mod:`zhbert.model.weights`.

Pre-LN variant (``pre_layernorm: true``): the same parameter names are reused but applied
*before* each sublayer: ``attention.output.LayerNorm`` normalises the attention input,
``output.LayerNorm`` normalises the feed-forward input, and an extra final LayerNorm lives at
``bert.encoder.final_layer_norm.{weight,bias}`` (present only in pre-LN models). transformers
has no pre-LN BERT: loaded as ``bert`` it would drop the final LayerNorm with an "unexpected
keys" notice and apply every LayerNorm after its sublayer, i.e. compute something else. So a
pre-LN ``config.json`` says ``model_type: zhbert-preln-bert`` and ``architectures:
[ZhbertPreLNBertForPreTraining]`` (:meth:`BertConfig.save_pretrained`): transformers' Auto
classes refuse the unknown model type with their own error, and zhbert reads it (and older
pre-LN checkpoints saved as ``model_type: bert`` + ``pre_layernorm: true``) as before.

Speed techniques (training step on CPU vs ``transformers.BertForPreTraining``, see
``benchmarks/pretrain_throughput.py`` and docs/model.md and docs/benchmarks.md for measured figures):

1. MLM logits only at masked positions. With labels, the hidden states of the ~15% labelled
   tokens are gathered *before* the MLM transform and the V x H decoder. The loss is the same
   mean cross entropy HF computes over all positions (ignored ones contribute nothing), but
   the decoder GEMM, its backward and the (B*T, V) softmax shrink ~7x. At the tiny shape
   (H=256, V=21128) the decoder is more FLOPs than the whole encoder, so this is the biggest win.
2. Unpadding (MosaicML BERT): every token-wise op (embeddings + LayerNorm, Q/K/V, attention
   output, feed-forward, LayerNorms, MLM head) runs on the (N, H) matrix of real tokens only;
   Q/K/V are scattered back to a (B, T', ...) grid just for attention, where T' is the longest
   sequence of the batch. Real pretraining data has ~10% short sequences, so ~10% of the
   encoder FLOPs are saved. Helpers and shape conventions: :mod:`zhbert.model.padding`.
3. Fused QKV projection: one ``F.linear`` over ``cat(Wq, Wk, Wv)`` gives a single (N, 3H) GEMM
   instead of three (better cache use, one kernel launch); the parameters stay separate, so
   the state-dict names do not change.
4. ``torch.nn.functional.scaled_dot_product_attention`` with a boolean padding mask (the fused
   flash kernel on CPU and GPU), no mask at all when the batch has no padding; Q/K/V are
   split (not indexed) out of the fused projection, so the backward concatenates their
   gradients instead of zero-filling a 3-way buffer three times. On CPU in training, dropout
   (and the attention-probability dropout, where SDPA takes its math path anyway) draws its
   mask from 16-bit lanes of 64-bit random words instead of ``bernoulli_``:
   :mod:`zhbert.model.cpu_ops`.
5. Last layer on needed rows only: the heads read [CLS] and (with labels) the masked tokens,
   so the last layer uses every token as key/value but runs its attention-output projection
   and feed-forward block only on those K ~ 0.15 N rows (exact: nothing else reaches the
   loss). This removes ~60% of one layer: ~15% of the encoder at L=4, ~5% at L=12. The same
   holds for BertForSequenceClassification (only the B [CLS] rows).
6. No framework overhead: no output-recording hooks, attention-interface dispatch or mask
   materialisation per layer; the module tree is plain ``nn.Module``.

Gradient checkpointing: ``model.gradient_checkpointing_enable()`` recomputes each layer in
the backward pass (activation memory O(1) in depth instead of O(L)).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from zhbert.model.cpu_ops import attention, dropout
from zhbert.errors import ConfigError
from zhbert.model.padding import Unpadded, pad, unpad, unpad_mask
from zhbert.model.weights import LoadReport, load_into, load_state_dict, normalize_state_dict, save_state_dict

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# config.json names of pre-LN models: not transformers' "bert", so transformers refuses them
PRELN_MODEL_TYPE = "zhbert-preln-bert"
PRELN_ARCH_PREFIX = "ZhbertPreLN"  # BertForPreTraining -> ZhbertPreLNBertForPreTraining

ACT2FN: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,  # exact erf GELU, as in the original BERT
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}

# HF config.json keys that carry no information for this model and are ignored on load.
_HF_IGNORED_KEYS = {
    "architectures", "model_type", "directionality", "pooler_fc_size", "pooler_num_attention_heads",
    "pooler_num_fc_layers", "pooler_size_per_head", "pooler_type", "transformers_version",
    "torch_dtype", "dtype", "gradient_checkpointing", "use_cache", "classifier_dropout",
    "is_decoder", "add_cross_attention", "bos_token_id", "eos_token_id", "tie_word_embeddings",
    "output_past", "id2label", "label2id", "num_labels", "problem_type", "_name_or_path",
    "position_embedding_type", "finetuning_task", "return_dict", "output_hidden_states",
    "output_attentions", "chunk_size_feed_forward", "sep_token_id", "cls_token_id",
    "layer_norm_type", "embedding_size", "tokenizer_class", "prefix",
}


# ---------------------------------------------------------------------------------- config
@dataclass
class BertConfig:
    """Model hyper-parameters, with transformers' ``BertConfig`` field names.

    vocab_size: rows of the word embedding (21128 = bert-base-chinese's vocab.txt).
    hidden_size / num_hidden_layers / num_attention_heads / intermediate_size: H, L, A, I.
    hidden_act: feed-forward and MLM-transform activation (gelu, gelu_new, relu, silu, ...).
    hidden_dropout_prob: dropout after embeddings and each sublayer.
    attention_probs_dropout_prob: dropout on attention probabilities.
    max_position_embeddings: longest sequence (learned absolute positions).
    type_vocab_size: number of segment ids (2: sentence A / B).
    initializer_range: std of the normal init of linear and embedding weights.
    layer_norm_eps: LayerNorm epsilon (1e-12 as in the TF original).
    pad_token_id: [PAD] id; its embedding row starts at zero and gets no gradient from lookups.
    pre_layernorm: zhbert extension, LayerNorm before each sublayer + a final LayerNorm.
    """

    vocab_size: int = 21128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    pre_layernorm: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, source: str = "model config") -> None:
        """Type and value checks; raises ConfigError naming the offending key."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = {"int": int, "float": float, "str": str, "bool": bool}[f.type]
            ok = (isinstance(value, bool) if kind is bool else
                  isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
                  isinstance(value, kind) and not isinstance(value, bool))
            if not ok:
                raise ConfigError(f"{source}: {f.name} must be {f.type}, got {value!r}")
            if kind is float:
                setattr(self, f.name, float(value))
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings", "type_vocab_size")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{source}: {name} must be > 0, got {getattr(self, name)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{source}: {name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("initializer_range", "layer_norm_eps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{source}: {name} must be > 0, got {getattr(self, name)}")
        if self.hidden_act not in ACT2FN:
            raise ConfigError(f"{source}: hidden_act {self.hidden_act!r} is not one of "
                              f"{sorted(ACT2FN)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"{source}: hidden_size ({self.hidden_size}) must be a multiple of "
                              f"num_attention_heads ({self.num_attention_heads})")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"{source}: pad_token_id {self.pad_token_id} outside the vocabulary "
                              f"(vocab_size {self.vocab_size})")

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, strict: bool = False,
                  source: str = "model config") -> BertConfig:
        """Build from a mapping with HF names. HF-only keys (architectures, model_type,
        pooler_*, ...) are ignored; other unknown keys raise ConfigError when ``strict`` (our
        YAML files) and are ignored with a warning otherwise (config.json from the hub)."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping of BertConfig fields, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        pet = d.get("position_embedding_type", "absolute")
        if pet != "absolute":
            raise ConfigError(f"{source}: position_embedding_type {pet!r} is not supported "
                              f"(only 'absolute')")
        unknown = sorted(k for k in d if k not in names and k not in _HF_IGNORED_KEYS)
        if unknown and strict:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: "
                              f"{', '.join(sorted(names))}")
        if unknown:
            warnings.warn(f"{source}: ignoring unknown key(s) {', '.join(unknown)}", stacklevel=2)
        kwargs = {k: v for k, v in d.items() if k in names}
        if d.get("model_type") == PRELN_MODEL_TYPE:  # written for pre-LN models only
            if kwargs.get("pre_layernorm", True) is not True:
                raise ConfigError(f"{source}: model_type {PRELN_MODEL_TYPE!r} is a pre-LN model but "
                                  f"pre_layernorm is {kwargs['pre_layernorm']!r}")
            kwargs["pre_layernorm"] = True
        config = cls.__new__(cls)  # skip __post_init__ so errors name ``source``
        for f in dataclasses.fields(cls):
            setattr(config, f.name, kwargs.get(f.name, f.default))
        config.validate(source)
        return config

    @classmethod
    def from_json_file(cls, path: str | Path) -> BertConfig:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: not valid JSON: {e}") from None
        return cls.from_dict(d, source=str(path))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> BertConfig:
        """Read ``DIR/config.json``."""
        return cls.from_json_file(Path(directory) / CONFIG_NAME)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save_pretrained(self, directory: str | Path, **extra: Any) -> Path:
        """Write ``DIR/config.json`` (adds model_type, architectures; ``extra`` keys last).

        Post-LN: ``model_type: bert``, loadable by transformers as is. Pre-LN: ``model_type:
        zhbert-preln-bert`` and every architecture renamed ``ZhbertPreLN<name>`` (whatever
        ``extra`` says), so that transformers refuses the checkpoint instead of loading a
        different network (see the module docstring).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        d = {"architectures": ["BertForPreTraining"], "model_type": "bert", **self.to_dict(),
             **extra}
        if self.pre_layernorm:
            d["model_type"] = PRELN_MODEL_TYPE
            d["architectures"] = [a if a.startswith(PRELN_ARCH_PREFIX) else PRELN_ARCH_PREFIX + a
                                  for a in d["architectures"]]
        path = directory / CONFIG_NAME
        path.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path


# --------------------------------------------------------------------------------- outputs
class ModelOutput(dict):
    """Base of the output dataclasses: also a dict of its fields (as transformers'
    ``ModelOutput`` is), so wrappers that walk dicts to find tensors -- DeepSpeed ZeRO-3's
    backward hooks do -- see them. Item assignment updates the attribute and vice versa."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            dict.__setitem__(self, f.name, getattr(self, f.name))

    def __setitem__(self, key, value) -> None:
        dict.__setitem__(self, key, value)
        object.__setattr__(self, key, value)

    def __setattr__(self, key, value) -> None:
        object.__setattr__(self, key, value)
        if key in self:
            dict.__setitem__(self, key, value)


@dataclass
class BertModelOutput(ModelOutput):
    last_hidden_state: Tensor  # (B, T, H); zeros at padding positions
    pooler_output: Tensor | None  # (B, H); None when built with add_pooling_layer=False


@dataclass
class BertPreTrainingOutput(ModelOutput):
    """Output of :meth:`BertForPreTraining.forward`.

    prediction_logits: with ``labels``: (M, V) at the M positions where labels != -100, in
        row-major (b, t) order, i.e. row i pairs with ``labels[labels != -100][i]``; without
        labels: (B, T, V) (zeros at padding positions).
    loss = mlm_loss + nsp_loss over the terms whose labels were given (None if neither).
    mlm_loss: mean CE over masked tokens (0 if a batch has none). nsp_loss: mean CE over
        rows with next_sentence_label != -100 (0 when all are -100, e.g. pair_mode none).
    mlm_correct / mlm_count, nsp_correct / nsp_count: 0-dim long tensors (no grad) for
        accuracy bookkeeping; None when the matching labels are not given.
    """

    loss: Tensor | None
    mlm_loss: Tensor | None
    nsp_loss: Tensor | None
    prediction_logits: Tensor
    seq_relationship_logits: Tensor  # (B, 2)
    mlm_correct: Tensor | None = None
    mlm_count: Tensor | None = None
    nsp_correct: Tensor | None = None
    nsp_count: Tensor | None = None


@dataclass
class SequenceClassifierOutput(ModelOutput):
    loss: Tensor | None  # CE (num_labels > 1) or MSE (num_labels == 1); None without labels
    logits: Tensor       # (B, num_labels)


@dataclass
class QuestionAnsweringOutput(ModelOutput):
    """Output of :meth:`BertForQuestionAnswering.forward`.

    loss: (start CE + end CE) / 2 as in HF, positions clamped to [0, T] and T ignored; None
        unless both start_positions and end_positions are given.
    start_logits, end_logits: (B, T); padding positions (attention_mask == 0) hold
        ``BertForQuestionAnswering.PAD_LOGIT`` (-10000.0), not a computed score.
    """

    loss: Tensor | None
    start_logits: Tensor
    end_logits: Tensor


@dataclass
class MultipleChoiceOutput(ModelOutput):
    loss: Tensor | None  # CE over the C choices; None without labels
    logits: Tensor       # (B, C)


# --------------------------------------------------------------------------------- modules
class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.p = config.hidden_dropout_prob

    def forward(self, input_ids: Tensor, position_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        # all (N,) -> (N, H); same summation order as HF for bit-level parity
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(position_ids)
        return dropout(self.LayerNorm(x), self.p, self.training)


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = h // config.num_attention_heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.p = config.attention_probs_dropout_prob

    def forward(self, x: Tensor, layout: Unpadded) -> Tensor:
        # x: (N, H) real tokens -> context (N, H)
        w = torch.cat([self.query.weight, self.key.weight, self.value.weight])  # (3H, H)
        b = torch.cat([self.query.bias, self.key.bias, self.value.bias])        # (3H,)
        qkv = pad(F.linear(x, w, b), layout)  # (B, T', 3H), zeros at padding
        bsz, t = layout.batch_size, layout.seqlen
        # split, not indexing a (3, B, A, T', d) view: split's backward concatenates the three
        # gradients, where each index's (select's) backward zero-fills the whole 3-way tensor.
        q, k, v = (y.view(bsz, t, self.num_heads, self.head_dim).transpose(1, 2)
                   for y in qkv.split(self.num_heads * self.head_dim, dim=-1))
        ctx = attention(q, k, v, layout.attn_mask, self.p, self.training)  # (B, A, T', d): SDPA, or its math on CPU
        ctx = ctx.transpose(1, 2).reshape(bsz, t, self.num_heads * self.head_dim)  # (B, T', H)
        return unpad(ctx, layout)


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)


class BertOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class BertLayer(nn.Module):
    """One Transformer block on unpadded tokens: (N, H) -> (N, H)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)
        self.act = ACT2FN[config.hidden_act]
        self.p = config.hidden_dropout_prob
        self.pre_layernorm = config.pre_layernorm

    def forward(self, x: Tensor, layout: Unpadded, keep: Tensor | None = None) -> Tensor:
        """x: (N, H). ``keep`` (K,): rows whose output is needed (all if None); every row
        still serves as key/value, but only the K kept rows go through the attention-output
        projection and feed-forward block. Returns (K, H)."""
        att, out, p, tr = self.attention, self.output, self.p, self.training
        if self.pre_layernorm:
            a = att.self(att.output.LayerNorm(x), layout)
            if keep is not None:
                a, x = a.index_select(0, keep), x.index_select(0, keep)  # (K, H)
            x = x + dropout(att.output.dense(a), p, tr)
            h = self.act(self.intermediate.dense(out.LayerNorm(x)))  # (N, I)
            return x + dropout(out.dense(h), p, tr)
        a = att.self(x, layout)
        if keep is not None:
            a, x = a.index_select(0, keep), x.index_select(0, keep)  # (K, H)
        x = att.output.LayerNorm(dropout(att.output.dense(a), p, tr) + x)
        h = self.act(self.intermediate.dense(x))  # (N, I)
        return out.LayerNorm(dropout(out.dense(h), p, tr) + x)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        if config.pre_layernorm:
            self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False

    def forward(self, x: Tensor, layout: Unpadded, keep: Tensor | None = None) -> Tensor:
        """(N, H) -> (N, H), or (K, H) at rows ``keep`` when given (see BertLayer)."""
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):
            rows = keep if i == last else None
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, layout, rows, use_reentrant=False)
            else:
                x = layer(x, layout, rows)
        if hasattr(self, "final_layer_norm"):
            x = self.final_layer_norm(x)
        return x


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, cls_hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(cls_hidden))  # (B, H) -> (B, H)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        # decoder.weight is tied to the word embeddings and decoder.bias to self.bias by the
        # owning model (like HF), so both names appear in the state dict.
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, device="meta")
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.transform(x))  # (M, H) -> (M, V)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


# ------------------------------------------------------------------------------ base class
class _BertBase(nn.Module):
    """Init, save/load shared by the public models."""

    _encoder_prefix = "bert."               # where BertModel lives in this model's state dict
    _optional_prefixes: tuple[str, ...] = ()  # may be absent from a checkpoint (random init)
    _ignore_prefixes: tuple[str, ...] = ()    # dropped from a checkpoint without a warning
    _architecture = "BertForPreTraining"
    config: BertConfig

    def _init_weights(self) -> None:
        """HF/BERT init: N(0, initializer_range) weights, zero biases, LayerNorm = identity."""
        std = self.config.initializer_range
        tied = self._bert().embeddings.word_embeddings.weight  # the decoder's weight too
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear) and m.weight is not tied:
                    m.weight.normal_(0.0, std)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.Embedding):
                    m.weight.normal_(0.0, std)
                    if m.padding_idx is not None:
                        m.weight[m.padding_idx].zero_()
                elif isinstance(m, nn.LayerNorm):
                    m.weight.fill_(1.0)
                    m.bias.zero_()
                elif isinstance(m, BertLMPredictionHead):
                    m.bias.zero_()

    def gradient_checkpointing_enable(self) -> None:
        self._bert().encoder.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self._bert().encoder.gradient_checkpointing = False

    def _bert(self) -> BertModel:
        return self if isinstance(self, BertModel) else self.bert

    def _config_extra(self) -> dict[str, Any]:
        return {"architectures": [self._architecture]}

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (HF layout; tied decoder keys omitted,
        as transformers does, since safetensors cannot store shared tensors)."""
        directory = Path(directory)
        self.config.save_pretrained(directory, **self._config_extra())
        tmp = directory / (WEIGHTS_NAME + ".tmp")
        save_state_dict(self.state_dict(), tmp)
        tmp.replace(directory / WEIGHTS_NAME)
        return directory

    @classmethod
    def _build(cls, config: BertConfig, raw_config: dict[str, Any], **kwargs: Any) -> _BertBase:
        return cls(config)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, config: BertConfig | None = None,
                        output_loading_info: bool = False, **kwargs: Any):
        """Load ``DIR`` (config.json + model.safetensors / pytorch_model.bin, HF or zhbert).

        Heads missing from the checkpoint stay randomly initialised and are listed in the
        :class:`~zhbert.model.weights.LoadReport` (returned as a second value when
        ``output_loading_info``). Raises CheckpointError on shape mismatch / missing encoder keys.
        """
        path = Path(path)
        directory = path if path.is_dir() else path.parent
        raw: dict[str, Any] = {}
        if config is None:
            config = BertConfig.from_pretrained(directory)
            raw = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
        model = cls._build(config, raw, **kwargs)
        sd = normalize_state_dict(load_state_dict(path), target_prefix=cls._encoder_prefix)
        report = load_into(model, sd, optional_prefixes=cls._optional_prefixes,
                           ignore_prefixes=cls._ignore_prefixes, source=str(path))
        model.load_report = report
        return (model, report) if output_loading_info else model


# ---------------------------------------------------------------------------------- models
class BertModel(_BertBase):
    """Embeddings + encoder + pooler. State-dict names as HF ``BertModel`` (no ``bert.``)."""

    _encoder_prefix = ""
    _optional_prefixes = ("pooler.",)
    _ignore_prefixes = ("cls.",)
    _architecture = "BertModel"

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        # add_pooling_layer=False (as HF's argument): no ``pooler.*`` tensors, as in HF's
        # BertForQuestionAnswering; pool() then raises and pooler_output is None.
        self.pooler = BertPooler(config) if add_pooling_layer else None
        # Run token-wise layers on real tokens only; False = padded reference path (tests).
        self.use_unpadding = True
        if type(self) is BertModel:
            self._init_weights()

    def embed(self, input_ids: Tensor, attention_mask: Tensor | None = None,
              token_type_ids: Tensor | None = None) -> tuple[Tensor, Unpadded]:
        """(B, T) inputs -> embeddings of the real tokens (N, H) and their layout."""
        bsz, seqlen = input_ids.shape
        if seqlen > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {seqlen} > max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        layout = unpad_mask(attention_mask, bsz, seqlen, enabled=self.use_unpadding,
                            device=input_ids.device)
        t = layout.seqlen
        ids = input_ids[:, :t]
        types = (torch.zeros_like(ids) if token_type_ids is None else token_type_ids[:, :t])
        pos = torch.arange(t, device=ids.device).expand(bsz, t)
        x = self.embeddings(unpad(ids, layout), unpad(pos, layout), unpad(types, layout))  # (N, H)
        return x, layout

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None,
               token_type_ids: Tensor | None = None) -> tuple[Tensor, Unpadded]:
        """(B, T) inputs -> hidden states of the real tokens (N, H) and their layout."""
        x, layout = self.embed(input_ids, attention_mask, token_type_ids)
        return self.encoder(x, layout), layout

    def pool(self, hidden: Tensor, layout: Unpadded) -> Tensor:
        """[CLS] rows of (N, H) -> pooled (B, H)."""
        if self.pooler is None:
            raise ValueError("this BertModel was built with add_pooling_layer=False")
        return self.pooler(hidden.index_select(0, layout.first_token))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> BertModelOutput:
        hidden, layout = self.encode(input_ids, attention_mask, token_type_ids)
        pooled = None if self.pooler is None else self.pool(hidden, layout)
        return BertModelOutput(pad(hidden, layout, input_ids.shape[1]), pooled)


class BertForPreTraining(_BertBase):
    """BERT with the MLM and NSP heads (HF ``BertForPreTraining`` names and semantics)."""

    _optional_prefixes = ("cls.", "bert.pooler.")

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
        self._init_weights()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, labels: Tensor | None = None,
                next_sentence_label: Tensor | None = None) -> BertPreTrainingOutput:
        """input_ids, attention_mask, token_type_ids, labels: (B, T) long (labels -100 =
        not predicted); next_sentence_label: (B,) long, -100 = no NSP target."""
        seqlen = input_ids.shape[1]
        x, layout = self.bert.embed(input_ids, attention_mask, token_type_ids)  # (N, H)
        losses = []
        mlm_loss = nsp_loss = mlm_correct = mlm_count = nsp_correct = nsp_count = None
        if labels is None:
            hidden = self.bert.encoder(x, layout)  # (N, H)
            pooled = self.bert.pool(hidden, layout)
            logits = pad(self.cls.predictions(hidden), layout, seqlen)  # (B, T, V)
        else:
            # Only masked tokens and [CLS] feed the heads: the last layer computes its
            # feed-forward block for those K rows alone (keys/values still use all tokens).
            target = unpad(labels[:, :layout.seqlen], layout)  # (N,)
            needed = target != -100
            needed[layout.first_token] = True
            keep = needed.nonzero().squeeze(1)  # (K,)
            hidden = self.bert.encoder(x, layout, keep=keep)  # (K, H)
            cls_rows = (torch.cumsum(needed, 0) - 1).index_select(0, layout.first_token)  # (B,)
            pooled = self.bert.pooler(hidden.index_select(0, cls_rows))
            target = target.index_select(0, keep)
            sel = (target != -100).nonzero().squeeze(1)  # (M,) rows of `hidden`
            target = target.index_select(0, sel)
            logits = self.cls.predictions(hidden.index_select(0, sel))  # (M, V)
            mlm_loss = F.cross_entropy(logits, target) if sel.numel() else logits.sum() * 0.0
            losses.append(mlm_loss)
            with torch.no_grad():
                mlm_correct = (logits.argmax(-1) == target).sum()
                mlm_count = torch.tensor(sel.numel(), device=logits.device)
        nsp_logits = self.cls.seq_relationship(pooled)  # (B, 2)
        if next_sentence_label is not None:
            valid = next_sentence_label != -100
            nsp_count = valid.sum()
            nsp_loss = (F.cross_entropy(nsp_logits, next_sentence_label, ignore_index=-100)
                        if bool(nsp_count) else nsp_logits.sum() * 0.0)
            losses.append(nsp_loss)
            with torch.no_grad():
                nsp_correct = ((nsp_logits.argmax(-1) == next_sentence_label) & valid).sum()
        loss = sum(losses[1:], losses[0]) if losses else None
        return BertPreTrainingOutput(loss, mlm_loss, nsp_loss, logits, nsp_logits,
                                     mlm_correct, mlm_count, nsp_correct, nsp_count)


class BertForSequenceClassification(_BertBase):
    """``bert.*`` + dropout + ``classifier`` on the pooled [CLS] (HF names and losses).

    Loss: cross entropy over ``num_labels`` classes, or MSE when ``num_labels == 1``
    (regression, e.g. STS scores).
    """

    _optional_prefixes = ("classifier.", "bert.pooler.")
    _ignore_prefixes = ("cls.",)
    _architecture = "BertForSequenceClassification"

    def __init__(self, config: BertConfig, num_labels: int = 2,
                 classifier_dropout: float | None = None):
        super().__init__()
        if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 1:
            raise ConfigError(f"num_labels must be a positive int, got {num_labels!r}")
        self.config = config
        self.num_labels = num_labels
        self.bert = BertModel(config)
        p = config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self._init_weights()

    def _config_extra(self) -> dict[str, Any]:
        labels = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
        return {"architectures": [self._architecture], "id2label": labels,
                "label2id": {v: int(k) for k, v in labels.items()}}

    @classmethod
    def _build(cls, config: BertConfig, raw_config: dict[str, Any], num_labels: int | None = None,
               classifier_dropout: float | None = None) -> BertForSequenceClassification:
        if num_labels is None:
            num_labels = raw_config.get("num_labels") or len(raw_config.get("id2label") or {}) or 2
        return cls(config, num_labels=num_labels, classifier_dropout=classifier_dropout)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None,
                labels: Tensor | None = None) -> SequenceClassifierOutput:
        x, layout = self.bert.embed(input_ids, attention_mask, token_type_ids)
        # Only [CLS] is classified: the last layer's feed-forward runs on B rows, not N.
        cls_hidden = self.bert.encoder(x, layout, keep=layout.first_token)  # (B, H)
        logits = self.classifier(self.dropout(self.bert.pooler(cls_hidden)))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
            else:
                loss = F.cross_entropy(logits, labels.view(-1))
        return SequenceClassifierOutput(loss, logits)


class BertForQuestionAnswering(_BertBase):
    """Extractive QA (SQuAD / CMRC 2018 style): ``bert.*`` without pooler + ``qa_outputs``
    (H -> 2: start and end score of every token), HF names and loss.

    The state dict is HF ``BertForQuestionAnswering``'s: HF builds its encoder with
    ``add_pooling_layer=False``, so there is no ``bert.pooler.*``; a checkpoint that has one
    (pretraining, sequence classification) loads with the pooler dropped silently, like
    ``cls.*``. ``qa_outputs.*`` absent from the file (a pretraining checkpoint) stays randomly
    initialised and is listed in ``load_report.initialized``.

    Padding convention: the encoder runs on the real tokens only, so padding positions
    (``attention_mask == 0``) get no score; their start/end logits are set to
    :attr:`PAD_LOGIT` (-10000.0: finite, so sums of a start and an end logit stay finite in
    fp16/bf16 too, and exp() of it is 0, so softmax / argmax never pick a pad). transformers
    computes real logits at pad positions instead, so logits agree with HF's at real
    positions, and the loss equals HF's exactly only when the batch has no padding (with
    padding HF's softmax also spreads mass over the pad positions).
    """

    PAD_LOGIT = -10000.0
    _optional_prefixes = ("qa_outputs.",)
    _ignore_prefixes = ("cls.", "bert.pooler.")
    _architecture = "BertForQuestionAnswering"

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self._init_weights()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, start_positions: Tensor | None = None,
                end_positions: Tensor | None = None) -> QuestionAnsweringOutput:
        """input_ids, attention_mask, token_type_ids: (B, T) long; start_positions,
        end_positions: (B,) long token indices (values outside [0, T) are ignored, as in HF)."""
        seqlen = input_ids.shape[1]
        x, layout = self.bert.embed(input_ids, attention_mask, token_type_ids)  # (N, H)
        hidden = self.bert.encoder(x, layout)  # (N, H): every token is scored
        logits = pad(self.qa_outputs(hidden), layout, seqlen)  # (B, T, 2), zeros at padding
        if attention_mask is not None:
            # pad() leaves zeros at trimmed/unpadded cells; with indices None (no unpadding)
            # the pad cells hold computed scores. Both become PAD_LOGIT.
            logits = logits.masked_fill(~attention_mask.bool()[:, :, None], self.PAD_LOGIT)
        start_logits, end_logits = (y.squeeze(-1).contiguous() for y in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            if start_positions.dim() > 1:
                start_positions = start_positions.squeeze(-1)
            if end_positions.dim() > 1:
                end_positions = end_positions.squeeze(-1)
            ignored = seqlen  # positions outside the input are clamped to T and ignored
            start_positions = start_positions.clamp(0, ignored)
            end_positions = end_positions.clamp(0, ignored)
            loss = (F.cross_entropy(start_logits, start_positions, ignore_index=ignored)
                    + F.cross_entropy(end_logits, end_positions, ignore_index=ignored)) / 2
        return QuestionAnsweringOutput(loss, start_logits, end_logits)


class BertForMultipleChoice(_BertBase):
    """``bert.*`` + dropout + ``classifier`` (H -> 1) on the pooled [CLS] of each choice
    (HF ``BertForMultipleChoice`` names and loss, e.g. C3 / CHID).

    The (B, C, T) inputs are flattened to (B*C, T) rows; each row is encoded on its real
    tokens and, as in BertForSequenceClassification, the last layer's feed-forward runs only
    on the B*C [CLS] rows. Logits are the per-choice scores reshaped to (B, C).
    """

    _optional_prefixes = ("classifier.", "bert.pooler.")
    _ignore_prefixes = ("cls.",)
    _architecture = "BertForMultipleChoice"

    def __init__(self, config: BertConfig, classifier_dropout: float | None = None):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        p = config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self._init_weights()

    @classmethod
    def _build(cls, config: BertConfig, raw_config: dict[str, Any],
               classifier_dropout: float | None = None) -> BertForMultipleChoice:
        return cls(config, classifier_dropout=classifier_dropout)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None,
                labels: Tensor | None = None) -> MultipleChoiceOutput:
        """input_ids, attention_mask, token_type_ids: (B, C, T) long; labels: (B,) long, the
        index of the right choice."""
        bsz, choices, seqlen = input_ids.shape
        flat = [None if t is None else t.reshape(bsz * choices, seqlen)
                for t in (input_ids, attention_mask, token_type_ids)]  # (B*C, T) each
        x, layout = self.bert.embed(*flat)  # (N, H)
        cls_hidden = self.bert.encoder(x, layout, keep=layout.first_token)  # (B*C, H)
        logits = self.classifier(self.dropout(self.bert.pooler(cls_hidden)))  # (B*C, 1)
        logits = logits.view(bsz, choices)  # (B, C)
        loss = None if labels is None else F.cross_entropy(logits, labels.view(-1))
        return MultipleChoiceOutput(loss, logits)


__all__ = [
    "BertConfig", "BertModel", "BertForPreTraining", "BertForSequenceClassification",
    "BertForQuestionAnswering", "BertForMultipleChoice",
    "BertPreTrainingOutput", "BertModelOutput", "SequenceClassifierOutput",
    "QuestionAnsweringOutput", "MultipleChoiceOutput", "LoadReport",
]
