"""nbval settings for the notebooks (``make test`` runs ``pytest --nbval notebooks``).

The kernel gets the environment the stored outputs were made with
(``scripts/regenerate_notebooks.py``: one thread, no progress bars, the light plotly renderer),
and these outputs are excluded from the comparison with the stored ones:

- plotly figures (``application/vnd.plotly.v1+json``) and HTML (plotly's or a widget's markup):
  figure JSON carries random trace ids and float noise; figures are checked by the unit tests;
- widget views (random model ids; nbval skips them already) and stderr (warnings, logs).

Everything printed to stdout and every ``text/plain`` result is compared exactly, so checked
cells print short, rounded values; cells whose output depends on timing carry the
``nbval-ignore-output`` tag.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from regenerate_notebooks import KERNEL_ENV  # noqa: E402  (one definition of the kernel environment)

for _name, _value in KERNEL_ENV.items():
    os.environ[_name] = _value

NOT_COMPARED = ("application/vnd.plotly.v1+json", "text/html", "application/vnd.jupyter.widget-view+json", "stderr")


def pytest_collection_modifyitems(items):
    for item in items:
        parent = getattr(item, "parent", None)
        skip = getattr(parent, "skip_compare", None)
        if skip is not None and not set(NOT_COMPARED) <= set(skip):
            parent.skip_compare = tuple(skip) + tuple(k for k in NOT_COMPARED if k not in skip)
