"""The README is a front door: short, and every relative link in it and in docs/ leads somewhere.

A link resolves when its file or folder exists in the repository; a `#fragment` resolves when the
target markdown file has a heading with that anchor under GitHub's rules (lower case, spaces to
hyphens, punctuation other than hyphens and underscores dropped, a repeated heading gets -1, -2).
Links with a scheme (http, https, mailto) are not checked.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 300

FENCE = re.compile(r"^\s*(```|~~~)")
ATX_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target), the text allowing one level of nested brackets
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"", re.IGNORECASE)
HTML_ANCHOR = re.compile(r"<[a-z]+\b[^>]*?\b(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)
NOT_A_TITLE = ("|", "-", "*", "#", ">")  # a table, list, heading or quote line above --- is no setext title
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files(root: Path) -> list[Path]:
    """README.md and every markdown file under docs/, the pages whose links are checked."""
    files = [root / "README.md"] if (root / "README.md").exists() else []
    return files + sorted((root / "docs").rglob("*.md"))


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) for every line outside fenced code blocks."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None and match and match.group(1) == fence:
            fence = None
        elif fence is None:
            lines.append((number, line))
    return lines


def headings(text: str) -> list[str]:
    """The text of every heading (ATX `# x` and setext `x` over `===`/`---`), in order."""
    found, previous = [], ""
    for _, line in _prose_lines(text):
        atx = ATX_HEADING.match(line)
        if atx:
            found.append(atx.group(1))
        elif SETEXT_UNDERLINE.match(line) and previous.strip() and not previous.lstrip().startswith(NOT_A_TITLE):
            found.append(previous.strip())
        previous = line
    return found


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: its rendered text, lower case, punctuation dropped, spaces to hyphens."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text)  # HTML tags
    text = text.replace("**", "").replace("*", "")
    kept = [
        ch for ch in text.strip().lower()
        if ch in " -" or unicodedata.category(ch)[0] in "LM" or unicodedata.category(ch) in ("Nd", "Nl", "Pc")
    ]
    return "".join(kept).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a page offers: one per heading (repeats get -1, -2, ...) and HTML id/name attributes."""
    occurrences: dict[str, int] = {}
    result = set()
    for heading in headings(text):
        slug = original = github_anchor(heading)
        while slug in occurrences:
            occurrences[original] += 1
            slug = f"{original}-{occurrences[original]}"
        occurrences[slug] = 0
        result.add(slug)
    for _, line in _prose_lines(text):
        result.update(HTML_ANCHOR.findall(line))
    return result


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image outside code (fenced blocks and inline code spans)."""
    found = []
    for number, line in _prose_lines(text):
        prose = INLINE_CODE.sub("", line)
        found += [(number, target) for target in INLINE_LINK.findall(prose)]
        found += [(number, target) for target in HTML_LINK.findall(prose)]
        definition = REFERENCE_DEFINITION.match(prose)
        if definition:
            found.append((number, definition.group(1)))
    return found


def broken_links(root: Path, files: list[Path]) -> list[str]:
    """One line per link in `files` that does not resolve inside `root`: `file:line: target: why`."""
    root = root.resolve()
    anchor_cache: dict[Path, set[str]] = {}

    def anchors_of(page: Path) -> set[str]:
        if page not in anchor_cache:
            anchor_cache[page] = anchors(page.read_text(encoding="utf-8"))
        return anchor_cache[page]

    problems = []
    for page in files:
        page = page.resolve()
        where = page.relative_to(root)
        for number, target in links(page.read_text(encoding="utf-8")):
            if SCHEME.match(target):
                continue
            path_part, _, fragment = target.partition("#")
            path_part, fragment = unquote(path_part), unquote(fragment)
            if not path_part:
                resolved = page
            elif path_part.startswith("/"):
                resolved = (root / path_part.lstrip("/")).resolve()
            else:
                resolved = (page.parent / path_part).resolve()
            if not target:
                problems.append(f"{where}:{number}: empty link")
                continue
            if not resolved.is_relative_to(root):
                problems.append(f"{where}:{number}: {target}: leaves the repository")
                continue
            if not resolved.exists():
                problems.append(f"{where}:{number}: {target}: no such file or folder")
                continue
            if not fragment:
                continue
            if resolved.is_dir():
                resolved = resolved / "README.md"
            if resolved.suffix.lower() != ".md":
                continue  # fragments of other files (source lines, ...) are not headings
            if not resolved.exists():
                problems.append(f"{where}:{number}: {target}: the folder has no README.md to hold #{fragment}")
            elif fragment not in anchors_of(resolved):
                problems.append(f"{where}:{number}: {target}: {resolved.relative_to(root)} has no heading #{fragment}")
    return problems


# --- the repository's own pages ---------------------------------------------------------------

@pytest.mark.parametrize("page", markdown_files(ROOT), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(ROOT, [page]) == []


def test_readme_has_at_most_300_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_every_guide_is_linked_from_the_readme():
    linked = {
        (ROOT / unquote(target.partition("#")[0])).resolve()
        for _, target in links((ROOT / "README.md").read_text(encoding="utf-8"))
        if not SCHEME.match(target) and target.partition("#")[0]
    }
    guides = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "docs" / "results" / "README.md"]
    assert [str(g.relative_to(ROOT)) for g in guides if g.resolve() not in linked] == []


# --- the checker itself, on a small tree with known good and bad links ----------------------------

def test_github_anchor_follows_githubs_rules():
    assert github_anchor("Privacy leakage (`python -m engine reproduce privacy`)") == (
        "privacy-leakage-python--m-engine-reproduce-privacy"
    )
    assert github_anchor("Several machines, one queue (PostgreSQL)") == "several-machines-one-queue-postgresql"
    assert github_anchor("SGLR's claim") == "sglrs-claim"
    assert github_anchor("Plain SGD at η = 0.004") == "plain-sgd-at-η--0004"
    assert github_anchor("`splitfed_v1` and **V2**") == "splitfed_v1-and-v2"
    assert github_anchor("See [the queue](queue.md)") == "see-the-queue"


def test_repeated_headings_get_numbered_anchors():
    text = "# Runs\n\n## Runs\n\n## Runs\n\n```\n# Runs (a shell comment, not a heading)\n```\n"
    assert anchors(text) == {"runs", "runs-1", "runs-2"}


def test_checker_reports_each_broken_link_and_nothing_else(tmp_path):
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "plot.png").write_bytes(b"png")
    (tmp_path / "docs" / "guide.md").write_text(
        "# Guide\n\n## Setup\n\n## Setup\n\nBack to the [README](../README.md#splitlab).\n"
        "![plot](results/plot.png) ![missing](results/missing.png)\n"
        "[second setup](#setup-1) [third setup](#setup-2)\n",
        encoding="utf-8",
    )
    (tmp_path / "README.md").write_text(
        "# SplitLab\n\n"
        "[guide](docs/guide.md) [setup](docs/guide.md#setup) [folder](docs/results/)\n"
        "[gone](docs/gone.md) [bad anchor](docs/guide.md#install)\n"
        "[here](#splitlab) [not here](#nowhere) [web](https://example.org/x.md)\n"
        "`[in code](nowhere.md)`\n\n```\n[in a block](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    problems = broken_links(tmp_path, markdown_files(tmp_path))
    assert problems == [
        "README.md:4: docs/gone.md: no such file or folder",
        "README.md:4: docs/guide.md#install: docs/guide.md has no heading #install",
        "README.md:5: #nowhere: README.md has no heading #nowhere",
        "docs/guide.md:8: results/missing.png: no such file or folder",
        "docs/guide.md:9: #setup-2: docs/guide.md has no heading #setup-2",
    ]
