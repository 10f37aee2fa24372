"""The README and every page of docs/ link to what exists: each relative link's file, and its anchor among
that file's headings as GitHub makes them (lower case, punctuation dropped, spaces as dashes, a repeated
heading numbered). Every docs page opens with the paragraph that says whom it is for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.harness import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings (code blocks skipped)."""
    found: set[str] = set()
    fence = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        if fence or not re.match(r"^#{1,6} ", line):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def links(path: Path) -> list[str]:
    """Relative links outside code blocks and code spans."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_an_anchor_there(page: Path) -> None:
    broken = []
    for target in links(page):
        file_part, _, anchor = target.partition("#")
        path = (page.parent / file_part).resolve() if file_part else page
        if not path.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, broken


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_every_docs_page_opens_by_saying_whom_it_is_for(page: Path) -> None:
    lines = page.read_text().splitlines()
    assert lines[0].startswith("# ") and lines[1] == ""
    assert lines[2].startswith(("For ", "Every setting")), lines[2]


def test_the_readme_is_read_in_ten_minutes() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_how_it_works_names_every_module_and_only_modules_that_exist() -> None:
    """"Where each concern lives": a reader finds a module by its concern there, so every module is listed once."""
    text = (ROOT / "docs" / "how-it-works.md").read_text()
    listed = re.findall(r"^\| `((?:components/)?[\w/]+\.py)` \|", text, flags=re.M)
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "components").rglob("*.py")
               if p.name != "__init__.py" or p.parent.name == "services"} | {"__main__.py"}
    assert sorted(listed) == sorted(modules)
