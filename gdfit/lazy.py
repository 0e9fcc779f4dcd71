"""torch, imported at its first use, so that a run computing in numpy never loads it.

Loading torch costs about two seconds and 600 MB, more than a whole curve fit by `lm` on the CPU,
which works in numpy (fitting/lm.py, expr/hostcurve.py). A module writes `from gdfit.lazy import
torch` where it would write `import torch`: the first `torch.X` imports torch, and X is kept here,
so later reads are plain attribute reads. Module-level code must not read it (that would load
torch at import). `loaded()` says whether torch has been imported by anyone.
"""

from __future__ import annotations

import sys
from typing import Any


class _LazyTorch:
    """Stands for the torch module; becomes it attribute by attribute."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name != "__version__":  # introspection (copy, inspect) must not load torch
            raise AttributeError(name)
        import torch

        value = getattr(torch, name)
        setattr(self, name, value)
        return value


torch: Any = _LazyTorch()


def loaded() -> bool:
    """Whether torch has been imported in this process (by gdfit or anyone else)."""
    return "torch" in sys.modules
