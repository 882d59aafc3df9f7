"""What the compiled check kernels share: one array type per argument (`jit.frozen` views), the tally of failing
rows per rule, and the wait for a run's compiling child.
"""
from __future__ import annotations

import numba

from .. import warmup
from ..jit import JIT, frozen

__all__ = ["PHASE", "frozen", "ready", "tally"]

PHASE = "check kernels"  # the warm-up phase that compiles them (`evaluation.warmup_phases`)


def ready() -> None:
    """Before a check kernel's first call: let a compiling child of this run finish the check kernels, so they load
    from numba's cache (`warmup`; nothing to wait for in any other process)."""
    warmup.wait(PHASE)


@numba.njit(**JIT)
def tally(failed, row, counts, first):  # pragma: no cover - compiled into the kernels that call it
    """Count `row` against every rule whose bit is set in the mask `failed` (bit r: rule r), noting the first
    failing row of each; a loop over the mask's bits, never over rows."""
    rule = 0
    while failed:
        if failed & 1:
            counts[rule] += 1
            if first[rule] < 0:
                first[rule] = row
        failed >>= 1
        rule += 1
