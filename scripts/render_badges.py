#!/usr/bin/env python
"""Write the repository address of pyproject.toml into every Binder badge (README, notebooks).

The address lives in one place, ``[project.urls] Repository`` (``https://github.com/OWNER/NAME``);
every link ``https://mybinder.org/v2/gh/<owner>/<name>/...`` in README.md and notebooks/*.ipynb is
rewritten to it. Usage (repository root)::

    python scripts/render_badges.py          # rewrite the links
    python scripts/render_badges.py --check  # exit 1 and list the files whose links differ

``tests/test_badges.py`` runs the check.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINDER_LINK = re.compile(r"https://mybinder\.org/v2/gh/[^/\s\"')]+/[^/\s\"')]+/")


def repository(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """``OWNER/NAME`` from ``[project.urls] Repository`` (a GitHub address)."""
    text = pyproject.read_text(encoding="utf-8")
    try:
        import tomllib

        url = tomllib.loads(text)["project"]["urls"]["Repository"]
    except ModuleNotFoundError:  # Python 3.10: no tomllib; the line is simple enough
        url = re.search(r'^Repository\s*=\s*"([^"]+)"', text, re.M).group(1)
    found = re.fullmatch(r"https://github\.com/([^/\s]+)/([^/\s]+?)(?:\.git)?/?", url)
    if not found:
        raise SystemExit(f"[project.urls] Repository must be https://github.com/OWNER/NAME, got {url!r}")
    return f"{found.group(1)}/{found.group(2)}"


def files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "notebooks").glob("*.ipynb"))]


def render(text: str, repo: str) -> str:
    return BINDER_LINK.sub(f"https://mybinder.org/v2/gh/{repo}/", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files whose badges differ")
    args = parser.parse_args(argv)
    repo = repository()
    stale = []
    for path in files():
        text = path.read_text(encoding="utf-8")
        new = render(text, repo)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "differ from" if args.check else "rewritten to"
    for path in stale:
        print(f"{path.relative_to(ROOT)}: Binder links {verb} {repo}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
