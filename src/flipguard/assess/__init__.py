"""Impact assessment: damage and illusion gap of label-flipping attacks, swept and aggregated."""

from ._result import Assessment, BoundaryView, RunResult
from ._runner import assess, derive_seed

__all__ = ["Assessment", "BoundaryView", "RunResult", "assess", "derive_seed"]
