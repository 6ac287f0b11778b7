"""data.t2s's converter (issue 15): whichever OpenCC provides `opencc`, one line when none does."""

import sys

import pytest

from zhbert.errors import ConfigError
from zhbert.prep import corpus


def test_t2s_converts_with_the_installed_opencc_and_names_it():
    pytest.importorskip("opencc")
    assert corpus.normalize_text("漢語是世界上使用人數最多的語言。", t2s=True) == "汉语是世界上使用人数最多的语言。"
    name = corpus.t2s_converter_name()
    assert name.startswith("opencc ") or name == "opencc-python-reimplemented"


def test_without_opencc_t2s_stops_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "opencc", None)  # import opencc -> ImportError
    corpus._t2s_converter.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"^data.t2s=true needs OpenCC: pip install opencc$"):
            corpus.normalize_text("漢語", t2s=True)
        assert corpus.t2s_converter_name() == ""
    finally:
        corpus._t2s_converter.cache_clear()
