"""Every relative link in the repository's Markdown resolves: a README that points to a
file the repository lacks sends its reader nowhere.

Checked in each document: inline links and images (``[text](target)``), reference
definitions (``[id]: target``), HTML ``href``/``src`` attributes, and every ``*.md``
document the text names without a link (``DESIGN.md``, ```docs/x.md```), which reads as a
pointer all the same. A target must exist in the repository (a file, or a folder as
GitHub shows one); its ``#anchor`` must be a heading of the document it lands in.
External links (``https:``, ``mailto:``, ...) are skipped. Fenced code blocks are not text.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    {
        REPO / "README.md",
        REPO / "training" / "README.md",
        REPO / "plugins" / "README.md",
        REPO / "docker" / "weights" / "README.md",
        *(REPO / "docs").rglob("*.md"),
    }
)

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^()\s]+)(?:\s+[\"'(][^)]*)?\)"
)
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_ATTRIBUTE = re.compile(r"\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
# A document named in the text: a path ending in .md, not inside a URL or a longer name.
NAMED_DOCUMENT = re.compile(r"(?<![\w/.:\-])((?:[\w.-]+/)*[\w.-]+\.md)(?![\w/\-])")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*:")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)


def text_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of ``path`` outside fenced code blocks."""
    lines, fence = [], None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)[0] * len(opened.group(1))
        elif fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
        else:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its words lower-cased, punctuation dropped, spaces to
    hyphens (a link's text stays, its target goes)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors a link into ``path`` may use: its headings' slugs (repeats numbered as
    GitHub numbers them) and explicit ``<a name>``/``id`` anchors."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in text_lines(path):
        found.update(HTML_ANCHOR.findall(line))
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def link_targets(path: Path) -> list[tuple[int, str, str]]:
    """(line, target, kind) of every link and named document in ``path``."""
    targets = []
    for number, line in text_lines(path):
        # A link inside a code span is code, not a link; a document named there still counts.
        prose = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        for pattern, kind in ((INLINE_LINK, "link"), (REFERENCE, "reference")):
            targets += [(number, m.group(1).strip("<>"), kind) for m in pattern.finditer(prose)]
        targets += [(number, t, "html") for t in HTML_ATTRIBUTE.findall(line)]
        linked = {t for n, t, _ in targets if n == number}
        targets += [
            (number, name, "named document")
            for name in NAMED_DOCUMENT.findall(line)
            if not any(t.split("#")[0].endswith(name) for t in linked)
        ]
    return targets


def problem(document: Path, target: str, kind: str, root: Path = REPO) -> str | None:
    """Why ``target`` (as written in ``document``, in the repository at ``root``) leads
    nowhere, or None when it resolves."""
    if SCHEME.match(target) or target.startswith("//"):
        return None  # external: not this test's business
    path_part, _, anchor = target.partition("#")
    path_part = unquote(path_part)
    if not path_part:
        landing = document
    else:
        bases = [document.parent]
        if kind == "named document":
            bases.append(root)  # "docs/x.md" in prose may be read from the repository's root
        if path_part.startswith("/"):
            bases, path_part = [root], path_part.lstrip("/")
        candidates = [(base / path_part).resolve() for base in bases]
        landing = next((c for c in candidates if c.exists()), None)
        if landing is None:
            return "no such file in the repository"
        if root not in (landing, *landing.parents):
            return "outside the repository"
    if (
        anchor
        and landing.is_file()
        and landing.suffix == ".md"
        and unquote(anchor).lower() not in anchors(landing)
    ):
        return f"no heading with anchor #{anchor} in {landing.relative_to(root)}"
    return None


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_named_document_resolves(document: Path):
    assert document.is_file(), f"{document.relative_to(REPO)} is missing"
    broken = [
        f"{document.relative_to(REPO)}:{number}: {kind} {target!r}: {reason}"
        for number, target, kind in link_targets(document)
        if (reason := problem(document, target, kind))
    ]
    assert not broken, "links that lead nowhere:\n" + "\n".join(broken)


def test_the_checker_finds_what_a_reader_would_follow(tmp_path: Path):
    document = tmp_path / "README.md"
    document.write_text(
        "# Title\n## The compose test (`make test`)\n"
        "See [a](docs/a.md#part), ![b](img/b.png), [c](#the-compose-test-make-test), "
        "[d](https://example.org/x.md), <a href='e.md'>e</a> and DESIGN.md.\n"
        "[ref]: f.md\n"
        "```bash\n[not](a-link.md)\n```\n"
        "`[code](span.md)` names `g/h.md`.\n"
    )
    found = {(target, kind) for _, target, kind in link_targets(document)}
    assert found == {
        ("docs/a.md#part", "link"),
        ("img/b.png", "link"),
        ("#the-compose-test-make-test", "link"),
        ("https://example.org/x.md", "link"),
        ("e.md", "html"),
        ("DESIGN.md", "named document"),
        ("f.md", "reference"),
        ("span.md", "named document"),
        ("g/h.md", "named document"),
    }
    assert anchors(document) == {"title", "the-compose-test-make-test"}
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Part\n")

    def why(target: str, kind: str = "link") -> str | None:
        return problem(document, target, kind, root=tmp_path)

    assert why("#the-compose-test-make-test") is None and why("docs/a.md#part") is None
    assert why("#nowhere") == "no heading with anchor #nowhere in README.md"
    assert why("docs/a.md#other") == "no heading with anchor #other in docs/a.md"
    assert why("https://example.org/x.md") is None
    assert why("DESIGN.md", "named document") == "no such file in the repository"
    assert why("../outside.md") in ("no such file in the repository", "outside the repository")


def test_the_readme_stays_a_front_door():
    """The README is what a newcomer reads first: short, with the research-use notice and
    the way to every other page."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert "Research use only. Not a diagnostic device." in text
    for page in sorted((REPO / "docs").glob("*.md")):
        if page.name != "index.md":
            assert f"(docs/{page.name})" in text, f"the README does not link docs/{page.name}"
