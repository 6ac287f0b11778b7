"""``zhbert vocab extend``: old ids keep their meaning, new rows start where documented, the
output is an HF directory transformers loads, and pretraining continues from it.

The base is a tiny randomly initialised BertForPreTraining saved in HF format over the stored
sample vocab (tests/golden/sample_vocab.txt); the domain corpus is corpora/sample plus lines
with characters that vocab lacks (龘 x6, 靐 x4, 齉 x1) and a Latin word it splits (crispr x5).
transformers is the independent reference for loading and logits.
"""

from __future__ import annotations

import gzip
import json
import shutil

import pytest
import torch

from _pretrain_fixtures import REPO, SAMPLE, TINY_MODEL, cpu_env, metrics, overrides, run_script
from zhbert.cli import main
from zhbert.model.modeling import BertConfig, BertForPreTraining
from zhbert.prep.tokenizer import ChineseTokenizer

VOCAB = REPO / "tests" / "golden" / "sample_vocab.txt"
DOMAIN = ["龘龘龘的人。", "龘靐在中国。", "龘靐靐说了crispr和crispr。", "靐龘来了crispr。", "齉。crispr crispr。"]


def _tiny_config(vocab_size: int) -> BertConfig:
    sizes = dict(item.split("=") for item in (o.removeprefix("model.") for o in TINY_MODEL))
    return BertConfig(vocab_size=vocab_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                      **{k: int(v) for k, v in sizes.items()})


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("base")
    tok = ChineseTokenizer.from_vocab(VOCAB)
    torch.manual_seed(0)
    model = BertForPreTraining(_tiny_config(tok.vocab_size))
    with torch.no_grad():
        model.cls.predictions.bias.normal_()  # not all zero, so the new biases are checked too
    model.save_pretrained(d)
    tok.save(d)
    return d


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """corpora/sample + the domain lines, the latter as gzipped jsonl (another reader)."""
    d = tmp_path_factory.mktemp("corpus")
    shutil.copytree(SAMPLE, d, dirs_exist_ok=True)
    with gzip.open(d / "domain.jsonl.gz", "wt", encoding="utf-8") as f:
        for i in range(0, len(DOMAIN), 2):
            f.write(json.dumps({"text": "".join(DOMAIN[i:i + 2])}, ensure_ascii=False) + "\n")
    return d


@pytest.fixture(scope="module")
def extended(base, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ext") / "model"
    assert main(["vocab", "extend", "--base", str(base), "--input", str(corpus / "domain.jsonl.gz"), "--add", "3", "--words",
                 "--output", str(out)]) == 0
    return out


def test_new_tokens_follow_the_old_ids_most_frequent_first(base, extended):
    old = ChineseTokenizer.from_dir(base)
    new = ChineseTokenizer.from_dir(extended)
    assert new.tokens[:old.vocab_size] == old.tokens
    assert new.tokens[old.vocab_size:] == ["龘", "crispr", "靐"]  # seen 6, 5 and 4 times; 齉 once: left out
    assert BertConfig.from_pretrained(extended).vocab_size == old.vocab_size + 3
    stats = json.loads((extended / "vocab_extend.json").read_text(encoding="utf-8"))
    assert [(a["token"], a["count"], a["kind"]) for a in stats["added"]] == [
        ("龘", 6, "char"), ("crispr", 5, "word"), ("靐", 4, "char")]
    assert stats["unk_before"] == 11 and stats["unk_after"] == 1  # 齉 was not added
    # new characters are no longer [UNK]: zhbert's tokenizer and transformers' agree
    from transformers import AutoTokenizer

    text = "龘靐齉说crispr"
    ids = new.encode(text)[0]
    assert ids[:3] == [old.vocab_size, old.vocab_size + 2, new.unk_id] and ids[-1] == old.vocab_size + 1
    assert AutoTokenizer.from_pretrained(extended)(text, add_special_tokens=False)["input_ids"] == ids
    assert old.encode(text)[0][:2] == [old.unk_id, old.unk_id]


def test_old_ids_give_the_same_logits(base, extended):
    a = BertForPreTraining.from_pretrained(base).eval()
    b = BertForPreTraining.from_pretrained(extended).eval()
    v_old = a.config.vocab_size
    ids = torch.randint(104, v_old, (3, 20), generator=torch.Generator().manual_seed(1))
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)
    mask[2, 12:] = 0  # a padded row too
    with torch.no_grad():
        la = a(input_ids=ids, attention_mask=mask).prediction_logits
        lb = b(input_ids=ids, attention_mask=mask).prediction_logits
    assert lb.shape[-1] == v_old + 3
    torch.testing.assert_close(lb[..., :v_old], la, rtol=0, atol=1e-5)


def test_new_rows_are_the_mean_of_their_base_pieces_and_stay_tied(base, extended):
    old_tok = ChineseTokenizer.from_dir(base)
    old = BertForPreTraining.from_pretrained(base)
    new = BertForPreTraining.from_pretrained(extended)
    e_old, b_old = old.bert.embeddings.word_embeddings.weight, old.cls.predictions.bias
    e_new, b_new = new.bert.embeddings.word_embeddings.weight, new.cls.predictions.bias
    v = e_old.shape[0]
    torch.testing.assert_close(e_new[:v], e_old, rtol=0, atol=0)
    torch.testing.assert_close(b_new[:v], b_old, rtol=0, atol=0)
    # 龘 was [UNK]: the mean of the whole base matrix
    torch.testing.assert_close(e_new[v], e_old.mean(0))
    torch.testing.assert_close(b_new[v], b_old.mean())
    # crispr: the mean of the pieces the base tokenizer made of it, by hand
    pieces = old_tok.tokenize("crispr")
    assert len(pieces) > 1 and pieces[0] != "[UNK]" and all(p.startswith("##") for p in pieces[1:])
    rows = [old_tok.vocab[p] for p in pieces]
    expected = sum(e_old[i] for i in rows) / len(rows)
    torch.testing.assert_close(e_new[v + 1], expected)
    torch.testing.assert_close(b_new[v + 1], sum(b_old[i] for i in rows) / len(rows))
    stats = json.loads((extended / "vocab_extend.json").read_text(encoding="utf-8"))
    assert stats["added"][1]["init_pieces"] == pieces and stats["added"][0]["init_pieces"] == ["[UNK]"]
    # tied: the decoder weight IS the embedding matrix, in the loaded model and after a step
    assert new.cls.predictions.decoder.weight is new.bert.embeddings.word_embeddings.weight
    assert new.cls.predictions.decoder.bias is new.cls.predictions.bias


def test_transformers_loads_it_with_no_missing_keys_and_same_logits(extended):
    import transformers

    hf, info = transformers.BertForPreTraining.from_pretrained(extended, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info.get("mismatched_keys")
    assert hf.config.vocab_size == BertConfig.from_pretrained(extended).vocab_size
    assert hf.cls.predictions.decoder.weight.data_ptr() == hf.bert.embeddings.word_embeddings.weight.data_ptr()
    ours = BertForPreTraining.from_pretrained(extended).eval()
    tok = ChineseTokenizer.from_dir(extended)
    batch = tok.encode_pair("龘靐说了crispr。", "中国的人")
    ids = torch.tensor([batch["input_ids"]])
    types = torch.tensor([batch["token_type_ids"]])
    with torch.no_grad():
        ref = hf.eval()(input_ids=ids, token_type_ids=types).prediction_logits
        got = ours(input_ids=ids, token_type_ids=types).prediction_logits
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", ["missing corpus", "add 0", "add negative", "base without vocab", "output not empty"])
def test_bad_input_exits_2_with_one_line(case, base, corpus, tmp_path, capsys):
    args = {"--base": str(base), "--input": str(corpus), "--add": "2", "--output": str(tmp_path / "out")}
    if case == "missing corpus":
        args["--input"] = str(tmp_path / "nope.txt")
    elif case == "add 0":
        args["--add"] = "0"
    elif case == "add negative":
        args["--add"] = "-3"
    elif case == "base without vocab":
        shutil.copytree(base, tmp_path / "novocab")
        (tmp_path / "novocab" / "vocab.txt").unlink()
        args["--base"] = str(tmp_path / "novocab")
    else:
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "x").write_text("x")
    assert main(["vocab", "extend", *(x for kv in args.items() for x in kv)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zhbert vocab: error:"), err
    assert {"missing corpus": "nope.txt", "add 0": "--add", "add negative": "--add",
            "base without vocab": "vocab.txt", "output not empty": "--output"}[case] in err[0]
    assert not (tmp_path / "out").exists() or case == "output not empty"


def test_pretraining_continues_from_the_extended_model(extended, corpus, tmp_path):
    """model.init_from: DIR + data prepared with DIR/vocab.txt: a few steps run and the
    checkpoint keeps the extended vocabulary (and its tie)."""
    import subprocess
    import sys

    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "zhbert.cli", "prepare", "--input", str(corpus), "--output", str(data),
                    "--vocab", str(extended / "vocab.txt"), "--max-seq-length", "64",
                    "data.validation_fraction=0.2"], check=True, env=cpu_env(), capture_output=True)
    import datasets

    v_old = ChineseTokenizer.from_vocab(VOCAB).vocab_size
    ids = {i for split in datasets.load_from_disk(str(data)).values() for row in split["input_ids"] for i in row}
    assert {v_old, v_old + 1, v_old + 2} <= ids  # the instances use the new ids
    run = tmp_path / "run"
    r = run_script(overrides(data, run, f"model.init_from={extended}", "train.max_steps=3"), timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [m["step"] for m in metrics(run) if "loss" in m][-1] == 3
    hf = run / "checkpoints" / "step_3" / "hf"
    assert BertConfig.from_pretrained(hf).vocab_size == BertConfig.from_pretrained(extended).vocab_size
    assert (hf / "vocab.txt").read_bytes() == (extended / "vocab.txt").read_bytes()
    moved = BertForPreTraining.from_pretrained(hf)
    assert moved.cls.predictions.decoder.weight is moved.bert.embeddings.word_embeddings.weight
