"""Domain adaptation: extend a released model's vocabulary with a corpus's missing characters.

``zhbert vocab extend --base NAME_OR_DIR --input CORPUS --add N --output DIR`` appends to the
base vocab.txt the N most frequent characters of CORPUS that the base tokenizer turns into
[UNK] (with ``--words``: also the non-Chinese words it splits into ``##`` pieces or [UNK]),
and writes DIR, a complete HF model directory whose embedding matrix has N more rows::

    base vocab      [PAD] ... [UNK] ... 的 是 ...          ids 0 .. V-1   (unchanged)
    corpus          曰 孔明 ... 袁绍 ... 琰 ...            琰 is [UNK] under the base vocab
    new vocab       [PAD] ... [UNK] ... 的 是 ... 琰 瑁 ... ids 0 .. V-1, then V .. V+N-1

Every old id keeps its token and its embedding, so on text the base vocab covers the new
model computes exactly what the base computed (its first V MLM logits are the base's).

New rows. Each new token is encoded by the *base* tokenizer and its embedding row starts as
the mean of the embedding rows of the pieces it got ("mrna" -> "mr" "##na": their mean). A
character the base mapped to [UNK] gets the mean of the whole base embedding matrix instead
(all V rows), not the [UNK] row: every new character would otherwise start identical to
[UNK] and to each other. The MLM decoder bias of a new id starts the same way (mean of the
pieces' biases, or of the whole bias vector). The decoder weight is the embedding matrix (tied,
as in every BERT), so it grows with it.

Only single characters and non-Chinese words can be new tokens: BERT's tokenizer splits every
CJK character off on its own before looking anything up (``BertNormalizer(handle_chinese_chars)``),
so a Chinese word such as 孔明 in vocab.txt would never be produced.

The corpus is read by the readers of ``zhbert prepare`` / ``zhbert vocab build`` (every format,
compressed or not), normalised as the base model's tokenizer records (``fullwidth``, ``t2s``).
DIR also holds ``vocab_extend.json``: what was added, with counts, and the corpus's [UNK] rate
before and after. ``model.init_from: DIR`` + ``data.vocab: DIR/vocab.txt`` continue
pretraining on it; docs/domain_adaptation.md is the whole recipe.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

from zhbert.errors import CheckpointError, ConfigError, DataError

STATS_NAME = "vocab_extend.json"
_BATCH = 2048  # sentences per tokenizer call
_MAX_WORD_CHARS = 100  # WordPiece's max_input_chars_per_word: longer words are [UNK] anyway


@dataclass
class Added:
    """One appended token: its id, text, corpus count, and how its rows were initialised."""

    id: int
    token: str
    kind: str  # "char" | "word"
    count: int  # occurrences in the corpus as an [UNK] character / a split word
    init_pieces: list[str]  # the base pieces averaged; ["[UNK]"] = mean of the whole matrix


@dataclass
class ExtendStats:
    base: str
    base_vocab_size: int
    new_vocab_size: int
    corpus_files: list[str]
    sentences: int = 0
    tokens_before: int = 0
    unk_before: int = 0
    tokens_after: int = 0
    unk_after: int = 0
    candidates: int = 0  # distinct characters (and words) that could have been added
    added_chars: int = 0
    added_words: int = 0
    added: list[Added] = field(default_factory=list)

    @property
    def unk_rate_before(self) -> float:
        return self.unk_before / max(self.tokens_before, 1)

    @property
    def unk_rate_after(self) -> float:
        return self.unk_after / max(self.tokens_after, 1)

    def line(self) -> str:
        return (f"added {len(self.added)} tokens ({self.added_chars} characters, {self.added_words} words; "
                f"{self.candidates} candidates) -> vocab_size {self.base_vocab_size} -> {self.new_vocab_size}; "
                f"corpus [UNK] {self.unk_before:,}/{self.tokens_before:,} tokens ({100 * self.unk_rate_before:.2f}%) "
                f"-> {self.unk_after:,}/{self.tokens_after:,} ({100 * self.unk_rate_after:.2f}%)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unk_rate_before"], d["unk_rate_after"] = self.unk_rate_before, self.unk_rate_after
        return d


# ------------------------------------------------------------------------------- the corpus
def _sentences(paths: Sequence[str | Path], tokenizer, fmt: str, text_field: str) -> Iterator[list[str]]:
    """Batches of corpus sentences, normalised as the base model's pretraining data was."""
    from zhbert.prep.corpus import iter_documents

    norm = tokenizer.normalization or {}
    batch: list[str] = []
    for doc in iter_documents(list(paths), fmt=fmt, text_field=text_field,
                              fullwidth=bool(norm.get("fullwidth")), t2s=bool(norm.get("t2s"))):
        batch.extend(doc.sentences)
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _count(paths, tokenizer, fmt: str, text_field: str, words: bool,
           stats: ExtendStats) -> tuple[Counter, Counter]:
    """One pass over the corpus under the base tokenizer: [UNK] characters and split words.

    A character counts once per occurrence inside an [UNK] token (after the tokenizer's
    normalisation: lowercase, accents stripped) when the base vocab lacks it. A word is a head
    token with its ``##`` continuations (or one [UNK] token spanning several characters); it
    counts when it took two or more pieces or was [UNK].
    """
    normalize = tokenizer.backend.normalizer.normalize_str
    vocab, unk, cont = tokenizer.vocab, tokenizer.unk_id, tokenizer.continuation_flags()
    chars: Counter[str] = Counter()
    split_words: Counter[str] = Counter()
    for batch in _sentences(paths, tokenizer, fmt, text_field):
        stats.sentences += len(batch)
        for text, (ids, starts, ends) in zip(batch, tokenizer.fast_path().spans(batch)):
            stats.tokens_before += len(ids)
            i = 0
            while i < len(ids):
                j = i + 1  # the word is ids[i:j]: a head and its "##" continuations
                while j < len(ids) and ids[j] != unk and cont[ids[j]]:
                    j += 1
                if ids[i] == unk:
                    stats.unk_before += 1
                    span = normalize(text[starts[i]:ends[i]])
                    chars.update(c for c in span if not c.isspace() and c not in vocab)
                if words and (j - i > 1 or ids[i] == unk):
                    word = normalize(text[starts[i]:ends[j - 1]])
                    if 1 < len(word) <= _MAX_WORD_CHARS and word not in vocab and not any(map(str.isspace, word)):
                        split_words[word] += 1
                i = j
    if stats.sentences == 0:
        raise DataError(f"{', '.join(map(str, paths))}: no text found in the corpus")
    return chars, split_words


def _unk_after(paths, tokenizer, fmt: str, text_field: str, stats: ExtendStats) -> None:
    """Second pass: tokens and [UNK] tokens of the corpus under the extended tokenizer."""
    for batch in _sentences(paths, tokenizer, fmt, text_field):
        for ids, _, _ in tokenizer.fast_path().spans(batch):
            stats.tokens_after += len(ids)
            stats.unk_after += sum(1 for t in ids if t == tokenizer.unk_id)


# --------------------------------------------------------------------------------- the model
def _new_rows(base_tok, sd: dict, added: list[Added]):
    """Embedding rows (N, H) and decoder biases (N,) of the new tokens (module docstring)."""
    import torch

    emb = sd["bert.embeddings.word_embeddings.weight"]  # (V, H)
    bias = sd["cls.predictions.bias"]  # (V,)
    rows, biases = [], []
    for a in added:
        ids = base_tok.encode(a.token)[0]
        if not ids or base_tok.unk_id in ids:
            a.init_pieces = ["[UNK]"]
            rows.append(emb.mean(0))
            biases.append(bias.mean())
        else:
            a.init_pieces = [base_tok.tokens[i] for i in ids]
            index = torch.tensor(ids)
            rows.append(emb.index_select(0, index).mean(0))
            biases.append(bias.index_select(0, index).mean())
    return torch.stack(rows), torch.stack(biases)


def extend_model(base_dir: Path, base_tok, added: list[Added]):
    """The base ``BertForPreTraining`` with ``len(added)`` rows appended (decoder still tied)."""
    import torch

    from zhbert.model.modeling import BertConfig, BertForPreTraining

    model, report = BertForPreTraining.from_pretrained(base_dir, output_loading_info=True)
    if any(k.startswith("cls.predictions.") for k in report.initialized):
        import warnings

        warnings.warn(f"{base_dir}: no MLM head in the checkpoint; its bias starts at zero", stacklevel=2)
    sd = model.state_dict()
    rows, biases = _new_rows(base_tok, sd, added)
    emb = torch.cat([sd["bert.embeddings.word_embeddings.weight"], rows])
    bias = torch.cat([sd["cls.predictions.bias"], biases])
    config = BertConfig.from_dict({**model.config.to_dict(), "vocab_size": emb.shape[0]})
    new = BertForPreTraining(config)
    sd.update({"bert.embeddings.word_embeddings.weight": emb, "cls.predictions.decoder.weight": emb,
               "cls.predictions.bias": bias, "cls.predictions.decoder.bias": bias})
    new.load_state_dict(sd, strict=True)
    assert new.cls.predictions.decoder.weight is new.bert.embeddings.word_embeddings.weight
    return new


# ------------------------------------------------------------------------------------ entry
def extend_vocab(base: str, inputs: Sequence[str | Path], add: int, output: str | Path, *,
                 words: bool = False, fmt: str = "auto", text_field: str = "text") -> ExtendStats:
    """``zhbert vocab extend`` (module docstring). Returns the stats also written to
    ``OUTPUT/vocab_extend.json``."""
    from zhbert.hub.resolve import resolve_model_dir
    from zhbert.model.modeling import BertConfig
    from zhbert.prep.tokenizer import ChineseTokenizer

    if isinstance(add, bool) or not isinstance(add, int) or add < 1:
        raise ConfigError(f"--add must be a positive number of tokens, got {add!r}")
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"--output {out}: exists and is not an empty directory")
    base_dir = resolve_model_dir(base, what="--base")
    base_tok = ChineseTokenizer.from_dir(base_dir)
    base_vocab_size = BertConfig.from_pretrained(base_dir).vocab_size
    if base_vocab_size != base_tok.vocab_size:
        raise CheckpointError(f"--base {base_dir}: config.json has vocab_size {base_vocab_size} but vocab.txt "
                              f"{base_tok.vocab_size} tokens; new ids would not follow the old ones")

    stats = ExtendStats(base=str(base_dir), base_vocab_size=base_tok.vocab_size, new_vocab_size=base_tok.vocab_size,
                        corpus_files=[str(p) for p in inputs])
    chars, split_words = _count(inputs, base_tok, fmt, text_field, words, stats)
    ranked = sorted([(n, 0, c) for c, n in chars.items()] + [(n, 1, w) for w, n in split_words.items()],
                    key=lambda x: (-x[0], x[1], x[2]))  # most frequent first; characters before words
    stats.candidates = len(ranked)
    if not ranked:
        raise DataError(f"{', '.join(map(str, inputs))}: nothing to add: the base vocab covers every character"
                        + ("" if words else " (--words also adds split words)"))
    stats.added = [Added(base_tok.vocab_size + i, tok, ("char", "word")[kind], n, [])
                   for i, (n, kind, tok) in enumerate(ranked[:add])]
    stats.added_chars = sum(a.kind == "char" for a in stats.added)
    stats.added_words = len(stats.added) - stats.added_chars

    model = extend_model(base_dir, base_tok, stats.added)
    new_tok = ChineseTokenizer(base_tok.tokens + [a.token for a in stats.added], lowercase=base_tok.lowercase)
    new_tok.normalization = base_tok.normalization
    stats.new_vocab_size = new_tok.vocab_size
    _unk_after(inputs, new_tok, fmt, text_field, stats)

    # Written next to OUTPUT and renamed into place: an interrupted run leaves no half model.
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        new_tok.save(tmp)
        (tmp / STATS_NAME).write_text(json.dumps(stats.to_dict(), indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
        if out.exists():
            out.rmdir()
        tmp.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return stats


# ------------------------------------------------------------------------ did it help?
def heldout_mlm(model_dir: str | Path, texts: Sequence[str], *, reference_vocab: Optional[str | Path] = None,
                mask_prob: float = 0.15, seed: int = 0, max_chars: int = 126, batch_size: int = 32) -> dict:
    """Masked-LM loss and accuracy of ``model_dir`` on held-out ``texts`` (the domain check).

    Each text is cut into pieces of ``max_chars`` characters; a token that is one character
    is masked (replaced by [MASK]) with probability ``mask_prob``, decided by
    ``(seed, piece, character offset)`` alone, so two models with different vocabularies
    are scored on the same masked characters. Reports every masked token (``loss``,
    ``acc``; a model predicting [UNK] for an [UNK] character counts as right) and, with
    ``reference_vocab``, only the masked characters that vocab has (``shared_loss``,
    ``shared_acc``): the figures to compare a base model with its extended twin.
    """
    import numpy as np
    import torch

    from zhbert.model.modeling import BertForPreTraining
    from zhbert.prep.tokenizer import ChineseTokenizer, read_vocab

    tok = ChineseTokenizer.from_dir(model_dir)
    shared = set(read_vocab(reference_vocab)) if reference_vocab else None
    model = BertForPreTraining.from_pretrained(model_dir).eval()
    rows = []  # (input_ids, labels, shared flags)
    pieces = [t[k:k + max_chars] for t in texts for k in range(0, len(t), max_chars)]
    for p, (text, (ids, starts, ends)) in enumerate(zip(pieces, tok.fast_path().spans(pieces))):
        draw = np.random.default_rng([seed, p]).random(len(text))  # per character, whatever the vocab
        labels = [-100] * len(ids)
        flags = [False] * len(ids)
        inp = list(ids)
        for j, (a, b) in enumerate(zip(starts, ends)):
            if b - a == 1 and not text[a].isspace() and draw[a] < mask_prob:
                labels[j], inp[j] = ids[j], tok.mask_id
                flags[j] = shared is None or text[a] in shared or text[a].lower() in shared
        rows.append(([tok.cls_id, *inp, tok.sep_id], [-100, *labels, -100], [False, *flags, False]))
    loss = correct = n = s_loss = s_correct = s_n = unk_targets = 0.0
    with torch.no_grad():
        for k in range(0, len(rows), batch_size):
            chunk = rows[k:k + batch_size]
            width = max(len(r[0]) for r in chunk)
            ids = torch.tensor([r[0] + [tok.pad_id] * (width - len(r[0])) for r in chunk])
            labels = torch.tensor([r[1] + [-100] * (width - len(r[1])) for r in chunk])
            flags = torch.tensor([r[2] + [False] * (width - len(r[2])) for r in chunk])
            mask = (ids != tok.pad_id).long()
            logits = model(input_ids=ids, attention_mask=mask).prediction_logits  # (B, T, V)
            sel = labels != -100
            gold, lp = labels[sel], torch.log_softmax(logits[sel].float(), -1)
            nll = -lp.gather(1, gold[:, None]).squeeze(1)
            hit = lp.argmax(-1) == gold
            sh = flags[sel]
            loss += float(nll.sum()); correct += float(hit.sum()); n += gold.numel()  # noqa: E702
            s_loss += float(nll[sh].sum()); s_correct += float(hit[sh].sum()); s_n += float(sh.sum())  # noqa: E702
            unk_targets += float((gold == tok.unk_id).sum())
    if n == 0:
        raise DataError("held-out texts: no character was masked (too little text)")
    out = {"model": str(model_dir), "masked": int(n), "loss": loss / n, "acc": correct / n,
           "unk_target_rate": unk_targets / n}
    if shared is not None:
        out.update(shared_masked=int(s_n), shared_loss=s_loss / max(s_n, 1), shared_acc=s_correct / max(s_n, 1))
    return out
