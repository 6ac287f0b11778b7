"""BertForQuestionAnswering / BertForMultipleChoice against transformers as the reference.

Randomly initialised tiny models (no downloads); the file runs in seconds. Only stable
transformers APIs are used (the CI runs both 4.38 and 5.x): ``BertConfig(**kw)``, the model
classes, ``state_dict``/``load_state_dict``, ``save_pretrained`` and
``from_pretrained(..., output_loading_info=True)``.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import transformers
from zhbert.model.modeling import (BertConfig, BertForMultipleChoice, BertForPreTraining,
                                   BertForQuestionAnswering, BertModel, MultipleChoiceOutput,
                                   QuestionAnsweringOutput)

SMALL = dict(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=128, max_position_embeddings=64)
ATOL = 1e-5
PAD = BertForQuestionAnswering.PAD_LOGIT


def assert_close(a, b, atol=ATOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert (a - b).abs().max().item() <= atol, (a - b).abs().max().item()


def hf_model(cls, seed=0):
    torch.manual_seed(seed)
    return cls(transformers.BertConfig(**SMALL)).eval()


def pair(hf_cls, our_cls, seed=0):
    """An HF model and ours with HF's weights copied in (eval mode)."""
    hf = hf_model(hf_cls, seed)
    ours = our_cls(BertConfig(**SMALL)).eval()
    ours.load_state_dict(hf.state_dict())
    return hf, ours


def qa_batch(seed=0, b=4, t=16, lengths=None):
    """Right-padded (B, T) question+passage batch (collator layout); lengths=None: no padding."""
    g = torch.Generator().manual_seed(seed)
    lengths = lengths or [t] * b
    ids = torch.randint(5, SMALL["vocab_size"], (b, t), generator=g)
    mask = torch.zeros(b, t, dtype=torch.long)
    types = torch.zeros(b, t, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        types[i, n // 3:n] = 1
    ids[mask == 0] = 0
    ids[:, 0] = 2
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types)


def mc_batch(seed=0, b=2, c=3, t=12):
    """(B, C, T) choices, some of them padded inside the row, one full length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, SMALL["vocab_size"], (b, c, t), generator=g)
    mask = torch.zeros(b, c, t, dtype=torch.long)
    types = torch.zeros(b, c, t, dtype=torch.long)
    lengths = [[t, 7, 9], [5, t - 1, 8]]
    for i in range(b):
        for j in range(c):
            n = lengths[i][j]
            mask[i, j, :n] = 1
            types[i, j, n // 2:n] = 1
    ids[mask == 0] = 0
    ids[..., 0] = 2
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types)


# ----------------------------------------------------------------------------- names/shapes
@pytest.mark.parametrize("hf_cls,our_cls", [
    (transformers.BertForQuestionAnswering, BertForQuestionAnswering),
    (transformers.BertForMultipleChoice, BertForMultipleChoice),
])
def test_state_dict_is_hf_state_dict(hf_cls, our_cls):
    ours = our_cls(BertConfig(**SMALL)).state_dict()
    theirs = hf_cls(transformers.BertConfig(**SMALL)).state_dict()
    assert ours.keys() == theirs.keys()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_qa_has_no_pooler_and_bert_model_without_pooling_layer():
    qa = BertForQuestionAnswering(BertConfig(**SMALL))
    assert not any(k.startswith("bert.pooler.") for k in qa.state_dict())
    assert qa.qa_outputs.weight.shape == (2, 64)
    ours = BertModel(BertConfig(**SMALL), add_pooling_layer=False)
    theirs = transformers.BertModel(transformers.BertConfig(**SMALL), add_pooling_layer=False)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    out = ours.eval()(**qa_batch(lengths=[16, 9, 4, 15]))
    assert out.pooler_output is None and out.last_hidden_state.shape == (4, 16, 64)
    with pytest.raises(ValueError, match="add_pooling_layer"):
        ours.pool(torch.zeros(3, 64), None)


# ------------------------------------------------------------------------------ QA parity
def test_qa_logits_and_loss_match_hf_without_padding():
    hf, ours = pair(transformers.BertForQuestionAnswering, BertForQuestionAnswering)
    bt = qa_batch(seed=1)
    t = bt["input_ids"].shape[1]
    # one start beyond T (clamped to T = ignored), one end at -5 (clamped to 0: kept)
    start = torch.tensor([3, t + 40, 0, 7])
    end = torch.tensor([5, 9, -5, t - 1])
    with torch.no_grad():
        ref = hf(**bt, start_positions=start, end_positions=end)
        out = ours(**bt, start_positions=start, end_positions=end)
        bare = ours(**bt)
    assert isinstance(out, QuestionAnsweringOutput)
    assert out.start_logits.shape == out.end_logits.shape == (4, t)
    assert_close(out.start_logits, ref.start_logits)
    assert_close(out.end_logits, ref.end_logits)
    assert abs(out.loss.item() - ref.loss.item()) <= ATOL
    assert bare.loss is None and torch.equal(bare.start_logits, out.start_logits)
    # (B, 1) positions are accepted as in HF
    with torch.no_grad():
        col = ours(**bt, start_positions=start[:, None], end_positions=end[:, None])
    assert abs(col.loss.item() - ref.loss.item()) <= ATOL


def test_qa_logits_with_padding_real_positions_match_hf_pads_are_pad_logit():
    hf, ours = pair(transformers.BertForQuestionAnswering, BertForQuestionAnswering, seed=2)
    bt = qa_batch(seed=2, lengths=[16, 9, 4, 12])
    bt["attention_mask"][:, -2:] = 0  # trailing all-padding columns get trimmed internally
    bt["input_ids"][:, -2:] = 0
    real = bt["attention_mask"].bool()
    with torch.no_grad():
        ref = hf(**bt)
        out = ours(**bt)
        ours.bert.use_unpadding = False  # padded reference path: same convention
        slow = ours(**bt)
        ours.bert.use_unpadding = True
    assert out.start_logits.shape == (4, 16)
    for ours_l, ref_l, slow_l in ((out.start_logits, ref.start_logits, slow.start_logits),
                                  (out.end_logits, ref.end_logits, slow.end_logits)):
        assert_close(ours_l[real], ref_l[real])
        assert (ours_l[~real] == PAD).all()
        assert torch.equal(slow_l[~real], ours_l[~real])
        assert_close(slow_l[real], ours_l[real])
    # the loss is finite, and a padding target costs ~|PAD_LOGIT|
    start, end = torch.tensor([1, 2, 3, 4]), torch.tensor([2, 3, 3, 5])
    with torch.no_grad():
        loss = ours(**bt, start_positions=start, end_positions=end).loss
        on_pad = ours(**bt, start_positions=torch.tensor([1, 2, 10, 4]), end_positions=end).loss
    assert torch.isfinite(loss) and on_pad.item() > loss.item() + 1000


# ------------------------------------------------------------------------------ MC parity
def test_mc_logits_and_loss_match_hf_with_padding():
    hf, ours = pair(transformers.BertForMultipleChoice, BertForMultipleChoice, seed=3)
    bt = mc_batch(seed=3)
    labels = torch.tensor([2, 0])
    with torch.no_grad():
        ref = hf(**bt, labels=labels)
        out = ours(**bt, labels=labels)
        bare = ours(**bt)
        # without a mask / token types (HF: all ones / zeros)
        ref_ids = hf(input_ids=bt["input_ids"])
        out_ids = ours(input_ids=bt["input_ids"])
    assert isinstance(out, MultipleChoiceOutput)
    assert out.logits.shape == (2, 3)
    assert_close(out.logits, ref.logits)
    assert abs(out.loss.item() - ref.loss.item()) <= ATOL
    assert bare.loss is None
    assert_close(out_ids.logits, ref_ids.logits)


# ----------------------------------------------------------------------- save / load both ways
def test_qa_save_loads_in_transformers_and_back(tmp_path):
    torch.manual_seed(4)
    ours = BertForQuestionAnswering(BertConfig(**SMALL)).eval()
    ours.save_pretrained(tmp_path / "ours")
    cfg = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert cfg["architectures"] == ["BertForQuestionAnswering"] and cfg["model_type"] == "bert"
    hf, info = transformers.BertForQuestionAnswering.from_pretrained(
        tmp_path / "ours", output_loading_info=True)
    hf.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    bt = qa_batch(seed=4)
    with torch.no_grad():
        ref, out = hf(**bt), ours(**bt)
    assert_close(out.start_logits, ref.start_logits)
    assert_close(out.end_logits, ref.end_logits)
    # reverse: transformers' save -> ours, nothing initialised or unexpected, same logits
    hf.save_pretrained(tmp_path / "hf")
    back, report = BertForQuestionAnswering.from_pretrained(tmp_path / "hf",
                                                            output_loading_info=True)
    back.eval()
    assert report.initialized == [] and report.unexpected == []
    with torch.no_grad():
        again = back(**bt)
    assert_close(again.start_logits, ref.start_logits)
    assert_close(again.end_logits, ref.end_logits)


def test_mc_save_loads_in_transformers_and_back(tmp_path):
    torch.manual_seed(5)
    ours = BertForMultipleChoice(BertConfig(**SMALL)).eval()
    ours.save_pretrained(tmp_path / "ours")
    cfg = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert cfg["architectures"] == ["BertForMultipleChoice"]
    hf, info = transformers.BertForMultipleChoice.from_pretrained(
        tmp_path / "ours", output_loading_info=True)
    hf.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    bt = mc_batch(seed=5)
    with torch.no_grad():
        ref, out = hf(**bt), ours(**bt)
    assert_close(out.logits, ref.logits)
    hf.save_pretrained(tmp_path / "hf")
    back, report = BertForMultipleChoice.from_pretrained(tmp_path / "hf", output_loading_info=True)
    back.eval()
    assert report.initialized == [] and report.unexpected == []
    with torch.no_grad():
        assert_close(back(**bt).logits, ref.logits)


# ------------------------------------------------------------------- from a pretraining save
@pytest.mark.parametrize("source", ["transformers", "zhbert"])
@pytest.mark.parametrize("our_cls,head", [
    (BertForQuestionAnswering, ["qa_outputs.bias", "qa_outputs.weight"]),
    (BertForMultipleChoice, ["classifier.bias", "classifier.weight"]),
])
def test_from_pretraining_checkpoint_inits_head(tmp_path, source, our_cls, head):
    if source == "transformers":
        pre = hf_model(transformers.BertForPreTraining, seed=6)
    else:
        torch.manual_seed(6)
        pre = BertForPreTraining(BertConfig(**SMALL))
    pre.save_pretrained(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = our_cls.from_pretrained(tmp_path)
    # cls.* and (QA) bert.pooler.* are dropped without an "unexpected tensors" warning
    assert not [w for w in caught if "unexpected" in str(w.message)]
    assert model.load_report.initialized == head
    assert model.load_report.unexpected == []
    theirs = pre.state_dict()
    for k, v in model.state_dict().items():
        if k.startswith("bert."):
            assert torch.equal(v, theirs[k]), k
    assert not any(k.startswith("cls.") for k in model.state_dict())


# -------------------------------------------------------------------------------- backward
def test_qa_backward_grads_match_hf():
    hf, ours = pair(transformers.BertForQuestionAnswering, BertForQuestionAnswering, seed=7)
    bt = qa_batch(seed=7)
    kw = dict(start_positions=torch.tensor([1, 4, 40, 6]), end_positions=torch.tensor([2, 9, 3, 6]))
    hf(**bt, **kw).loss.backward()
    ours(**bt, **kw).loss.backward()
    assert ours.qa_outputs.weight.grad is not None and ours.qa_outputs.weight.grad.abs().sum() > 0
    theirs = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, theirs[name].grad)


def test_mc_backward_grads_match_hf():
    hf, ours = pair(transformers.BertForMultipleChoice, BertForMultipleChoice, seed=8)
    bt = mc_batch(seed=8)
    labels = torch.tensor([1, 2])
    hf(**bt, labels=labels).loss.backward()
    ours(**bt, labels=labels).loss.backward()
    assert ours.classifier.weight.grad is not None and ours.classifier.weight.grad.abs().sum() > 0
    theirs = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, theirs[name].grad)


def test_training_mode_and_gradient_checkpointing_run():
    qa = BertForQuestionAnswering(BertConfig(**SMALL)).train()
    qa.gradient_checkpointing_enable()
    out = qa(**qa_batch(lengths=[16, 9, 4, 12]), start_positions=torch.tensor([1, 2, 3, 4]),
             end_positions=torch.tensor([2, 3, 3, 5]))
    out.loss.backward()
    assert qa.qa_outputs.weight.grad.abs().sum() > 0
    mc = BertForMultipleChoice(BertConfig(**SMALL), classifier_dropout=0.2).train()
    assert mc.dropout.p == 0.2
    mc(**mc_batch(), labels=torch.tensor([0, 1])).loss.backward()
    assert mc.classifier.weight.grad.abs().sum() > 0
