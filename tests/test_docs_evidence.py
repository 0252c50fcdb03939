"""The README and docs/ stay a map with evidence: every result file they cite exists, is JSON
and says what produced it; every relative link resolves; the README stays short."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 300
PAGES = sorted([README, *(ROOT / "docs").rglob("*.md")])
RESULT_DIRS = ("docs/results", "bench/results")

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_RESULT_PATH = re.compile(r"(?<![\w/.-])((?:docs|bench)/results/[\w.-]+\.json)\b")


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _prose(page: Path) -> str:
    """The page without fenced code blocks and inline code spans (where links are not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", _text(page)))


def _links(page: Path) -> list[str]:
    return _LINK.findall(_prose(page))


def _is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)) or target.startswith("//")


def _resolve(page: Path, target: str) -> tuple[Path, str]:
    """(file the link points to, its anchor or '') for a relative link on ``page``."""
    path, _, anchor = target.partition("#")
    return ((page.parent / unquote(path)).resolve() if path else page), anchor


def _rel(path: Path) -> str:
    return path.resolve().relative_to(ROOT).as_posix()


def _cited_results() -> dict[str, list[str]]:
    """Result files cited by the README and docs pages → the pages citing them. A citation is a
    relative link into docs/results or bench/results, or such a path written out in the text."""
    cited: dict[str, list[str]] = {}
    for page in PAGES:
        # written-out paths; an all-capitals name is a placeholder (bench/results/NAME.json)
        found = {p for p in _RESULT_PATH.findall(_text(page)) if not Path(p).stem.isupper()}
        for target in _links(page):
            if _is_external(target):
                continue
            path, _ = _resolve(page, target)
            try:
                rel = _rel(path)
            except ValueError:  # outside the repository: the link test reports it
                continue
            if rel.startswith(tuple(d + "/" for d in RESULT_DIRS)) and rel.endswith(".json"):
                found.add(rel)
        for rel in found:
            cited.setdefault(rel, []).append(_rel(page))
    return cited


CITED = _cited_results()


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: formatting dropped, lower case, punctuation removed,
    spaces → hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links → their text
    text = re.sub(r"[`*_~]", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in _FENCE.sub("", _text(page)).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_readme_is_a_short_map():
    lines = len(_text(README).splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"


def test_the_docs_cite_result_files():
    assert CITED, "no docs/results or bench/results file is cited by README.md or docs/"
    assert "docs/results/ci.json" in CITED  # the README's CI timings


@pytest.mark.parametrize("rel", sorted(CITED))
def test_cited_result_file_exists_and_is_json(rel):
    path = ROOT / rel
    assert path.is_file(), f"{rel}, cited by {CITED[rel]}, does not exist"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and data, f"{rel}: expected a JSON object of figures"


@pytest.mark.parametrize("rel", sorted(CITED))
def test_cited_result_file_records_its_command_and_commit(rel):
    data = json.loads((ROOT / rel).read_text(encoding="utf-8"))
    command = data.get("command") or data.get("_command")
    commit = data.get("commit") or data.get("_commit")
    assert isinstance(command, str) and command.strip(), f"{rel}: no command (command/_command)"
    assert isinstance(commit, str) and re.match(r"^[0-9a-f]{7,40}\b", commit), (
        f"{rel}: no commit (commit/_commit), got {commit!r}")


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_relative_links_resolve(page):
    broken = []
    for target in _links(page):
        if _is_external(target):
            continue
        path, anchor = _resolve(page, target)
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif not path.resolve().is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {_rel(path)}")
    assert not broken, f"{_rel(page)}: " + "; ".join(broken)


def test_slugs_follow_github():
    assert _slug("Kaggle: the cycle") == "kaggle-the-cycle"
    assert _slug("What `make demo` does and prints") == "what-make-demo-does-and-prints"
    assert _slug("Training jitter sized from the localiser's error") == (
        "training-jitter-sized-from-the-localisers-error")
    assert _slug("DICOM I/O") == "dicom-io"
