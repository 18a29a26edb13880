"""The documentation holds together: every relative link in README.md and docs/*.md points
to a file that exists (and, with ``#anchor``, to a heading of that file), and no document
cites PROTOCOLS.md, DESIGN.md or STYLE.md, which are not in the repository (docs/protocols.md is):
not README.md, docs/, the source or the help texts; and there is a LICENSE."""

import re
from pathlib import Path

import pytest

from aelab.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _without_code(text: str) -> str:
    """The text outside fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    anchors, seen = set(), {}
    for heading in re.findall(r"(?m)^#{1,6}\s+(.+?)\s*#*\s*$", text):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(path: Path):
    for m in LINK.finditer(_without_code(path.read_text())):
        target = m.group(1) or m.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.I):   # http:, https:, mailto:
            continue
        yield target


def test_there_are_docs():
    names = {p.name for p in DOCS}
    assert {"README.md", "index.md", "protocols.md", "results.md"} <= names
    assert (ROOT / "LICENSE").is_file()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc):
    bad = []
    for target in _links(doc):
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            bad.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not bad, f"{doc.name}: broken links: {bad}"


GONE = ("PROTOCOLS.md", "DESIGN.md", "STYLE.md")  # replaced by docs/protocols.md and docs/layout.md
SOURCES = sorted(p for p in (ROOT / "src").rglob("*") if p.suffix in (".py", ".html", ".js", ".md"))


@pytest.mark.parametrize("doc", DOCS + SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_missing_design_documents_cited(doc):
    text = doc.read_text()
    for name in GONE:
        assert name not in text, f"{doc.name} cites {name}, which is not in the repository; link docs/protocols.md"


def test_help_texts_cite_no_missing_document():
    parser = build_parser()
    texts = {"aelab": parser.format_help()}
    for action in parser._subparsers._group_actions:
        texts.update({f"aelab {name}": sub.format_help() for name, sub in action.choices.items()})
    assert len(texts) > 10
    for where, text in texts.items():
        for name in GONE:
            assert name not in text, f"`{where} --help` cites {name}; cite docs/protocols.md"
