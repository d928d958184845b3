"""The manual's links: every relative link and anchor in README.md and docs/*.md leads somewhere, every docs page
is reachable from README.md, and README.md stays the short front door whose first code block CI runs."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.helpers import REPO

README = REPO / "README.md"
PAGES = sorted((REPO / "docs").glob("*.md"))
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`[^`]*`")
# [text](target) or ![alt](target), with an optional "title"; the text may hold one level of brackets.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks (where a link or heading is text, not markup)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text lower-cased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose(page.read_text()):
        match = HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")  # GitHub numbers repeated headings
    return found


def links(page: Path) -> list[str]:
    prose = CODE_SPAN.sub("", "\n".join(_prose(page.read_text())))
    return [match.group(1) for match in LINK.finditer(prose)]


def broken_links(page: Path) -> list[str]:
    def name(file: Path) -> str:
        return str(file.relative_to(REPO)) if file.is_relative_to(REPO) else str(file)

    broken = []
    for target in links(page):
        if not target or SCHEME.match(target):
            continue  # a web address: not this test's to fetch
        path, _, anchor = target.partition("#")
        file = (page.parent / unquote(path)).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {name(file)}")
        elif anchor and file.suffix != ".md":
            broken.append(f"{target}: an anchor into a file that is not Markdown")
        elif anchor and anchor not in anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {name(file)}")
    return broken


def test_the_slug_follows_githubs_rules():
    assert slug("Warm starts: `model.init_from`") == "warm-starts-modelinit_from"
    assert slug("The paper's batch on fewer GPUs") == "the-papers-batch-on-fewer-gpus"
    assert slug("On a machine with GPUs: `gpu-check`") == "on-a-machine-with-gpus-gpu-check"
    assert slug("Resuming, preemption and failures") == "resuming-preemption-and-failures"


def test_a_broken_link_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [gone](#nowhere) [missing](nothing.md) [web](https://example.com)\n"
                    "```\n[in a code block](#ignored)\n```\n`[in a code span](#ignored)`\n")
    assert [problem.split(":")[0] for problem in broken_links(page)] == ["#nowhere", "nothing.md"]


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO / unquote(t.partition("#")[0])).resolve() for t in links(README) if not SCHEME.match(t)}
    unlinked = [str(p.relative_to(REPO)) for p in PAGES if p.resolve() not in linked]
    assert unlinked == [], f"docs pages README.md does not link: {unlinked}"


def test_the_readme_opens_with_the_two_commands_ci_runs_and_stays_short():
    lines = README.read_text().splitlines()
    fences = [i for i, line in enumerate(lines) if line.startswith("```")]
    assert lines[0].startswith("# ") and not any(line.strip() for line in lines[1:fences[0]])  # it opens with them
    assert lines[fences[0]] == "```bash"
    commands = [line for line in lines[fences[0] + 1:fences[1]] if line.strip()]
    assert commands[0].startswith('pip install -e ".[dev]"') and commands[1].startswith("pytest"), commands
    assert len(lines) < 260, f"README.md has {len(lines)} lines: the front door stays under 260"
