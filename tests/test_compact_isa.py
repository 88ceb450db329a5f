"""The compact-form L-BFGS direction's instruction-set copies (csrc/cpu/lbfgs_compact.cpp,
compiled once per instruction set like the kernels and chosen with them, ``fusedopt.set_isa``):
every copy, on 1 and 2 threads, gives the bits of ``fusedopt.reference`` -- the first pass's
dots (with the Gram column, and as per-block partials), the second pass (and its partials) and
the fused direction -- on the table of tests/test_compact.py, and on an ``out`` large enough
for the second pass's non-temporal stores, also where ``out`` is not 16-byte aligned.
"""
import numpy as np
import pytest

from cases import threads_and_isa
from fusedopt import _core, reference
from test_compact import CASES, DTYPES, filled, fresh_gram, make_pairs

ISAS = _core.available_isas()
THREADS = (1, 2)


def _all_passes(h, g, out):
    """Every product of the compact form on (h, g), into ``out`` (a view the caller owns):
    the dots (both kinds, both forms), the second pass and its partials, and the fused
    direction with the newest pair's Gram column stale."""
    head, count = h.head, h.count
    newest = (head + count - 1) % h.m if count else -1
    res = {}
    for gram_row in ([-1, newest] if count else [-1]):
        res[f"dots{gram_row}"] = _core.lbfgs_compact_dots(h.s, h.y, g, head, count, gram_row)
        res[f"parts{gram_row}"] = _core.lbfgs_compact_dots(h.s, h.y, g, head, count, gram_row,
                                                           True)
    sy, yy = h.sy.copy(), h.yy.copy()
    dots = res["dots-1"]
    cs, cy, gamma = _core.lbfgs_compact_coefficients(dots, sy, yy, head, count)
    res["gd"] = _core.lbfgs_compact_combine(out, g, h.s, h.y, head, count, cs, cy, gamma)
    res["out"] = out.copy()
    res["combine_parts"] = _core.lbfgs_compact_combine(out, g, h.s, h.y, head, count, cs, cy,
                                                       gamma, True)
    if count:
        for a in (sy, yy):
            a[:, newest] = a[newest, :] = np.nan
        sy[newest, :] = h.sy[newest, :]
    res["fused_gd"] = _core.lbfgs_compact_direction(out, g, h.s, h.y, sy, yy, head, count,
                                                    newest)
    res["fused"], res["sy"], res["yy"] = out.copy(), sy, yy
    return res


def _reference(h, g):
    head, count = h.head, h.count
    newest = (head + count - 1) % h.m if count else -1
    res = {}
    for gram_row in ([-1, newest] if count else [-1]):
        res[f"dots{gram_row}"] = reference.lbfgs_compact_dots(h.s, h.y, g, head, count,
                                                              gram_row)
    cs, cy, gamma = reference.lbfgs_compact_coefficients(res["dots-1"], h.sy, h.yy, head, count)
    out = np.empty_like(g)
    res["gd"] = reference.lbfgs_compact_combine(out, g, h.s, h.y, head, count, cs, cy, gamma)
    res["out"] = out
    return res


def _check(got, want, h):
    for k, v in want.items():
        assert np.asarray(got[k]).tobytes() == np.asarray(v).tobytes(), k
    assert got["fused"].tobytes() == want["out"].tobytes() and got["fused_gd"] == want["gd"]
    nb = -(-h.n // int(_core.reduce_block))
    for gram_row in [k[4:] for k in want if k.startswith("dots")]:
        parts = got[f"parts{gram_row}"]
        assert parts.shape == (nb, want[f"dots{gram_row}"].size)
        summed = np.add.accumulate(np.vstack([np.zeros((1, parts.shape[1])), parts]))[-1]
        assert summed.tobytes() == want[f"dots{gram_row}"].tobytes()
    parts = got["combine_parts"]
    assert np.add.accumulate(np.concatenate([[0.0], parts]))[-1] == want["gd"]
    if h.count:   # the new Gram column of the fused call, over the valid rows
        rows = [(h.head + k) % h.m for k in range(h.count)]
        new = rows[-1]
        assert got["sy"][rows, new].tobytes() == h.sy[rows, new].tobytes()
        assert got["yy"][rows, new].tobytes() == h.yy[rows, new].tobytes()
        assert got["yy"][new, rows].tobytes() == h.yy[new, rows].tobytes()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES)
def test_every_copy_and_thread_count_gives_the_reference_bits(case, dtype, isa):
    h, g = filled(case, dtype)
    h.sy[:], h.yy[:], _ = fresh_gram(h)
    want = _reference(h, g)
    for nt in THREADS:
        with threads_and_isa(nt, isa):
            _check(_all_passes(h, g, np.empty_like(g)), want, h)


#: Past the second pass's threshold for non-temporal stores (32 MiB of out), odd.
N_STREAM = {np.float64: (4 << 20) + 4097, np.float32: (8 << 20) + 4097}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_streamed_out_gives_the_reference_bits(dtype):
    """A large out (written with non-temporal stores) in every copy, aligned and not: the
    reference's bits; a ring of m = 2 wrapped."""
    from fusedopt.lbfgs import History
    n = N_STREAM[dtype]
    rng = np.random.default_rng(11)
    h = History(n, 2, dtype)
    for s, y in make_pairs(rng, n, 3, dtype):
        assert h.push(s, y)
    g = rng.standard_normal(n).astype(dtype)
    h.sy[:], h.yy[:], _ = fresh_gram(h)
    want = _reference(h, g)
    buf = np.empty(n + 8, dtype)
    for isa in ISAS:
        for shift in (0, 1):   # out 16-byte aligned or not (the stores' head loop)
            out = buf[shift:shift + n]
            out.fill(np.nan)
            with threads_and_isa(2, isa):
                got = _core.lbfgs_compact_combine(out, g, h.s, h.y, h.head, h.count,
                                                  *reference.lbfgs_compact_coefficients(
                                                      want["dots-1"], h.sy, h.yy, h.head,
                                                      h.count))
            assert got == want["gd"], (isa, shift)
            assert out.tobytes() == want["out"].tobytes(), (isa, shift)
