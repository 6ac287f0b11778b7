"""zhbert.model.modeling / zhbert.model.weights against transformers as the reference implementation.

All models are randomly initialised (no downloads); shapes are small so the file runs in
seconds. transformers' BertForPreTraining is the oracle for names, shapes, logits and losses.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

import transformers
from zhbert import BertConfig, BertForPreTraining, BertForSequenceClassification, BertModel
from zhbert.errors import CheckpointError, ConfigError
from zhbert.model.padding import pad, unpad, unpad_mask
from zhbert.model.weights import load_state_dict, normalize_state_dict

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=128, max_position_embeddings=64)
ATOL = 1e-5


def hf_model(cls=transformers.BertForPreTraining, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(transformers.BertConfig(**{**SMALL, **kw})).eval()


def batch(seed=0, b=4, t=20, vocab=200):
    """Right-padded batch with two segments, MLM labels and NSP labels (collator layout)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [t, t - 7, 5, t - 1][:b]
    ids = torch.randint(5, vocab, (b, t), generator=g)
    mask = torch.zeros(b, t, dtype=torch.long)
    types = torch.zeros(b, t, dtype=torch.long)
    labels = torch.full((b, t), -100)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        types[i, n // 2:n] = 1
        pos = torch.randperm(n - 2, generator=g)[: max(1, n // 6)] + 1
        labels[i, pos] = ids[i, pos]
    ids[mask == 0] = 0
    ids[:, 0] = 2
    nsp = torch.tensor([0, 1, 1, 0][:b])
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels,
                next_sentence_label=nsp)


def no_labels(bt):
    return {k: bt[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def assert_close(a, b, atol=ATOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert (a - b).abs().max().item() <= atol, (a - b).abs().max().item()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf")
    hf_model().save_pretrained(d)
    return d


# ----------------------------------------------------------------------------- names/shapes
def test_state_dict_is_hf_state_dict():
    for kw in (SMALL, dict(SMALL, vocab_size=21128)):
        ours = BertForPreTraining(BertConfig(**kw)).state_dict()
        theirs = transformers.BertForPreTraining(transformers.BertConfig(**kw)).state_dict()
        assert ours.keys() == theirs.keys()
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    m = BertForPreTraining(BertConfig(**SMALL))
    assert m.cls.predictions.decoder.weight is m.bert.embeddings.word_embeddings.weight
    assert m.cls.predictions.decoder.bias is m.cls.predictions.bias
    assert m.bert.embeddings.word_embeddings.weight[0].abs().sum() == 0  # padding row


def test_bert_model_names_match_hf_bert_model():
    ours = BertModel(BertConfig(**SMALL)).state_dict()
    theirs = transformers.BertModel(transformers.BertConfig(**SMALL)).state_dict()
    assert ours.keys() == theirs.keys()


# ------------------------------------------------------------------------------- parity
def test_hf_checkpoint_gives_hf_logits_and_loss(hf_dir):
    hf = transformers.BertForPreTraining.from_pretrained(hf_dir).eval()
    ours, report = BertForPreTraining.from_pretrained(hf_dir, output_loading_info=True)
    ours.eval()
    assert report.initialized == [] and report.unexpected == []
    bt = batch()
    real = bt["attention_mask"].bool()
    with torch.no_grad():
        ref = hf(**bt)
        out = ours(**no_labels(bt))
        out_l = ours(**bt)
    assert_close(out.prediction_logits[real], ref.prediction_logits[real])
    assert_close(out.seq_relationship_logits, ref.seq_relationship_logits)
    # with labels: logits only at labelled positions, same loss as HF's all-position loss
    masked = bt["labels"] != -100
    assert out_l.prediction_logits.shape == (int(masked.sum()), SMALL["vocab_size"])
    assert_close(out_l.prediction_logits, ref.prediction_logits[masked])
    assert abs(out_l.loss.item() - ref.loss.item()) <= ATOL
    assert_close(out_l.seq_relationship_logits, ref.seq_relationship_logits)
    assert out_l.mlm_count.item() == int(masked.sum())
    pred = ref.prediction_logits[masked].argmax(-1)
    assert out_l.mlm_correct.item() == int((pred == bt["labels"][masked]).sum())
    assert out_l.nsp_count.item() == 4


def test_zhbert_checkpoint_loads_in_transformers(tmp_path):
    torch.manual_seed(1)
    ours = BertForPreTraining(BertConfig(**SMALL)).eval()
    ours.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == ["BertForPreTraining"] and cfg["model_type"] == "bert"
    hf, info = transformers.BertForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    hf.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    bt = batch(seed=3)
    real = bt["attention_mask"].bool()
    with torch.no_grad():
        ref, out = hf(**bt), ours(**bt)
    assert_close(out.prediction_logits, ref.prediction_logits[bt["labels"] != -100])
    assert_close(out.seq_relationship_logits, ref.seq_relationship_logits)
    assert abs(out.loss.item() - ref.loss.item()) <= ATOL
    for k, v in hf.state_dict().items():
        assert torch.equal(v, ours.state_dict()[k]), k
    assert real.any()


def test_gradients_match_hf(hf_dir):
    """Same loss => same gradients; dropout off to compare deterministically."""
    hf = transformers.BertForPreTraining.from_pretrained(hf_dir).eval()
    ours = BertForPreTraining.from_pretrained(hf_dir).eval()
    bt = batch(seed=5)
    hf(**bt).loss.backward()
    ours(**bt).loss.backward()
    theirs = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, theirs[name].grad, atol=1e-5)


def test_unpadded_equals_padded_path(hf_dir):
    ours = BertForPreTraining.from_pretrained(hf_dir).eval()
    bt = batch(seed=7)
    bt["attention_mask"][:, -2:] = 0  # trailing all-padding columns get trimmed
    bt["labels"][:, -2:] = -100
    with torch.no_grad():
        fast = ours(**bt)
        ours.bert.use_unpadding = False
        slow = ours(**bt)
        slow_all = ours(**no_labels(bt))  # padded path, logits at all positions
        ours.bert.use_unpadding = True
        fast_all2 = ours(**no_labels(bt))
    assert_close(fast.prediction_logits, slow.prediction_logits)
    assert_close(fast.seq_relationship_logits, slow.seq_relationship_logits)
    assert abs(fast.loss.item() - slow.loss.item()) <= ATOL
    real = bt["attention_mask"].bool()
    assert fast_all2.prediction_logits.shape == (4, 20, SMALL["vocab_size"])
    assert_close(fast_all2.prediction_logits[real], slow_all.prediction_logits[real])


def test_padding_helpers_roundtrip():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    layout = unpad_mask(mask, 2, 5)
    assert layout.seqlen == 3 and layout.indices.tolist() == [0, 1, 2, 3, 4]
    assert layout.first_token.tolist() == [0, 3]
    x = torch.arange(2 * 3 * 2.0).view(2, 3, 2)
    flat = unpad(x, layout)  # (N, 2)
    assert flat.shape == (5, 2)
    back = pad(flat, layout, seqlen=5)
    assert back.shape == (2, 5, 2)
    assert torch.equal(back[0, :3], x[0]) and torch.equal(back[1, :2], x[1, :2])
    assert back[1, 2:].abs().sum() == 0 and back[:, 3:].abs().sum() == 0
    # left padding: cannot unpad ([CLS] not at column 0) -> keeps every cell
    left = unpad_mask(torch.tensor([[0, 1, 1], [1, 1, 1]]), 2, 3)
    assert left.indices is None and left.attn_mask is not None


def test_bert_model_outputs_match_hf():
    torch.manual_seed(0)
    hf = transformers.BertModel(transformers.BertConfig(**SMALL)).eval()
    ours = BertModel(BertConfig(**SMALL)).eval()
    ours.load_state_dict(hf.state_dict())
    bt = no_labels(batch(seed=2))
    real = bt["attention_mask"].bool()
    with torch.no_grad():
        ref, out = hf(**bt), ours(**bt)
    assert_close(out.last_hidden_state[real], ref.last_hidden_state[real])
    assert_close(out.pooler_output, ref.pooler_output)


# ------------------------------------------------------------------------------ losses
def test_nsp_ignored_rows_and_pair_mode_none():
    torch.manual_seed(0)
    ours = BertForPreTraining(BertConfig(**SMALL)).train()
    bt = batch()
    bt["next_sentence_label"] = torch.full((4,), -100)
    out = ours(**bt)
    assert out.nsp_loss.item() == 0.0 and out.nsp_count.item() == 0
    assert torch.isfinite(out.loss) and abs(out.loss.item() - out.mlm_loss.item()) < 1e-7
    out.loss.backward()
    assert ours.cls.seq_relationship.weight.grad.abs().sum() == 0
    # partly ignored: mean over the valid rows only
    ours.eval()
    bt["next_sentence_label"] = torch.tensor([0, -100, 1, -100])
    with torch.no_grad():
        out = ours(**bt)
    want = torch.nn.functional.cross_entropy(out.seq_relationship_logits[[0, 2]],
                                             torch.tensor([0, 1]))
    assert abs(out.nsp_loss.item() - want.item()) < 1e-6 and out.nsp_count.item() == 2
    # no masked token at all: mlm_loss is 0, not NaN
    bt["labels"][:] = -100
    with torch.no_grad():
        out = ours(**bt)
    assert out.mlm_loss.item() == 0.0 and out.mlm_count.item() == 0


def test_training_steps_reduce_loss():
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(**SMALL, hidden_dropout_prob=0.0)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    bt = batch(seed=11)
    losses = []
    for _ in range(12):
        loss = model(**bt).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_gradient_checkpointing_same_grads():
    torch.manual_seed(0)
    cfg = BertConfig(**SMALL, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    a = BertForPreTraining(cfg).train()
    b = BertForPreTraining(cfg).train()
    b.load_state_dict(a.state_dict())
    b.gradient_checkpointing_enable()
    bt = batch()
    a(**bt).loss.backward()
    b(**bt).loss.backward()
    gb = dict(b.named_parameters())
    for name, p in a.named_parameters():
        assert_close(p.grad, gb[name].grad, atol=1e-6)


# --------------------------------------------------------------------------- loading rules
def _legacy(sd):
    """Rewrite an HF state dict the way old / bare checkpoints look."""
    out = {}
    for k, v in sd.items():
        if k.startswith("cls.seq_relationship") or k == "cls.predictions.decoder.weight":
            continue  # no NSP head, no tied decoder copy
        if k == "cls.predictions.bias":
            k = "cls.predictions.decoder.bias"  # bias only under the decoder name
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        if k.startswith("bert."):
            k = k[len("bert."):]
        out[k] = v.clone()
    out["embeddings.position_ids"] = torch.arange(SMALL["max_position_embeddings"])[None]
    return out


def test_legacy_checkpoint_loads(tmp_path, hf_dir):
    hf = transformers.BertForPreTraining.from_pretrained(hf_dir).eval()
    transformers.BertConfig(**SMALL).save_pretrained(tmp_path)
    torch.save(_legacy(hf.state_dict()), tmp_path / "pytorch_model.bin")
    ours, report = BertForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    ours.eval()
    assert report.initialized == ["cls.seq_relationship.bias", "cls.seq_relationship.weight"]
    assert report.unexpected == []
    bt = batch(seed=4)
    with torch.no_grad():
        ref, out = hf(**bt), ours(**bt)
    assert_close(out.prediction_logits, ref.prediction_logits[bt["labels"] != -100])
    assert torch.equal(ours.cls.predictions.bias, hf.cls.predictions.bias)


def test_normalize_state_dict_names():
    sd = {"embeddings.LayerNorm.gamma": torch.ones(2), "bert.embeddings.position_ids": torch.ones(1),
          "encoder.layer.0.output.LayerNorm.beta": torch.zeros(2),
          "cls.predictions.decoder.bias": torch.ones(3)}
    assert sorted(normalize_state_dict(sd)) == [
        "bert.embeddings.LayerNorm.weight", "bert.encoder.layer.0.output.LayerNorm.bias",
        "cls.predictions.bias"]
    assert sorted(normalize_state_dict(sd, target_prefix="")) == [
        "cls.predictions.bias", "embeddings.LayerNorm.weight", "encoder.layer.0.output.LayerNorm.bias"]


def test_shape_mismatch_names_tensor(tmp_path, hf_dir):
    sd = load_state_dict(hf_dir)
    sd["bert.encoder.layer.1.intermediate.dense.weight"] = torch.zeros(100, 64)
    save_file(sd, str(tmp_path / "model.safetensors"))
    BertConfig(**SMALL).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"layer\.1\.intermediate\.dense\.weight.*\(100, 64\).*\(128, 64\)"):
        BertForPreTraining.from_pretrained(tmp_path)


def test_missing_encoder_keys_and_unexpected_keys(tmp_path, hf_dir):
    sd = load_state_dict(hf_dir)
    del sd["bert.encoder.layer.0.attention.self.key.weight"]
    save_file(sd, str(tmp_path / "model.safetensors"))
    BertConfig(**SMALL).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"missing 1 required.*attention\.self\.key\.weight"):
        BertForPreTraining.from_pretrained(tmp_path)
    sd = load_state_dict(hf_dir)
    sd["bert.encoder.layer.0.extra.weight"] = torch.zeros(2)
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.warns(UserWarning, match=r"unexpected.*layer\.0\.extra\.weight"):
        BertForPreTraining.from_pretrained(tmp_path)


class _Evil:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_bin_loaded_with_weights_only(tmp_path):
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(2), "x": _Evil()},
               tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_state_dict(tmp_path)
    with pytest.raises(CheckpointError, match="no weights"):
        load_state_dict(tmp_path / "..")


def test_sharded_safetensors_and_preference(tmp_path, hf_dir):
    sd = load_state_dict(hf_dir)
    keys = sorted(sd)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half],
              "model-00002-of-00002.safetensors": keys[half:]}
    for name, ks in shards.items():
        save_file({k: sd[k] for k in ks}, str(tmp_path / name))
    index = {"weight_map": {k: name for name, ks in shards.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    torch.save({"junk": torch.zeros(1)}, tmp_path / "pytorch_model.bin")  # lower priority
    loaded = load_state_dict(tmp_path)
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)


# ------------------------------------------------------------------------ pre-LN variant
def test_pre_layernorm_runs_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(**SMALL, pre_layernorm=True)).eval()
    extra = set(model.state_dict()) - set(hf_model().state_dict())
    assert extra == {"bert.encoder.final_layer_norm.weight", "bert.encoder.final_layer_norm.bias"}
    bt = batch()
    with torch.no_grad():
        out = model(**bt)
    model.save_pretrained(tmp_path)
    again = BertForPreTraining.from_pretrained(tmp_path).eval()
    assert again.config.pre_layernorm
    with torch.no_grad():
        out2 = again(**bt)
    assert torch.isfinite(out.loss)
    assert_close(out.prediction_logits, out2.prediction_logits, atol=0)
    assert_close(out.seq_relationship_logits, out2.seq_relationship_logits, atol=0)


def test_pre_layernorm_export_is_refused_by_transformers_and_reloads_in_zhbert(tmp_path):
    """transformers has no pre-LN BERT: an export it would load as `bert` (dropping the final
    LayerNorm, moving every LayerNorm after its sublayer) must be refused by its own Auto
    classes, while zhbert reads it back exactly -- and still reads pre-LN checkpoints written
    before the rename (model_type bert + pre_layernorm true)."""
    torch.manual_seed(4)
    model = BertForPreTraining(BertConfig(**SMALL, pre_layernorm=True)).eval()
    bt = batch(seed=4)
    with torch.no_grad():
        ref = model(**bt)
    new = tmp_path / "new"
    model.save_pretrained(new)
    # config.json as zhbert.train.checkpoint.save_hf writes it for every pretraining export
    model.config.save_pretrained(new, architectures=["BertForPreTraining"])
    cfg = json.loads((new / "config.json").read_text())
    assert cfg["model_type"] == "zhbert-preln-bert" and cfg["pre_layernorm"] is True
    assert cfg["architectures"] == ["ZhbertPreLNBertForPreTraining"]
    for auto in (transformers.AutoConfig, transformers.AutoModel, transformers.AutoModelForPreTraining):
        with pytest.raises(ValueError, match="zhbert-preln-bert"):
            auto.from_pretrained(new)

    old = tmp_path / "old"  # as zhbert wrote pre-LN models before
    old.mkdir()
    (old / "model.safetensors").write_bytes((new / "model.safetensors").read_bytes())
    (old / "config.json").write_text(json.dumps(dict(cfg, model_type="bert", architectures=["BertForPreTraining"])))
    for d in (new, old):
        again, report = BertForPreTraining.from_pretrained(d, output_loading_info=True)
        assert again.config.pre_layernorm and report.initialized == [] and report.unexpected == []
        with torch.no_grad():
            out = again.eval()(**bt)
        assert_close(out.prediction_logits, ref.prediction_logits, atol=0)
        assert_close(out.seq_relationship_logits, ref.seq_relationship_logits, atol=0)
        assert out.loss.item() == ref.loss.item()
    # re-saving an old one writes the new names
    BertForPreTraining.from_pretrained(old).save_pretrained(tmp_path / "resaved")
    assert json.loads((tmp_path / "resaved" / "config.json").read_text())["model_type"] == "zhbert-preln-bert"
    # a config that says pre-LN model type but post-LN layers is contradictory
    with pytest.raises(ConfigError, match="zhbert-preln-bert.*pre_layernorm"):
        BertConfig.from_dict(dict(cfg, pre_layernorm=False), source="x/config.json")

    # fine-tuned classifiers too (zhbert eval clue saves BertForSequenceClassification)
    clf = BertForSequenceClassification(BertConfig(**SMALL, pre_layernorm=True), num_labels=3).eval()
    clf.save_pretrained(tmp_path / "clf")
    assert json.loads((tmp_path / "clf" / "config.json").read_text())["architectures"] == \
        ["ZhbertPreLNBertForSequenceClassification"]
    with pytest.raises(ValueError, match="zhbert-preln-bert"):
        transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "clf")
    clf2 = BertForSequenceClassification.from_pretrained(tmp_path / "clf").eval()
    with torch.no_grad():
        assert torch.equal(clf2(**no_labels(bt)).logits, clf(**no_labels(bt)).logits)


def test_post_layernorm_export_keeps_transformers_names(tmp_path):
    torch.manual_seed(5)
    model = BertForPreTraining(BertConfig(**SMALL)).eval()
    model.save_pretrained(tmp_path)
    model.config.save_pretrained(tmp_path, architectures=["BertForPreTraining"])  # as save_hf does
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert (cfg["model_type"], cfg["architectures"], cfg["pre_layernorm"]) == ("bert", ["BertForPreTraining"], False)
    hf = transformers.AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(hf) is transformers.BertForPreTraining
    bt = batch(seed=5)
    with torch.no_grad():
        ref, out = hf(**bt), model(**bt)
    assert_close(out.prediction_logits, ref.prediction_logits[bt["labels"] != -100])
    assert_close(out.seq_relationship_logits, ref.seq_relationship_logits)


@pytest.mark.parametrize("pre_ln", [False, True])
def test_model_card_library_matches_what_loads_it(tmp_path, pre_ln):
    """zhbert release's README.md: `library_name: transformers` only where transformers loads it."""
    from zhbert.release import _Source, model_card

    model = BertForPreTraining(BertConfig(**SMALL, pre_layernorm=pre_ln))
    model.save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n", encoding="utf-8")
    cfg = json.loads((tmp_path / "config.json").read_text())
    card = model_card("m", {"config": cfg, "params": 1}, _Source(tmp_path, {}, None, None), 2)
    front = card.split("---")[1]
    if pre_ln:
        assert "library_name: zhbert" in front and "transformers" not in front
        assert "from transformers import BertForPreTraining" not in card
        assert "from zhbert import BertForPreTraining" in card
    else:
        assert "library_name: transformers" in front
        assert "from transformers import BertForPreTraining" in card


# ------------------------------------------------------------------ sequence classification
def test_sequence_classification_parity_with_hf(tmp_path):
    hf = hf_model(transformers.BertForSequenceClassification, num_labels=3)
    hf.save_pretrained(tmp_path)
    ours = BertForSequenceClassification.from_pretrained(tmp_path)
    ours.eval()
    assert ours.num_labels == 3 and ours.load_report.initialized == []
    bt = batch(seed=9)
    labels = torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        ref = hf(**no_labels(bt), labels=labels)
        out = ours(**no_labels(bt), labels=labels)
    assert_close(out.logits, ref.logits)
    assert abs(out.loss.item() - ref.loss.item()) <= ATOL
    # and back: our save loads in transformers with the same logits
    ours.save_pretrained(tmp_path / "ours")
    hf2 = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        assert_close(hf2(**no_labels(bt)).logits, out.logits)


def test_sequence_classification_regression_loss():
    hf = hf_model(transformers.BertForSequenceClassification, num_labels=1)
    ours = BertForSequenceClassification(BertConfig(**SMALL), num_labels=1).eval()
    ours.load_state_dict(hf.state_dict())
    bt = batch(seed=9)
    labels = torch.tensor([0.5, 1.0, 4.0, 2.5])
    with torch.no_grad():
        ref = hf(**no_labels(bt), labels=labels)
        out = ours(**no_labels(bt), labels=labels)
    assert out.logits.shape == (4, 1)
    assert abs(out.loss.item() - ref.loss.item()) <= ATOL


def test_sequence_classification_from_pretraining_checkpoint(tmp_path, hf_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="zhbert.model.weights"):
        model = BertForSequenceClassification.from_pretrained(hf_dir, num_labels=5)
    assert model.num_labels == 5
    assert model.load_report.initialized == ["classifier.bias", "classifier.weight"]
    assert not any(k.startswith("cls.") for k in model.state_dict())
    assert "classifier.weight" in caplog.text
    pre = BertForPreTraining.from_pretrained(hf_dir)
    assert torch.equal(model.bert.encoder.layer[1].output.dense.weight,
                       pre.bert.encoder.layer[1].output.dense.weight)
    # config says vocab 300 but the embeddings have 200 rows
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg["vocab_size"] = 300
    for f in hf_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"word_embeddings\.weight.*\(200, 64\).*\(300, 64\).*vocab"):
        BertForSequenceClassification.from_pretrained(tmp_path, num_labels=2)


# ---------------------------------------------------------------------------------- config
def test_config_from_hf_json_and_validation(tmp_path, hf_dir):
    cfg = BertConfig.from_pretrained(hf_dir)
    assert cfg.hidden_size == 64 and cfg.pad_token_id == 0 and not cfg.pre_layernorm
    d = cfg.to_dict()
    d.update(directionality="bidi", pooler_fc_size=768, pooler_type="first_token_transform")
    assert BertConfig.from_dict(d) == cfg
    with pytest.raises(ConfigError, match="hidden_size.*num_attention_heads"):
        BertConfig.from_dict(dict(d, num_attention_heads=5))
    with pytest.raises(ConfigError, match="intermediate_size"):
        BertConfig.from_dict(dict(d, intermediate_size="128"))
    with pytest.raises(ConfigError, match="hidden_act"):
        BertConfig.from_dict(dict(d, hidden_act="swishy"))
    with pytest.raises(ConfigError, match="hidden_dropout_prob"):
        BertConfig.from_dict(dict(d, hidden_dropout_prob=1.5))
    with pytest.raises(ConfigError, match="hiden_size"):
        BertConfig.from_dict(dict(d, hiden_size=3), strict=True)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json"):
        BertConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["tiny", "small", "base", "large"])
def test_model_yaml_configs(name):
    d = yaml.safe_load((ROOT / "configs" / "model" / f"{name}.yaml").read_text())
    cfg = BertConfig.from_dict(d, strict=True, source=f"configs/model/{name}.yaml")
    assert cfg.vocab_size == 21128 and cfg.max_position_embeddings == 512
    with torch.device("meta"):
        n = sum(p.numel() for p in BertForPreTraining(cfg).parameters())
    assert n > 0


def test_bert_model_from_pretraining_checkpoint(hf_dir, recwarn):
    hf = transformers.BertForPreTraining.from_pretrained(hf_dir).eval()
    ours = BertModel.from_pretrained(hf_dir).eval()
    assert ours.load_report.initialized == [] and ours.load_report.unexpected == []
    assert not [w for w in recwarn if "unexpected" in str(w.message)]
    bt = no_labels(batch(seed=6))
    real = bt["attention_mask"].bool()
    with torch.no_grad():
        ref, out = hf.bert(**bt), ours(**bt)
    assert_close(out.last_hidden_state[real], ref.last_hidden_state[real])
    assert_close(out.pooler_output, ref.pooler_output)
