"""zhbert.prep.format: the one column table agrees with every schema made from it and with the docs."""

import re
from pathlib import Path

import datasets
import pyarrow as pa
import pytest

from zhbert.prep import format as fmt

REPO = Path(__file__).resolve().parents[1]


def test_schemas_agree_with_datasets():
    # datasets' own spellings of the features: the Arrow type it stores and the dict it writes
    assert fmt.features_json() == fmt.features().to_dict()
    assert pa.schema(fmt.features().type) == fmt.arrow_schema()
    assert tuple(fmt.features()) == tuple(fmt.arrow_schema().names) == fmt.COLUMNS
    assert datasets.Features.from_dict(fmt.features_json()) == fmt.features()


def _doc_table(path: Path, heading: str) -> str:
    """The first Markdown table after ``heading`` in ``path``."""
    text = path.read_text(encoding="utf-8")
    at = text.index(heading)
    m = re.search(r"^\| column \|.*?(?=\n(?!\|))", text[at:], flags=re.M | re.S)
    assert m, f"{path.name}: no column table after {heading!r}"
    return m.group(0)


@pytest.mark.parametrize("doc, heading", [("docs/DESIGN.md", "## Instance format"),
                                          ("docs/data.md", "### Output format")])
def test_docs_show_the_schema_table(doc, heading):
    # A column, type or meaning changed in zhbert/prep/format.py must be changed in the docs too:
    # paste the output of `python -c "from zhbert.prep.format import markdown_table; print(markdown_table())"`.
    assert _doc_table(REPO / doc, heading) == fmt.markdown_table()
