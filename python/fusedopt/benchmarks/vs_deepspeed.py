"""Section ``deepspeed`` of ``python -m fusedopt bench`` (named only: ``--rules deepspeed``):
the ``torch`` section's cases with DeepSpeed's ``DeepSpeedCPUAdam`` as a third column.

Layer: tools (see ``vs_torch``; deepspeed is imported only when this section runs).
"""
from __future__ import annotations

from .vs_torch import section_deepspeed as section

__all__ = ["section"]
