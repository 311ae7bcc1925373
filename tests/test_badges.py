"""Every Binder badge points at pyproject's ``[project.urls] Repository`` (scripts/render_badges.py)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import render_badges  # noqa: E402


def test_binder_badges_match_pyproject_repository():
    repo = render_badges.repository()
    links = {path.name: render_badges.BINDER_LINK.findall(path.read_text(encoding="utf-8")) for path in render_badges.files()}
    assert sum(map(len, links.values())) >= 6, links  # the README's table has one per notebook
    wrong = {name: found for name, found in links.items() if any(link != f"https://mybinder.org/v2/gh/{repo}/" for link in found)}
    assert not wrong, f"run scripts/render_badges.py: these links do not point at {repo}: {wrong}"


def test_render_rewrites_any_owner():
    text = "[x](https://mybinder.org/v2/gh/someone/old/HEAD?urlpath=lab/tree/notebooks/a.ipynb)"
    assert render_badges.render(text, "org/xdnb") == "[x](https://mybinder.org/v2/gh/org/xdnb/HEAD?urlpath=lab/tree/notebooks/a.ipynb)"
