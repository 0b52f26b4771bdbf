"""resnorm: a study of normalization layers in a 6n+2-layer ResNet.

`resnorm.run_study(plan, out, data=...)` runs a study from Python (a notebook) and returns its
folder; `resnorm.show_report(study)` displays its report (resnorm.api). Both are imported on
first use, so `import resnorm` does not import torch.
"""

__version__ = "0.1.0"
__all__ = ["run_study", "show_report", "__version__"]

_API = ("run_study", "show_report")


def __getattr__(name: str):
    """The API on first use. Imported by name: every module reads __version__ from this
    package, and a static import here would show them all importing the top floor."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module("resnorm.api"), name)
    raise AttributeError(f"module 'resnorm' has no attribute {name!r}")
