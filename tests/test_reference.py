"""docs/reference.md is generated from oneoff._reference and agrees with the loader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from oneoff._manifest import load_project
from oneoff._reference import TABLES, Table, render
from oneoff.errors import ManifestError
from oneoff.testing import make_app

DOC = Path(__file__).resolve().parent.parent / "docs" / "reference.md"


def test_reference_doc_is_generated() -> None:
    """docs/reference.md is exactly what `python -m oneoff._reference` writes."""
    assert DOC.read_text() == render(), "run: python -m oneoff._reference > docs/reference.md"


@pytest.mark.parametrize("table", TABLES, ids=[t.title for t in TABLES])
def test_documented_keys_are_the_accepted_keys(tmp_path: Path, table: Table) -> None:
    """For every table, an unknown key is refused with a list of the valid keys, and that
    list is exactly the keys the reference documents (no key missing, none invented)."""
    probe = table.probe.replace("ZZ", "zz_not_a_key")
    with pytest.raises(ManifestError) as caught:
        load_project(make_app(tmp_path, probe))
    message = caught.value.message
    assert "unknown key(s) zz_not_a_key" in message
    match = re.search(r"\(valid keys: ([^)]*)\)", message)
    assert match is not None, message
    documented = {key.name for key in table.keys}
    assert set(match.group(1).split(", ")) == documented


def test_every_table_of_the_loader_is_documented() -> None:
    """Each top-level table the loader accepts has its own section in the reference."""
    (top,) = [t for t in TABLES if t.title == "top level"]
    titles = {t.title for t in TABLES}
    for key in top.keys:
        if key.name not in ("processes", "environments", "tasks"):
            assert f"[{key.name}]" in titles
    assert {"[environments.NAME]", "[tasks.NAME]", "[tasks.NAME] params.PARAM"} <= titles
