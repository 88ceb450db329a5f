"""The L-BFGS two-loop kernel and history against the NumPy reference (Nocedal & Wright Alg. 7.4)
and the dense BFGS inverse-Hessian recursion; thread-count determinism; argument checks."""
import numpy as np
import pytest

import fusedopt
from fusedopt import _core, lbfgs, ops, reference

# Relative tolerance of kernel vs reference, per dtype: the two sum their dots in different
# orders (the kernel in float64 blocks, the reference with NumPy's dot in the array dtype), so
# they agree to rounding, amplified by the recursion's conditioning, not bit for bit.
TOL = {np.float64: 1e-12, np.float32: 1e-5}


def make_pairs(rng, n, k, dtype):
    """k curvature pairs y = A s with A diagonal, positive (s.y > 0), well conditioned."""
    a = rng.uniform(0.5, 4.0, n)
    pairs = []
    for _ in range(k):
        s = rng.standard_normal(n)
        y = a * s + 0.05 * rng.standard_normal(n)
        pairs.append((s.astype(dtype), y.astype(dtype)))
    return pairs


def filled(rng, n, m, pushes, dtype):
    h = lbfgs.History(n, m, dtype)
    pairs = make_pairs(rng, n, pushes, dtype)
    for s, y in pairs:
        assert h.push(s, y)
    return h, pairs[max(0, pushes - m):]


def rel_err(d, r):
    return np.abs(d.astype(np.float64) - r.astype(np.float64)).max() / np.abs(r).max()


# (n, m, pushes): 0, 1 and m pairs, a ring that has wrapped, odd n over several blocks.
CASES = {
    "empty": (1000, 5, 0),
    "one": (1000, 5, 1),
    "full": (1000, 5, 5),
    "wrapped": (1000, 5, 8),
    "odd_n": (278011, 7, 10),
    "m1_wrapped": (333, 1, 3),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES)
def test_kernel_matches_reference(case, dtype):
    n, m, pushes = CASES[case]
    rng = np.random.default_rng(list(CASES).index(case))
    h, pairs = filled(rng, n, m, pushes, dtype)
    assert h.count == min(m, pushes)
    assert h.head == (max(0, pushes - m) % m)
    g = rng.standard_normal(n).astype(dtype)
    d = lbfgs.two_loop(g, h)
    r = reference.lbfgs_direction(g, [s for s, _ in pairs], [y for _, y in pairs])
    assert d.dtype == dtype and r.dtype == dtype
    out = np.empty_like(g)
    gd = ops.lbfgs_direction_(out, g, h)  # returns grad . out, taken in the last pass
    assert out.tobytes() == d.tobytes()
    assert gd == _core.lbfgs_dot(g, out)
    if pushes == 0:
        np.testing.assert_array_equal(d, -g)
    assert rel_err(d, r) <= TOL[dtype], rel_err(d, r)
    # A descent direction.
    assert float(np.dot(g.astype(np.float64), d.astype(np.float64))) < 0


def test_history_rows_match_pairs():
    rng = np.random.default_rng(1)
    h, pairs = filled(rng, 50, 4, 6, np.float64)
    for (s, y), (hs, hy) in zip(pairs, h.pairs()):
        np.testing.assert_array_equal(s, hs)
        np.testing.assert_array_equal(y, hy)
    for k in range(h.count):
        row = (h.head + k) % h.m
        assert h.rho[row] == pytest.approx(1.0 / np.dot(pairs[k][0], pairs[k][1]), rel=1e-14)


def dense_bfgs_direction(g, pairs):
    """-H g with H0 = gamma I (gamma of the newest pair) and the BFGS inverse update
    H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T applied oldest to newest."""
    n = g.size
    s_new, y_new = pairs[-1]
    hmat = (s_new @ y_new) / (y_new @ y_new) * np.eye(n)
    for s, y in pairs:
        rho = 1.0 / (y @ s)
        v = np.eye(n) - rho * np.outer(y, s)
        hmat = v.T @ hmat @ v + rho * np.outer(s, s)
    return -hmat @ g


@pytest.mark.parametrize("pushes", [1, 3, 6])
def test_kernel_matches_dense_bfgs(pushes):
    rng = np.random.default_rng(pushes)
    n, m = 40, 6
    h, pairs = filled(rng, n, m, pushes, np.float64)
    g = rng.standard_normal(n)
    d = lbfgs.two_loop(g, h)
    r = dense_bfgs_direction(g, pairs)
    assert rel_err(d, r) <= 1e-10


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_same_bits_for_any_thread_count(dtype):
    rng = np.random.default_rng(7)
    n = _core.lbfgs_parallel_min + 2 * _core.reduce_block + 123  # parallel, a ragged block
    h, _ = filled(rng, n, 6, 9, dtype)
    g = rng.standard_normal(n).astype(dtype)
    outs, dots, maxes = [], [], []
    for nt in (1, 2, 3):
        with fusedopt.num_threads(nt):
            outs.append(lbfgs.two_loop(g, h))
            dots.append((_core.lbfgs_dot(g, h.s[2]),
                         ops.lbfgs_direction_(np.empty_like(g), g, h),
                         _core.lbfgs_sub_dots(np.empty_like(g), g, h.y[1], h.s[3])))
            maxes.append(_core.lbfgs_amax(g))
    for o in outs[1:]:
        assert o.tobytes() == outs[0].tobytes()
    assert len(set(dots)) == 1 and len(set(maxes)) == 1


def test_helpers():
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal(70001).astype(dtype)
        b = rng.standard_normal(70001).astype(dtype)
        assert _core.lbfgs_dot(a, b) == pytest.approx(
            float(np.dot(a.astype(np.float64), b.astype(np.float64))), rel=1e-12)
        assert _core.lbfgs_amax(a) == float(np.abs(a).max())
        out = np.empty_like(a)
        _core.lbfgs_axpby(out, 0.5, a, -2.0, b)
        np.testing.assert_array_equal(out, dtype(0.5) * a + dtype(-2.0) * b)
        c = rng.standard_normal(70001).astype(dtype)
        y = b.copy()
        cy, yy = _core.lbfgs_sub_dots(y, a, y, c)  # y = a - y, in place
        np.testing.assert_array_equal(y, a - b)
        assert (cy, yy) == (_core.lbfgs_dot(c, y), _core.lbfgs_dot(y, y))
        special = a.copy()
        special[:3] = [np.inf, -np.inf, np.nan]
        _core.lbfgs_axpby(out, 1.0, special)  # without y: out = a * x, an exact copy for a = 1
        assert out.tobytes() == special.tobytes()
        _core.lbfgs_axpby(out, -0.25, a)
        np.testing.assert_array_equal(out, a * dtype(-0.25))
        _core.lbfgs_axpby(a, 1.0, a, 3.0, b)  # in place is allowed
        a[5] = np.nan
        assert np.isnan(_core.lbfgs_amax(a))


# ---------------------------------------------------------------------------------------------
# Bad input: the right error, naming the argument, and `out` untouched.


def _args(dtype=np.float64, n=100, m=4):
    rng = np.random.default_rng(0)
    h, _ = filled(rng, n, m, 3, dtype)
    g = rng.standard_normal(n).astype(dtype)
    out = np.full(n, 7.0, dtype)
    return dict(out=out, grad=g, s=h.s, y=h.y, rho=h.rho, head=h.head, count=h.count)


def _bad(**change):
    a = _args()
    a.update(change)
    return a


_base = _args()
BAD = {
    "out int": (TypeError, "out", _bad(out=np.zeros(100, np.int64))),
    "out list": (TypeError, "out", _bad(out=[0.0] * 100)),
    "grad dtype": (TypeError, "grad", _bad(grad=np.zeros(100, np.float32))),
    "grad shape": (ValueError, "grad", _bad(grad=np.zeros(99))),
    "s dtype": (TypeError, "s", _bad(s=_base["s"].astype(np.float32))),
    "s shape": (ValueError, "s", _bad(s=np.zeros((4, 99)))),
    "s 1-d": (ValueError, "s", _bad(s=np.zeros(400))),
    "y shape": (ValueError, "y", _bad(y=np.zeros((3, 100)))),
    "rho dtype": (TypeError, "rho", _bad(rho=np.ones(4, np.float32))),
    "rho shape": (ValueError, "rho", _bad(rho=np.ones(5))),
    "s not contiguous": (ValueError, "s", _bad(s=np.zeros((4, 200))[:, ::2])),
    "head high": (ValueError, "head", _bad(head=4)),
    "head negative": (ValueError, "head", _bad(head=-1)),
    "count high": (ValueError, "count", _bad(count=5)),
    "count negative": (ValueError, "count", _bad(count=-1)),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_arguments_raise_and_leave_out(case):
    exc, name, args = BAD[case]
    out = args["out"]
    before = np.array(out, copy=True)
    with pytest.raises(exc, match=name):
        _core.lbfgs_direction(**args)
    np.testing.assert_array_equal(np.asarray(out), before)


def test_out_checks():
    a = _args()
    ro = a["out"].copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        _core.lbfgs_direction(**{**a, "out": ro})
    strided = np.full(200, 7.0)[::2]
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        _core.lbfgs_direction(**{**a, "out": strided})
    assert (strided == 7.0).all()
    # out aliasing an input: grad itself, or a row of the history.
    g = a["grad"]
    before = g.copy()
    with pytest.raises(ValueError, match="out shares memory with grad"):
        _core.lbfgs_direction(**{**a, "out": g})
    np.testing.assert_array_equal(g, before)
    row = a["s"][1]
    before = row.copy()
    with pytest.raises(ValueError, match="out shares memory with s"):
        _core.lbfgs_direction(**{**a, "out": row})
    np.testing.assert_array_equal(row, before)


def test_ops_and_two_loop_checks():
    rng = np.random.default_rng(0)
    h, _ = filled(rng, 30, 3, 2, np.float64)
    with pytest.raises(TypeError, match="grad has dtype float32"):
        lbfgs.two_loop(np.zeros(30, np.float32), h)
    out = np.zeros((5, 6))
    ops.lbfgs_direction_(out, rng.standard_normal((5, 6)), h)  # any shape of n elements
    assert np.isfinite(out).all() and out.any()
    with pytest.raises(TypeError, match="a has dtype"):
        _core.lbfgs_dot(np.zeros(3, np.int32), np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="b has 4 elements"):
        _core.lbfgs_dot(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="out shares memory with x"):
        x = np.zeros(10)
        _core.lbfgs_axpby(x[1:], 1.0, x[:-1], 1.0, np.zeros(9))
    with pytest.raises(ValueError, match="out shares memory with c"):
        x = np.zeros(10)
        _core.lbfgs_sub_dots(x, np.ones(10), np.ones(10), x)
    assert (x == 0).all()


def test_history_push_and_checks():
    h = lbfgs.History(4, m=2)
    assert not h.push([1, 0, 0, 0], [-1, 0, 0, 0])  # s.y < 0
    assert not h.push(np.zeros(4), np.zeros(4))  # y.y = 0
    assert not h.push([1, 0, 0, 0], [np.inf, 0, 0, 0])
    assert h.skipped == 3 and h.count == 0
    for k in range(3):
        assert h.push(np.full(4, k + 1.0), np.full(4, 2.0 * (k + 1)))
    assert (h.count, h.head) == (2, 1)
    assert [p[0][0] for p in h.pairs()] == [2.0, 3.0]
    h.clear()
    assert (h.count, h.head) == (0, 0)
    with pytest.raises(ValueError, match="s has 3 elements"):
        h.push(np.zeros(3), np.zeros(4))
    with pytest.raises(TypeError, match="y must be a real array"):
        h.push(np.ones(4), np.ones(4, complex))
    with pytest.raises(ValueError, match="m must be >= 1"):
        lbfgs.History(4, m=0)
    with pytest.raises(TypeError, match="m must be an int"):
        lbfgs.History(4, m=2.0)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        lbfgs.History(4, dtype=np.int32)
    with pytest.raises(ValueError, match="eps_curv must be >= 0"):
        lbfgs.History(4, eps_curv=-1.0)
    h32 = lbfgs.History(7, m=3, dtype=np.float32)
    assert h32.s.shape == (3, 7) and h32.s.dtype == np.float32 and h32.rho.dtype == np.float64
    assert h32.s.flags.c_contiguous and h32.y.flags.c_contiguous
