"""``_core.block_dots``: per-block partial dot products (csrc/cpu/partials_bindings.cpp), the
pieces from which fusedopt.lbfgs.mpi assembles the one-process bits across ranks.

Each column summed in block order from 0.0 must be ``lbfgs_dot`` (and for history rows
``lbfgsb_rows_dots``) bit for bit, for any thread count, for odd sizes, float32 and float64; a
shard that starts on a block boundary has the whole vector's blocks; bad arguments raise
TypeError/ValueError naming the argument.
"""
from __future__ import annotations

import numpy as np
import pytest

from fusedopt import _core

B = int(_core.reduce_block)
SIZES = [1, 7, B - 1, B, B + 1, 3 * B + 777, 300001]


def in_block_order(part):
    t = np.zeros(part.shape[1])
    for row in part:
        t = t + row
    return t


def vectors(n, dtype, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for _ in range(k)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", SIZES)
def test_columns_in_block_order_are_lbfgs_dot(n, dtype):
    a, b, c = vectors(n, dtype)
    part = _core.block_dots([a, b, c, a], [b, c, c, a])
    assert part.shape == (-(-n // B), 4) and part.dtype == np.float64
    sums = in_block_order(part)
    for j, (x, y) in enumerate([(a, b), (b, c), (c, c), (a, a)]):
        assert sums[j] == _core.lbfgs_dot(x, y), j


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_same_bits_for_any_thread_count_and_shard(dtype):
    n = 5 * B + 123
    a, b, _ = vectors(n, dtype, seed=1)
    old = _core.get_num_threads()
    try:
        runs = []
        for t in (1, 2, 3):
            _core.set_num_threads(t)
            runs.append(_core.block_dots([a], [b]))
    finally:
        _core.set_num_threads(old)
    for r in runs[1:]:
        assert r.tobytes() == runs[0].tobytes()
    # a shard from block 2 on has the same blocks as the whole vector there
    assert _core.block_dots([a[2 * B:]], [b[2 * B:]]).tobytes() == runs[0][2:].tobytes()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_history_rows_match_rows_dots(dtype):
    n, rows = 2 * B + 999, 4
    rng = np.random.default_rng(2)
    s = rng.standard_normal((5, n)).astype(dtype)
    y = rng.standard_normal((5, n)).astype(dtype)
    v = rng.standard_normal(n).astype(dtype)
    want = _core.lbfgsb_rows_dots(s, y, v, rows)
    part = _core.block_dots([s[j] for j in range(rows)] + [y[j] for j in range(rows)],
                            [v] * (2 * rows))
    assert in_block_order(part).tobytes() == np.asarray(want, np.float64).tobytes()


def test_empty_vectors_give_no_blocks():
    assert _core.block_dots([np.zeros(0)], [np.zeros(0)]).shape == (0, 1)


@pytest.mark.parametrize("args, err, match", [
    (([np.zeros(5)], [np.zeros(4)]), ValueError, r"b\[0\] has 4 elements"),
    (([np.zeros(5)], [np.zeros(5, np.float32)]), TypeError, r"b\[0\].*float32"),
    (([np.zeros(5), np.zeros(5)], [np.zeros(5)]), ValueError, "same length"),
    (([], []), ValueError, "at least one pair"),
    (([np.zeros(5, np.int64)], [np.zeros(5)]), TypeError, r"a\[0\]"),
    (([np.zeros(10)[::2]], [np.zeros(5)]), ValueError, r"a\[0\].*contiguous"),
])
def test_bad_arguments(args, err, match):
    with pytest.raises(err, match=match):
        _core.block_dots(*args)
