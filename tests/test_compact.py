"""The compact-form L-BFGS direction (csrc/cpu/lbfgs_compact.cpp, ``History.direction``): the
kernels bit for bit against their NumPy twins in ``fusedopt.reference``, the direction against
the two-loop recursion and the dense BFGS matrix to rounding, the Gram matrices kept by the
history, per-block partials of slices cut at block boundaries, thread-count determinism,
argument checks, and minimize on the compact direction by default."""
import numpy as np
import pytest

import fusedopt
from fusedopt import _core, lbfgs, reference
from fusedopt.lbfgs import History

BLOCK = int(_core.reduce_block)
N_PAR = (1 << 18) + 2 * BLOCK + 123      # above lbfgs_parallel_min: the pool runs, ragged block

# Compact vs two-loop, per dtype: the same H in exact arithmetic, different operations (the
# compact form solves triangular systems in float64 and combines in the array dtype; the two-loop
# scales the vector 2m times in the array dtype), so they agree to rounding amplified by the
# conditioning of the pairs, not bit for bit.
TOL = {np.float64: 1e-11, np.float32: 2e-5}

# (n, m, pushes): no pair, one, full, wrapped, odd n over several blocks, m = 1 wrapped.
CASES = {
    "empty": (1000, 5, 0),
    "one": (1000, 5, 1),
    "full": (1000, 5, 5),
    "wrapped": (1001, 5, 8),
    "odd_n": (3 * BLOCK + 5, 7, 10),
    "m1_wrapped": (333, 1, 3),
    "parallel": (N_PAR, 4, 6),
}
DTYPES = [np.float64, np.float32]


def make_pairs(rng, n, k, dtype):
    """k curvature pairs y = A s + noise, A diagonal positive: s.y > 0, well conditioned."""
    a = rng.uniform(0.5, 4.0, n)
    out = []
    for _ in range(k):
        s = rng.standard_normal(n)
        out.append((s.astype(dtype), (a * s + 0.05 * rng.standard_normal(n)).astype(dtype)))
    return out


def filled(case, dtype):
    n, m, pushes = CASES[case]
    rng = np.random.default_rng(list(CASES).index(case))
    h = History(n, m, dtype)
    for s, y in make_pairs(rng, n, pushes, dtype):
        assert h.push(s, y)
    return h, rng.standard_normal(n).astype(dtype)


def fresh_gram(h):
    """S^T Y and Y^T Y of the valid rows from scratch (reference.blocked_dot), ring indexing."""
    sy = np.zeros((h.m, h.m))
    yy = np.zeros((h.m, h.m))
    rows = [(h.head + k) % h.m for k in range(h.count)]
    for i in rows:
        for j in rows:
            sy[i, j] = reference.blocked_dot(h.s[i], h.y[j])
            yy[i, j] = reference.blocked_dot(h.y[i], h.y[j])
    return sy, yy, rows


def rel_err(d, r):
    return np.abs(d.astype(np.float64) - r.astype(np.float64)).max() / np.abs(r).max()


def test_reference_block_is_the_kernels():
    assert reference.REDUCE_BLOCK == BLOCK


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES)
def test_kernels_bit_equal_to_reference(case, dtype):
    """dots (with and without the Gram column), coefficients, combine and the fused direction
    give the reference's bits."""
    h, g = filled(case, dtype)
    head, count = h.head, h.count
    newest = (head + count - 1) % h.m if count else -1
    for gram_row in ([-1, newest] if count else [-1]):
        got = _core.lbfgs_compact_dots(h.s, h.y, g, head, count, gram_row)
        want = reference.lbfgs_compact_dots(h.s, h.y, g, head, count, gram_row)
        assert got.dtype == np.float64 and got.shape == ((4 if gram_row >= 0 else 2) * count,)
        assert got.tobytes() == want.tobytes(), gram_row
    sy, yy, _ = fresh_gram(h)
    dots = reference.lbfgs_compact_dots(h.s, h.y, g, head, count)
    cs, cy, gamma = _core.lbfgs_compact_coefficients(dots, sy, yy, head, count)
    rcs, rcy, rgamma = reference.lbfgs_compact_coefficients(dots, sy, yy, head, count)
    assert cs.tobytes() == rcs.tobytes() and cy.tobytes() == rcy.tobytes() and gamma == rgamma
    out, rout = np.empty_like(g), np.empty_like(g)
    gd = _core.lbfgs_compact_combine(out, g, h.s, h.y, head, count, cs, cy, gamma)
    rgd = reference.lbfgs_compact_combine(rout, g, h.s, h.y, head, count, rcs, rcy, rgamma)
    assert out.tobytes() == rout.tobytes() and gd == rgd
    # The fused call, the Gram column of the newest pair computed in its first pass.
    ksy, kyy = sy.copy(), yy.copy()
    rsy, ryy = sy.copy(), yy.copy()
    if count:
        for a in (ksy, kyy, rsy, ryy):
            a[:, newest] = a[newest, :] = np.nan      # must be rewritten (yy both ways)
        ksy[newest, :] = rsy[newest, :] = sy[newest, :]   # sy's row is not the new column
    fo, ro = np.empty_like(g), np.empty_like(g)
    fgd = _core.lbfgs_compact_direction(fo, g, h.s, h.y, ksy, kyy, head, count, newest)
    rfgd = reference.lbfgs_compact_direction(ro, g, h.s, h.y, rsy, ryy, head, count, newest)
    assert fo.tobytes() == ro.tobytes() and fgd == rfgd
    assert fo.tobytes() == out.tobytes() and fgd == gd
    rows = [(head + k) % h.m for k in range(count)]
    for i in rows:
        assert ksy[i, newest] == sy[i, newest] and kyy[i, newest] == yy[i, newest]
        assert kyy[newest, i] == yy[newest, i]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES)
def test_compact_agrees_with_two_loop(case, dtype):
    h, g = filled(case, dtype)
    two = np.empty_like(g)
    comp = np.empty_like(g)
    gd2 = h.direction(two, g, method="two_loop")
    gdc = h.direction(comp, g, method="compact")
    assert gdc == reference.blocked_dot(g, comp)
    if h.count == 0:
        np.testing.assert_array_equal(comp, -g)
        assert comp.tobytes() == two.tobytes()
    assert rel_err(comp, two) <= TOL[dtype], rel_err(comp, two)
    assert abs(gdc - gd2) <= TOL[dtype] * abs(gd2)
    assert gdc < 0.0   # a descent direction


def dense_bfgs_direction(g, pairs):
    """-H g by the dense BFGS inverse update from H0 = gamma I (newest pair), oldest first."""
    s_new, y_new = pairs[-1]
    hmat = (s_new @ y_new) / (y_new @ y_new) * np.eye(g.size)
    for s, y in pairs:
        rho = 1.0 / (y @ s)
        v = np.eye(g.size) - rho * np.outer(y, s)
        hmat = v.T @ hmat @ v + rho * np.outer(s, s)
    return -hmat @ g


@pytest.mark.parametrize("pushes", [1, 3, 6, 9])
def test_compact_matches_dense_bfgs(pushes):
    rng = np.random.default_rng(pushes)
    n, m = 41, 6
    h = History(n, m)
    pairs = make_pairs(rng, n, pushes, np.float64)
    for s, y in pairs:
        h.push(s, y)
    g = rng.standard_normal(n)
    d = np.empty(n)
    h.direction(d, g, method="compact")
    assert rel_err(d, dense_bfgs_direction(g, pairs[-m:])) <= 1e-10


def test_history_keeps_the_gram_current():
    """Directions between pushes (the solver's pattern) and several pushes without a direction
    (columns then computed by rows_dots) leave sy, yy equal to fresh dots, bit for bit; the
    direction then has the bits of the reference over a fresh Gram."""
    rng = np.random.default_rng(11)
    n, m = BLOCK + 77, 4
    h = History(n, m)
    pairs = make_pairs(rng, n, 11, np.float64)
    out = np.empty(n)
    for step, (s, y) in enumerate(pairs):
        h.push(s, y)
        if step % 3 == 2:             # sometimes two or three pushes pile up
            continue
        g = rng.standard_normal(n)
        gd = h.direction(out, g)
        sy, yy, rows = fresh_gram(h)
        for i in rows:
            newest = (h.head + h.count - 1) % m
            for j in rows:
                # sy is kept for i not newer than j only
                if (i - h.head) % m <= (j - h.head) % m:
                    assert h.sy[i, j] == sy[i, j], (step, i, j)
                assert h.yy[i, j] == yy[i, j], (step, i, j)
            assert h.sy[i, newest] == sy[i, newest]
        want = np.empty(n)
        wgd = reference.lbfgs_compact_direction(want, g, h.s, h.y, sy, yy, h.head, h.count)
        assert out.tobytes() == want.tobytes() and gd == wgd
    h.clear()
    assert h.direction(out, g) == reference.blocked_dot(g, -g)
    np.testing.assert_array_equal(out, -g)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_same_bits_for_any_thread_count(dtype):
    h, g = filled("parallel", dtype)
    newest = (h.head + h.count - 1) % h.m
    h.direction(np.empty_like(g), g)      # every column current; then the newest recomputed
    results = []
    for nt in (1, 2, 3):
        with fusedopt.num_threads(nt):
            sy, yy = h.sy.copy(), h.yy.copy()
            h._stale = {newest}
            out = np.empty_like(g)
            gd = h.direction(out, g)
            part = _core.lbfgs_compact_dots(h.s, h.y, g, h.head, h.count, newest, True)
            results.append((out.tobytes(), gd, h.sy.tobytes(), h.yy.tobytes(), part.tobytes()))
            assert np.isfinite(gd) and h.sy.tobytes() == sy.tobytes()
            h.sy, h.yy = sy, yy
    assert results[1] == results[0] and results[2] == results[0]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_partials_of_block_aligned_slices_give_the_whole_vector_bits(dtype):
    """Each 'rank' passes its slice (cut at block boundaries, the last one ragged): the
    gathered partials, added in block order, are the one-process results."""
    h, g = filled("odd_n", dtype)
    head, count, n = h.head, h.count, h.n
    newest = (head + count - 1) % h.m
    cuts = [0, BLOCK, 3 * BLOCK, n]              # 3 ranks: 1, 2 and 1 (ragged) blocks
    parts, cparts = [], []
    whole = _core.lbfgs_compact_dots(h.s, h.y, g, head, count, newest)
    sy, yy, _ = fresh_gram(h)
    cs, cy, gamma = _core.lbfgs_compact_coefficients(whole, sy, yy, head, count)
    out = np.empty_like(g)
    gd = _core.lbfgs_compact_combine(out, g, h.s, h.y, head, count, cs, cy, gamma)
    pieces = []
    for lo, hi in zip(cuts, cuts[1:]):
        s, y = np.ascontiguousarray(h.s[:, lo:hi]), np.ascontiguousarray(h.y[:, lo:hi])
        p = _core.lbfgs_compact_dots(s, y, g[lo:hi], head, count, newest, partials=True)
        assert p.shape == (-(-(hi - lo) // BLOCK), 4 * count)
        parts.append(p)
        o = np.empty(hi - lo, dtype)
        cp = _core.lbfgs_compact_combine(o, g[lo:hi], s, y, head, count, cs, cy, gamma,
                                         partials=True)
        assert cp.shape == (-(-(hi - lo) // BLOCK),)
        cparts.append(cp)
        pieces.append(o)
    allp = np.concatenate(parts)
    summed = np.zeros(4 * count)
    for row in allp:                 # one running sum per column, in block order
        summed = summed + row
    assert summed.tobytes() == whole.tobytes()
    assert np.concatenate(pieces).tobytes() == out.tobytes()
    t = 0.0
    for v in np.concatenate(cparts):
        t = t + v
    assert t == gd


def test_argument_checks_before_anything_is_written():
    h, g = filled("full", np.float64)
    out = np.full_like(g, 7.0)
    sy, yy = h.sy.copy(), h.yy.copy()
    good = dict(out=out, grad=g, s=h.s, y=h.y, sy=sy, yy=yy, head=h.head, count=h.count,
                gram_row=-1)
    bad = [
        (dict(gram_row=h.m), ValueError, "gram_row"),
        (dict(gram_row=-2), ValueError, "gram_row"),
        (dict(count=h.m + 1), ValueError, "count"),
        (dict(head=-1), ValueError, "head"),
        (dict(sy=sy.astype(np.float32)), TypeError, "sy"),
        (dict(yy=np.zeros((h.m + 1, h.m + 1))), ValueError, "yy"),
        (dict(grad=g.astype(np.float32)), TypeError, "grad"),
        (dict(s=h.s[:, :-1].copy()), ValueError, "s"),
        (dict(out=h.s[0]), ValueError, "out"),             # aliases the history
        (dict(out=out[::2]), ValueError, "out"),
        (dict(grad=g[:-1]), ValueError, "grad"),
    ]
    for change, exc, match in bad:
        before = (out.copy(), sy.copy(), yy.copy())
        with pytest.raises(exc, match=match):
            _core.lbfgs_compact_direction(**{**good, **change})
        assert np.array_equal(out, before[0]) and np.array_equal(sy, before[1])
        assert np.array_equal(yy, before[2])
    with pytest.raises(ValueError, match="gram_row"):
        _core.lbfgs_compact_dots(h.s, h.y, g, 0, 2, 3)     # row 3 is not among 2 valid pairs
    with pytest.raises(TypeError, match="cs"):
        _core.lbfgs_compact_combine(out, g, h.s, h.y, h.head, h.count,
                                    np.zeros(h.count, np.float32), np.zeros(h.count), 1.0)
    with pytest.raises(ValueError, match="dots"):
        _core.lbfgs_compact_coefficients(np.zeros(1), sy, yy, h.head, h.count)
    with pytest.raises(ValueError, match="method"):
        h.direction(out, g, method="bfgs")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_minimize_compact_by_default_agrees_with_two_loop(dtype, monkeypatch):
    """The solver's direction is the compact form by default; the two-loop run reaches the same
    minimizer; the compact run has the same bits on 1 and 3 threads."""
    from fusedopt.benchmarks.lbfgs import ext_rosenbrock_x0

    assert History.method == "compact"
    calls = []
    real = History.direction

    def spy(self, out, grad, method=None, vec=lbfgs.history.CoreVec):
        calls.append(self.method if method is None else method)
        return real(self, out, grad, method, vec)

    monkeypatch.setattr(History, "direction", spy)
    x0 = ext_rosenbrock_x0(1000, dtype)
    tol = dict(gtol=1e-5) if dtype == np.float64 else dict(gtol=1e-3, ftol=1e-7)
    runs = []
    for nt in (1, 3):
        with fusedopt.num_threads(nt):
            runs.append(lbfgs.minimize(ext_rosenbrock_cast(dtype), x0, **tol))
    assert calls and set(calls) == {"compact"}
    assert runs[0].x.tobytes() == runs[1].x.tobytes() and runs[0].nit == runs[1].nit
    monkeypatch.setattr(History, "method", "two_loop")
    two = lbfgs.minimize(ext_rosenbrock_cast(dtype), x0, **tol)
    assert runs[0].success and two.success
    np.testing.assert_allclose(runs[0].x, np.ones(1000), atol=1e-3 if dtype == np.float64
                               else 2e-2)
    np.testing.assert_allclose(two.x, runs[0].x, atol=1e-3 if dtype == np.float64 else 2e-2)


def ext_rosenbrock_cast(dtype):
    from fusedopt.benchmarks.lbfgs import ext_rosenbrock

    def fun(x):
        f, g = ext_rosenbrock(x)
        return f, g.astype(dtype)
    return fun
