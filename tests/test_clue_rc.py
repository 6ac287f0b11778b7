"""`zhbert eval clue` on the reading-comprehension tasks, end to end on the hand-made fixtures:
CMRC2018 (trial set trained on when there is no train file), C3, ChID in CLUE 1.1 format (joint
decoding) and in FewCLUE format. Expected values are recomputed from the fixture files with
plain ``json``, independently of the readers under test.
"""

import json
import shutil
import zipfile

import pytest
from test_clue import FIX, _tiny_model

from zhbert.clue.cmrc_eval import evaluate


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("rc") / "model")


def _data(tmp_path):
    """CMRC2018 without train.json (-> the trial set), C3, ChID (CLUE format; dev doubles as train)."""
    d = tmp_path / "data"
    shutil.copytree(FIX / "cmrc2018", d / "cmrc2018", ignore=shutil.ignore_patterns("train.json"))
    shutil.copytree(FIX / "c3", d / "c3_public")
    shutil.copytree(FIX / "chid", d / "chid_public")
    shutil.copy(d / "chid_public" / "dev.json", d / "chid_public" / "train.json")
    shutil.copy(d / "chid_public" / "dev_answer.json", d / "chid_public" / "train_answer.json")
    shutil.copy(d / "chid_public" / "dev.json", d / "chid_public" / "test.json")
    return d


def _main(argv):
    from zhbert.cli import main

    return main(argv)


def test_reading_comprehension_end_to_end(tiny, tmp_path):
    data, out = _data(tmp_path), tmp_path / "out"
    argv = ["eval", "clue", "--model", str(tiny), "--tasks", "cmrc2018,c3,chid", "--data-dir", str(data),
            "--output", str(out), "--seeds", "1,2", "--epochs", "2", "--batch-size", "4", "--lr", "1e-3",
            "--max-seq-length", "64", "--wandb-mode", "disabled", "doc_stride=24", "max_query_length=16"]
    assert _main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["tasks"]) == {"cmrc2018", "c3", "chid"}
    point = "lr1e-03_bs4_ep2"

    # CMRC2018: trained on the trial set, scored by the official metric on every dev question
    cm = res["tasks"]["cmrc2018"]
    assert cm["metric"] == "em" and cm["metrics"] == ["em", "f1"]
    assert any("trained on the trial set (trial.json)" in n for n in cm["notes"])
    trial = json.loads((FIX / "cmrc2018" / "trial.json").read_text())
    assert cm["train_size"] == sum(len(p["qas"]) for a in trial["data"] for p in a["paragraphs"])
    dev = json.loads((FIX / "cmrc2018" / "dev.json").read_text())
    gold = {q["id"]: [a["text"] for a in q["answers"]] for a in dev["data"] for p in a["paragraphs"] for q in p["qas"]}
    contexts = {q["id"]: p["context"] for a in dev["data"] for p in a["paragraphs"] for q in p["qas"]}
    ems = []
    for seed in ("1", "2"):
        rows = [json.loads(x) for x in (out / "cmrc2018" / point / f"seed{seed}" / "dev_predictions.jsonl")
                .read_text().splitlines()]
        assert [r["id"] for r in rows] == list(gold)
        assert all(r["answer"] in contexts[r["id"]] for r in rows)  # a span of the context
        score = evaluate(gold, {r["id"]: r["answer"] for r in rows})
        assert cm["seeds"][seed]["dev"]["em"] == pytest.approx(score["em"])
        assert cm["seeds"][seed]["dev"]["f1"] == pytest.approx(score["f1"])
        ems.append(score["em"])
    assert cm["mean"] == pytest.approx(sum(ems) / 2) and cm["floor"] is None
    test = json.loads((FIX / "cmrc2018" / "test.json").read_text())
    test_ids = [q["id"] for a in test["data"] for p in a["paragraphs"] for q in p["qas"]]

    # C3: one prediction per dev question (d then m), accuracy against the answer's position
    c3 = res["tasks"]["c3"]
    golds = []
    for name in ("d-dev.json", "m-dev.json"):
        for doc in json.loads((FIX / "c3" / name).read_text()):
            golds += [q["choice"].index(q["answer"]) for q in doc[1]]
    assert c3["dev_size"] == len(golds)
    for seed in ("1", "2"):
        rows = [json.loads(x) for x in (out / "c3" / point / f"seed{seed}" / "dev_predictions.jsonl").read_text().splitlines()]
        assert len(rows) == len(golds) and all(0 <= r["label"] < 4 for r in rows)
        acc = sum(r["label"] == g for r, g in zip(rows, golds)) / len(golds)
        assert c3["seeds"][seed]["dev"]["accuracy"] == pytest.approx(acc)
    counts = [golds.count(k) for k in set(golds)]
    assert c3["floor"] == {"name": "most frequent answer position", "value": pytest.approx(max(counts) / len(golds))}

    # ChID (CLUE 1.1): one prediction per blank; the blanks of one line never share a candidate
    ch = res["tasks"]["chid"]
    answers = json.loads((FIX / "chid" / "dev_answer.json").read_text())
    lines = [json.loads(x) for x in (FIX / "chid" / "dev.json").read_text().splitlines() if x.strip()]
    tags = [[t for p in ln["content"] for t in answers if t in p] for ln in lines]
    for seed in ("1", "2"):
        rows = [json.loads(x) for x in (out / "chid" / point / f"seed{seed}" / "dev_predictions.jsonl").read_text().splitlines()]
        assert [r["id"] for r in rows] == [t for line_tags in tags for t in line_tags]
        by_id = {r["id"]: r["label"] for r in rows}
        for line_tags in tags:
            picks = [by_id[t] for t in line_tags]
            assert len(set(picks)) == len(picks)  # joint decoding: each candidate at most once per line
        acc = sum(by_id[t] == answers[t] for t in by_id) / len(by_id)
        assert ch["seeds"][seed]["dev"]["accuracy"] == pytest.approx(acc)
    assert any("CLUE 1.1 format" in n for n in ch["notes"])

    # submission: CLUE 1.1 names and formats
    with zipfile.ZipFile(out / "submission.zip") as z:
        assert set(z.namelist()) == {"cmrc2018_predict.json", "c311_predict.json", "chid11_predict.json"}
        cm_sub = json.loads(z.read("cmrc2018_predict.json"))
        c3_sub = [json.loads(x) for x in z.read("c311_predict.json").decode().splitlines()]
        ch_sub = json.loads(z.read("chid11_predict.json"))
    assert list(cm_sub) == test_ids and all(isinstance(v, str) for v in cm_sub.values())
    test_q = [q for doc in json.loads((FIX / "c3" / "test1.1.json").read_text()) for q in doc[1]]
    assert [r["id"] for r in c3_sub] == [q["id"] for q in test_q]
    assert set(ch_sub) == set(answers) and all(0 <= v < 10 for v in ch_sub.values())
    md = (out / "results.md").read_text()
    assert "| Model | CMRC2018 (EM / F1) | ChID | C3 | Avg |" in md
    assert "CMRC2018: trained on the trial set" in md


def test_chid_fewclue_format_and_train_file_flag(tiny, tmp_path):
    d = tmp_path / "data"
    shutil.copytree(FIX / "chid_fewclue", d / "chid_fewclue")
    shutil.copy(d / "chid_fewclue" / "dev_few_all.json", d / "chid_fewclue" / "test_public.json")
    out = tmp_path / "out"
    argv = ["eval", "clue", "--model", str(tiny), "--tasks", "chid", "--data-dir", str(d), "--output", str(out),
            "--train-file", f"chid={d / 'chid_fewclue' / 'dev_few_all.json'}", "--epochs", "1", "--batch-size", "2",
            "--lr", "1e-3", "--wandb-mode", "disabled"]
    assert _main(argv) == 0
    ch = json.loads((out / "results.json").read_text())["tasks"]["chid"]
    assert any("FewCLUE" in n and "not comparable" in n for n in ch["notes"])
    rows = [json.loads(x) for x in (FIX / "chid_fewclue" / "dev_few_all.json").read_text().splitlines() if x.strip()]
    assert ch["train_size"] == ch["dev_size"] == len(rows)
    assert ch["protocol"]["data_files"]["train"][0]["name"] == "dev_few_all.json"
    # test_public (labelled) is scored once after selection: same file as dev here, so the same accuracy
    assert ch["extra_eval"]["test_public"]["accuracy"]["mean"] == pytest.approx(ch["mean"])
    sub = [json.loads(x) for x in (out / "chid" / "lr1e-03_bs2_ep1" / "seed1" / "chid11_predict.json")
           .read_text().splitlines()]
    test_rows = [json.loads(x) for x in (FIX / "chid_fewclue" / "test.json").read_text().splitlines() if x.strip()]
    assert [r["id"] for r in sub] == [r["id"] for r in test_rows] and all(0 <= r["answer"] < 7 for r in sub)


def test_reading_comprehension_bad_input_is_one_line(tiny, tmp_path, capsys):
    d = tmp_path / "data"
    shutil.copytree(FIX / "cmrc2018", d / "cmrc2018")
    (d / "cmrc2018" / "dev.json").write_text('{"version": "v1.0", "data": [{"paragraphs": [{"qas": []}]}]}')
    argv = ["eval", "clue", "--model", str(tiny), "--tasks", "cmrc2018", "--data-dir", str(d), "--output",
            str(tmp_path / "o"), "--wandb-mode", "disabled", "--max-seq-length", "64", "max_query_length=16"]
    assert _main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cmrc2018/dev.json" in err[0] and "context" in err[0]
    # C3: an answer that is none of the choices
    shutil.copytree(FIX / "c3", d / "c3")
    docs = json.loads((d / "c3" / "d-dev.json").read_text())
    docs[0][1][0]["answer"] = "不存在"
    (d / "c3" / "d-dev.json").write_text(json.dumps(docs, ensure_ascii=False))
    assert _main([("c3" if a == "cmrc2018" else a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "d-dev.json" in err[0] and "不存在" in err[0]


def test_saved_fine_tuned_models_load_in_transformers(tiny, tmp_path):
    """--save-models: the fine-tuned CMRC2018 and C3 models are HF BertForQuestionAnswering /
    BertForMultipleChoice checkpoints: transformers loads them with no missing or unexpected
    keys and computes the same logits."""
    import torch
    import transformers

    from zhbert.model.modeling import BertForMultipleChoice, BertForQuestionAnswering

    data, out = _data(tmp_path), tmp_path / "out"
    argv = ["eval", "clue", "--model", str(tiny), "--tasks", "cmrc2018,c3", "--data-dir", str(data), "--output",
            str(out), "--epochs", "1", "--batch-size", "4", "--lr", "1e-3", "--max-seq-length", "64",
            "--save-models", "--wandb-mode", "disabled", "max_query_length=16"]
    assert _main(argv) == 0
    ids = torch.tensor([[2, 5, 6, 7, 3, 8, 9, 3]])
    for task, ours, theirs, x in (
            ("cmrc2018", BertForQuestionAnswering, transformers.BertForQuestionAnswering, ids),
            ("c3", BertForMultipleChoice, transformers.BertForMultipleChoice, ids[None].repeat(1, 4, 1))):
        saved = out / task / "lr1e-03_bs4_ep1" / "seed1" / "model"
        assert (saved / "vocab.txt").read_bytes() == (tiny / "vocab.txt").read_bytes()
        hf, info = theirs.from_pretrained(saved, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        mine = ours.from_pretrained(saved)
        hf.eval(), mine.eval()
        with torch.no_grad():
            a, b = hf(input_ids=x), mine(input_ids=x)
        for key in (("start_logits", "end_logits") if task == "cmrc2018" else ("logits",)):
            assert torch.allclose(a[key], b[key], atol=1e-5), key
