"""Every link in the documentation, and every docs/*.md#anchor the code prints or cites, points at something real."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = sorted(
    p for p in [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("reports/**/README.md")] if p.is_file()
) + [ROOT / "search_spaces" / "README.md"]
CODE = sorted([*ROOT.glob("effscope/**/*.py"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("search_spaces/*.toml")])
LINK = re.compile(r"\]\(([^)\s]+)\)")
DOC_REF = re.compile(r"\b((?:docs/)?(?:README|zoo|measurement|search)\.md)#([\w-]+)")


def _outside_code_fences(path: Path) -> list[tuple[int, str]]:
    lines, fenced = [], False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append((n, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    for _, line in _outside_code_fences(path):
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            s = slug(m.group(1))
            seen[s] = seen.get(s, -1) + 1
    return frozenset(s if n == 0 else f"{s}-{k}" for s, n in seen.items() for k in range(n + 1))


def test_slug_follows_github() -> None:
    assert slug("The GPU check: `make gpu-check`") == "the-gpu-check-make-gpu-check"
    assert slug("Budgets on the GPU's work") == "budgets-on-the-gpus-work"
    assert slug("pvt_linear_sra block") == "pvt_linear_sra-block"


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_links_resolve(doc: Path) -> None:
    broken = []
    for n, line in _outside_code_fences(doc):
        for link in LINK.findall(line):
            if link.startswith(("http://", "https://", "mailto:")):
                continue
            file, _, anchor = link.partition("#")
            target = (doc.parent / file).resolve() if file else doc
            if not target.exists():
                broken.append(f"{n}: {link} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target):
                broken.append(f"{n}: {link} (no such heading)")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


def test_doc_anchors_cited_in_text_exist() -> None:
    """Plain-text citations such as (docs/zoo.md#reference-blocks), in the code and in the documents."""
    broken = []
    for path in CODE + MARKDOWN:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for file, anchor in DOC_REF.findall(line):
                target = ROOT / file if (ROOT / file).exists() else ROOT / "docs" / file
                if anchor not in anchors(target):
                    broken.append(f"{path.relative_to(ROOT)}:{n}: {file}#{anchor}")
    assert not broken, "headings cited but missing: " + "; ".join(broken)
