"""Every test, bench script and doc the README and docs/ cite as evidence exists.

A claim in the README points to the test or bench table that shows it; a renamed
or deleted test would leave the claim pointing at nothing.  This parses every
backticked ``tests/...py`` path (with an optional ``::test_name``), every bare
``test_name`` and every ``bench/...py`` or ``bench_x.py`` and every relative
Markdown link, and checks each one is there.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

TEST_PATH = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?")
BARE_TEST = re.compile(r"`(test_\w+)`")
BENCH = re.compile(r"`(?:bench/)?(bench_\w+\.py)")
LINK = re.compile(r"\]\(((?!https?:|#|mailto:)[^)\s#]+)(?:#[^)]*)?\)")


def _test_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        names.update(re.findall(r"^\s*(?:async\s+)?def (test_\w+)", path.read_text(), re.M))
    return names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_cited_test_bench_and_link_exists(doc: pathlib.Path) -> None:
    text = doc.read_text()
    names = _test_names()
    missing = []
    for path, name in TEST_PATH.findall(text):
        file = ROOT / path
        if not file.is_file():
            missing.append(path)
        elif name and not re.search(rf"def {name}\b", file.read_text()):
            missing.append(f"{path}::{name}")
    missing += [name for name in BARE_TEST.findall(text) if name not in names]
    missing += [script for script in BENCH.findall(text) if not (ROOT / "bench" / script).is_file()]
    missing += [link for link in LINK.findall(text) if not (doc.parent / link).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} cites what is not there: {sorted(set(missing))}"


def test_the_parser_finds_citations() -> None:
    """The patterns match the way the README cites (so the check above is not vacuous)."""
    text = (ROOT / "README.md").read_text()
    assert len(TEST_PATH.findall(text)) >= 10
    assert BENCH.findall(text) and LINK.findall(text)
