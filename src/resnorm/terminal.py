"""Where progress can be drawn in place: a terminal, or a Jupyter notebook (Kaggle, Colab),
where tqdm.auto draws a widget. Elsewhere (a log file, nohup, SLURM) progress comes as plain
lines."""
from __future__ import annotations

import sys

__all__ = ["in_notebook", "live_display"]


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (the test tqdm.auto makes)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def live_display() -> bool:
    """Whether progress bars can update in place: stderr is a terminal, or a notebook."""
    return sys.stderr.isatty() or in_notebook()
