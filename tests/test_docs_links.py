"""No dead relative link in the Markdown docs: every `[text](path#anchor)` of README.md, docs/*.md
and results/README.md points to a file of the repository, and an anchor into a Markdown file to
one of its headings (GitHub's heading ids). No path in them leads outside the repository."""
import re
from pathlib import Path

import pytest
from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "results" / "README.md"]

INLINE = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
OUTSIDE = re.compile(r"(?<![\w/.])((?:\.\./)+[\w.\-/]+)")


def prose_lines(path: Path):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced:
            yield number, line


def links(path: Path):
    for number, line in prose_lines(path):
        text = re.sub(r"`[^`]*`", "", line)  # code spans hold no links
        for match in INLINE.finditer(text):
            yield number, match.group(1)
        if match := REFERENCE.match(text):
            yield number, match.group(1)


def slug(heading: str) -> str:
    """GitHub's id of a heading: its text lower-cased, punctuation but - and _ removed, spaces -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen, ids = {}, set()
    for _, line in prose_lines(path):
        if match := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line):
            base = slug(match.group(1))
            n = seen.get(base, 0)
            ids.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return ids


def dead_links(path: Path) -> list[str]:
    problems = []
    for number, target in links(path):
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{where}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{where}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    return problems


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_dead_relative_link(path):
    assert dead_links(path) == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_path_leads_outside_the_repository(path):
    """Also in code spans and plain text, a `../` path must reach a file of the repository: a
    reader of the repository alone cannot follow one to a file beside it (../shared/...)."""
    outside = [f"{path.relative_to(ROOT)}:{number}: {m.group(1)}"
               for number, line in prose_lines(path) for m in OUTSIDE.finditer(line)
               if not within_repository(path.parent / m.group(1))]
    assert outside == []


def within_repository(path: Path) -> bool:
    return path.resolve().is_relative_to(ROOT) and path.exists()


def test_the_checker_finds_dead_links(tmp_path, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "here.md").write_text("# A title (`x.y`)\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/here.md#a-title-xy) [gone](docs/classification.md) "
                    "[out](../shared/reference/x.md) [bad anchor](docs/here.md#nope) "
                    "[web](https://example.org/x.md) `[code](nowhere.md)`\n"
                    "```\n[fenced](nowhere.md)\n```\n[ref]: docs/missing.md\n")
    found = dead_links(page)
    assert [p.split(": ", 1)[1] for p in found] == [
        "docs/classification.md: no such file", "../shared/reference/x.md: outside the repository",
        "docs/here.md#nope: no heading #nope in docs/here.md", "docs/missing.md: no such file"]
