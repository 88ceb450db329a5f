"""Check the 8-bit block encoder of every kernel copy (or those named) against the format's
definition for EVERY float32 y in [-1 - 2**-23, 1 + 2**-23] (about 2.1e9 values per map), both
maps: ``fusedopt._core.quant_encode_mismatches`` with stride 1. The AVX-512 VBMI copy finds its
candidate codes by arithmetic (csrc/cpu/compact.cpp encode_block_vbmi_finite), which this proves
equal to fusedopt/compact.h fo_quant_encode; tests/test_state_dtypes.py checks a sample of it.

    PYTHONPATH=python python tools/exhaustive_encode.py [avx512 ...]

About 10-20 s per copy on one Zen 4 core. Exit status 1 on any mismatch.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from fusedopt import _core, ops  # noqa: F401 -- ops gives _core the format's tables

TOP = int(np.float32(1 + 2**-23).view(np.uint32))  # the largest |y| of a finite absmax
CHUNK = 1 << 26


def main(isas: list) -> int:
    bad_total = 0
    for isa in isas or _core.available_isas():
        _core.set_isa(isa)
        for signed in (False, True):
            t = time.perf_counter()
            bad = 0
            for base in (0, 0x80000000):  # y >= 0 (from +0.0), y <= -0.0
                for first in range(base, base + TOP + 1, CHUNK):
                    last = min(first + CHUNK - 1, base + TOP)
                    bad += _core.quant_encode_mismatches(signed, first, last)
            print(f"{isa:8s} {'signed' if signed else 'unsigned':8s} {2 * (TOP + 1)} values, "
                  f"{bad} mismatches, {time.perf_counter() - t:.1f} s", flush=True)
            bad_total += bad
    return 1 if bad_total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
