"""The documentation a user reads links only to what the repository has.

Every relative Markdown link in ``README.md``, ``docs/*.md`` and the notebooks' markdown cells
points at a file that exists (and, for a ``#section`` of a Markdown page, at a heading that
exists), and no shipped file points at the developers' design notes, which users do not have:
the method is described in ``docs/method.md``.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The developers' design page, spelt in two parts so this file does not mention it itself.
DESIGN_NOTE = "METHOD" + ".md"
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def markdown_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


def markdown_of(path: Path) -> str:
    """The Markdown text of a page, or of a notebook's markdown cells."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".ipynb":
        return text
    cells = json.loads(text)["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def relative_links(markdown: str) -> list[str]:
    """Link targets outside code that are not web addresses, mail or same-page anchors."""
    prose = INLINE_CODE.sub("", FENCE.sub("", markdown))
    return [t for t in LINK.findall(prose) if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.I) and not t.startswith("#")]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    prose = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose, re.M)}


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """``"target (why)"`` for each relative link of ``path`` whose file (or heading) is missing."""
    broken = []
    for target in relative_links(markdown_of(path)):
        file_part, _, anchor = target.partition("#")
        file_part = file_part.split("?")[0]
        resolved = (path.parent / file_part).resolve()
        if not resolved.is_file():
            broken.append(f"{target} (no file {resolved.relative_to(root) if resolved.is_relative_to(root) else resolved})")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {resolved.relative_to(root)})")
    return broken


@pytest.mark.parametrize("path", markdown_pages() + notebooks(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_that_exist(path):
    assert not broken_links(path), f"{path.relative_to(ROOT)} links to missing targets: {broken_links(path)}"


def test_the_link_checker_sees_links_and_catches_broken_ones(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading, with punctuation\n", encoding="utf-8")
    page.write_text(
        "[ok](there.md) [ok too](there.md#a-heading-with-punctuation) [web](https://example.org/x.md) "
        "[gone](missing.md) [bad anchor](there.md#nowhere) ![figure](pic.svg)\n"
        "`[in code](skipped.md)`\n```\n[in a block](skipped.md)\n```\n", encoding="utf-8")
    assert relative_links(page.read_text()) == ["there.md", "there.md#a-heading-with-punctuation", "missing.md",
                                                "there.md#nowhere", "pic.svg"]
    assert [b.split(" ")[0] for b in broken_links(page, tmp_path)] == ["missing.md", "there.md#nowhere", "pic.svg"]


def test_readme_links_the_method_page():
    assert "docs/method.md" in relative_links(markdown_of(ROOT / "README.md"))


def test_method_page_keeps_the_sections_the_code_points_to():
    headings = anchors(ROOT / "docs" / "method.md")
    cited = set()
    for path in (ROOT / "xdnb").glob("*.py"):
        text = re.sub(r"\n\s*(#:)?\s*", " ", path.read_text(encoding="utf-8"))  # references wrap over lines
        cited |= {slug(section) for section in re.findall(r'docs/method\.md,?\s*\(?"([^"]+)"', text)}
    assert cited, "no module cites a section of docs/method.md"
    assert cited <= headings, f"sections cited in xdnb/ but missing from docs/method.md: {sorted(cited - headings)}"


def test_nothing_shipped_mentions_the_design_notes():
    files = [ROOT / "README.md"] + [p for d in ("xdnb", "tests", "notebooks") for p in sorted((ROOT / d).rglob("*"))
                                    if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts]
    mentions = [str(p.relative_to(ROOT)) for p in files if DESIGN_NOTE in p.read_text(encoding="utf-8", errors="ignore")]
    assert len(files) > 20, files  # the scan reached the package, its tests and its notebooks
    assert not mentions, f"these files point at {DESIGN_NOTE}, which users do not have (use docs/method.md): {mentions}"
