"""The demo: its pieces (MLP gradients, EWA) and a quick run of all six experiments."""
import math
import os
import sys

import numpy as np
import pytest

from fusedopt import demo


def test_mlp_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    params = demo.mlp_init(rng, sizes=(5, 7, 6, 3), dtype=np.float64)
    for i in range(1, len(params), 2):
        params[i] += 0.1 * rng.standard_normal(params[i].shape)    # nonzero biases
    X = rng.standard_normal((9, 5))
    y = rng.integers(0, 3, 9)
    loss, grads = demo.mlp_loss_and_grads(params, X, y)
    assert [g.shape for g in grads] == [p.shape for p in params]
    h = 1e-6
    for p, g in zip(params, grads):
        fd = np.empty_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            lp = demo.mlp_loss_and_grads(params, X, y)[0]
            p[idx] = old - h
            lm = demo.mlp_loss_and_grads(params, X, y)[0]
            p[idx] = old
            fd[idx] = (lp - lm) / (2 * h)
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)
    # the loss is the mean cross-entropy of the softmax
    z = np.maximum(np.maximum(X @ params[0] + params[1], 0) @ params[2] + params[3], 0) \
        @ params[4] + params[5]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(9), y])), rel=1e-12)
    np.testing.assert_array_equal(demo.mlp_predict(params, X), z.argmax(1))


def test_ewa_and_its_bias_correction():
    c = np.full(30, 7.0)
    for beta in (0.9, 0.98):
        v = demo.ewa(c, beta)
        t = np.arange(1, 31)
        np.testing.assert_allclose(v, 7.0 * (1 - beta ** t), rtol=1e-13)
        np.testing.assert_allclose(demo.ewa(c, beta, bias_correction=True), 7.0, rtol=1e-13)
    x = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(demo.ewa(x, 0.5), [0.5, 1.25, 2.625])


def test_quadratic_problem_of_item_1():
    f, R, lam = demo.quadratic_problem()
    np.testing.assert_allclose(np.linalg.eigvalsh(f.Q), [1.0, 6.0], rtol=1e-14)
    np.testing.assert_allclose(R @ R.T, np.eye(2), atol=1e-15)
    np.testing.assert_allclose(f.hess(np.zeros(2)), f.Q)             # f = 1/2 x^T Q x


def test_table_formatting():
    t = demo.Table("T", ["name", "value"], note="n")
    t.add("a", 1.23456789)
    t.add("bb", float("nan"))
    t.add("c", None)
    text = t.format()
    assert text.splitlines()[0] == "T" and "1.235" in text and "nan" in text and "-" in text
    with pytest.raises(ValueError, match="cells"):
        t.add("x")


def _renderer(fig):
    """An Agg renderer of the figure, drawn (layout done)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _axes_facts(fig):
    """For every axes of a drawn figure that shows data: its labels and whether its legend
    (if any) overlaps the axes' area, and every line's label."""
    renderer = _renderer(fig)
    facts = []
    for ax in fig.axes:
        leg = ax.get_legend()
        overlap = None
        if leg is not None:
            a, b = ax.get_window_extent(renderer), leg.get_window_extent(renderer)
            w = min(a.x1, b.x1) - max(a.x0, b.x0)
            h = min(a.y1, b.y1) - max(a.y0, b.y0)
            overlap = max(w, 0) * max(h, 0) / (b.width * b.height)
        title = ax.title.get_window_extent(renderer)
        fits = bool(0 <= title.x0 and title.x1 <= fig.bbox.width)   # not cut off at an edge
        facts.append({"xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                      "legend_overlap": overlap, "title_fits": fits,
                      "labels": [ln.get_label() for ln in ax.get_lines()]})
    return facts


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    pytest.importorskip("scipy")
    from fusedopt.demo.figures import Figures

    out = tmp_path_factory.mktemp("demo_out")
    facts = {}
    save = Figures.save

    def recording_save(self, fig, name):
        save(self, fig, name)
        facts[name] = _axes_facts(fig)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figures, "save", recording_save)
        res = demo.run(str(out), quick=True, progress=False, stream=open(os.devnull, "w"))
    res["axes"] = facts
    return out, res


EXPECTED_FIGURES = {
    "01_quadratic_trajectories.png", "01_quadratic_eigencomponents.png", "02_rosenbrock.png",
    "02_rastrigin.png", "02_ackley.png", "03_digits_mlp.png", "04_schedules.png", "05_ewa.png",
    "06_multistart_rastrigin.png", "07_natural_gradient.png", "08_saddle.png",
    "09_state_dtypes.png", "09_stochastic_rounding.png",
}


def _has_pillow():
    try:
        import PIL  # noqa: F401
    except ImportError:
        return False
    return True


def test_quick_demo_writes_its_figures(quick_run):
    out, res = quick_run
    names = {os.path.basename(p) for p in res["figures"]}
    assert names == EXPECTED_FIGURES | ({"08_saddle.gif"} if _has_pillow() else set())
    for name in EXPECTED_FIGURES:
        path = out / name
        data = path.read_bytes()
        assert len(data) > 1000, name
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
    text = (out / "tables.txt").read_text()
    for k in range(1, 10):
        for t in res["tables"][k]:
            assert t.format() in text


def test_quick_demo_gif_is_animated():
    if not _has_pillow():
        pytest.skip("Pillow is not installed: no GIF")
    from PIL import Image

    pytest.importorskip("matplotlib")
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        res = demo.run(out, quick=True, only=[8], progress=False,
                       stream=open(os.devnull, "w"))
        path = os.path.join(out, "08_saddle.gif")
        assert path in res["figures"]
        with Image.open(path) as im:
            assert im.format == "GIF" and im.n_frames >= 5


def test_every_figure_has_axis_labels_and_legends_off_the_data(quick_run):
    _, res = quick_run
    assert set(res["axes"]) == EXPECTED_FIGURES
    for name, axes in res["axes"].items():
        for i, ax in enumerate(axes):
            assert ax["xlabel"] and ax["ylabel"], (name, i, ax)
            assert ax["title_fits"], (name, i)
            assert ax["legend_overlap"] in (None, 0.0), (name, i, ax["legend_overlap"])
    legends = sum(ax["legend_overlap"] is not None for axes in res["axes"].values()
                  for ax in axes)
    assert legends >= len(EXPECTED_FIGURES)          # the check above looked at legends
    # the MLP plot explains its threshold line; with torch, torch.optim.Adam is drawn too
    labels = res["axes"]["03_digits_mlp.png"][1]["labels"]
    assert any(lb.startswith("threshold 0.15") for lb in labels)
    assert ("Adam (torch.optim)" in labels) == _has_torch()
    # Rosenbrock from (3, 0) and (5, 0): GD diverges and says so
    rosen = res["axes"]["02_rosenbrock.png"]
    gd = [next(lb for lb in ax["labels"] if lb.startswith("GD")) for ax in rosen]
    assert "diverged" not in gd[0] and all("(diverged at step" in lb for lb in gd[1:])


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_trajectory_stops_at_divergence_and_marks_it():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from fusedopt.demo.figures import legend_outside, trajectory

    ax = Figure(layout="constrained").subplots()
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    path = np.array([[0.0, 0.0], [0.5, 0.5], [0.9, -0.2], [3.0, 0.0], [0.5, 0.5],
                     [40.0, 1e3], [np.nan, np.inf], [0.0, 0.0]])
    assert trajectory(ax, path, "GD") == 6
    line, mark = ax.get_lines()
    assert line.get_label() == "GD (diverged at step 6)"
    # up to the last point inside the axes before the non-finite one (step 4), not beyond
    np.testing.assert_array_equal(line.get_xydata(), path[:5])
    np.testing.assert_array_equal(mark.get_xydata(), [[0.5, 0.5]])
    assert mark.get_marker() == "x" and mark.get_color() == line.get_color()
    assert trajectory(ax, path[:3], "fine") is None
    assert ax.get_lines()[-1].get_label() == "fine" and len(ax.get_lines()) == 3
    # a legend beside the axes does not cover them
    leg = legend_outside(ax)
    r = _renderer(ax.figure)
    assert leg.get_window_extent(r).x0 >= ax.get_window_extent(r).x1


def test_quick_demo_tables(quick_run):
    _, res = quick_run
    tables = res["tables"]
    assert sorted(tables) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert res["progress"][0] == res["progress"][1]            # the bar reached its total
    # 1: the stable/unstable learning rates and the one-step inverse preconditioner
    t1 = tables[1][0]
    out = dict(zip(t1.column("lr"), t1.column("outcome")))
    assert out[0.34] == "diverges" and out[2 / 7] == "converged (f < 1e-6)"
    rows = {r[0]: r for r in t1.rows}
    assert rows["GD, P = Q^-1"][5] <= 1e-20 and "after 1 step" in rows["GD, P = Q^-1"][7]
    # 2: every function, start and method has a row; Newton solves Rosenbrock from (0, 0)
    t2 = tables[2][0]
    assert set(t2.column("function")) == {"rosenbrock", "rastrigin", "ackley"}
    assert len(t2.rows) == 6 * 8                   # 6 starts x (GD + 5 Adam + Newton + L-BFGS)
    newton_rows = [r for r in t2.rows if r[0] == "rosenbrock" and r[2] == "Newton"]
    assert len(newton_rows) == 3 and all(r[4] < 1e-20 for r in newton_rows)
    # 3: eight optimizers, all of which learned something in two epochs (10 classes: chance
    # accuracy is 0.1)
    t3 = tables[3][0]
    names = [n for n, _, _ in demo.MLP_OPTIMIZERS]
    assert t3.column("optimizer") == names + (["Adam (torch.optim)"] if _has_torch() else [])
    assert all(a > 0.5 for a in t3.column("val accuracy"))
    if _has_torch():                 # torch's Adam from the same start: the same curve
        loss = dict(zip(t3.column("optimizer"), t3.column("final val loss")))
        assert loss["Adam (torch.optim)"] == pytest.approx(loss["Adam"], rel=1e-3)
        assert "max |w_fusedopt - w_torch|" in t3.note
    # 4: Ng's inverse-time decay example
    t4a = tables[4][0]
    np.testing.assert_allclose(t4a.column("lr"), [0.1, 0.2 / 3, 0.05, 0.04])
    assert len(tables[4][2].rows) == len(demo.epoch_schedules(2))
    # 5: without bias correction the first value is (1 - beta) of the data
    t5 = tables[5][0]
    first = t5.column("v day 1")
    assert first[0] == pytest.approx(0.1 * first[1]) and first[2] == pytest.approx(
        0.02 * first[3])
    # 6: Rastrigin and Ackley in 2 and 10 dimensions
    t6 = tables[6][0]
    assert list(zip(t6.column("function"), t6.column("dim"))) == [
        ("rastrigin", 2), ("rastrigin", 10), ("ackley", 2), ("ackley", 10)]
    # 7: natural gradient reaches the tolerance in a few steps, GD not in the quick 300;
    # Cholesky and CG take the same steps on the logistic Fisher
    t7 = tables[7][0]
    rows = {(r[0], r[1], r[2]): r for r in t7.rows}
    to_tol = t7.headers.index("iters to f-f*<1e-08")
    for problem in ("Rosenbrock", "logistic regression"):
        assert rows[(problem, "GD", "-")][to_tol] is None
        ng = [r for r in t7.rows if r[0] == problem and r[1] == "NG"]
        assert len(ng) == 3 and all(r[to_tol] is not None and r[to_tol] <= 40 for r in ng)
    chol = rows[("logistic regression", "NG", "Fisher (Cholesky)")]
    cg = rows[("logistic regression", "NG", "Fisher (CG on F v)")]
    assert chol[to_tol] == cg[to_tol] and chol[-1] == 0 and cg[-1] > 0
    # 8: every optimizer escapes both saddles; the adaptive ones (but Adagrad) before GD
    t8 = tables[8][0]
    steps = {(r[0], r[3]): r[4] for r in t8.rows}
    assert len(steps) == 12 and all(isinstance(v, int) for v in steps.values())
    for f in ("x^2 - y^2", "monkey saddle x^3 - 3xy^2"):
        for name in ("momentum 0.9", "Nesterov 0.9", "RMSprop", "Adam"):
            assert steps[(f, name)] < steps[(f, "GD")], (f, name)
    # on x^2 - y^2 GD's |y| grows by (1 + 2 lr) per step: escape after ln(1000)/ln(1.02)
    assert steps[("x^2 - y^2", "GD")] == math.ceil(math.log(1e3) / math.log(1.02))


def test_main_cli(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    # without tqdm the plain progress bar is drawn on stderr
    monkeypatch.setitem(sys.modules, "tqdm", None)
    assert demo.main(["--quick", "--only", "1,5", "--out", str(tmp_path)]) == 0
    cap = capsys.readouterr()
    assert "1. Gradient descent on f = 1/2 x^T Q x" in cap.out
    assert "5. Exponentially weighted averages" in cap.out
    assert "2. First-order" not in cap.out
    assert "[" in cap.err and "#" in cap.err and "8/8" in cap.err
    assert sorted(os.listdir(tmp_path)) == ["01_quadratic_eigencomponents.png",
                                            "01_quadratic_trajectories.png", "05_ewa.png",
                                            "tables.txt"]
    with pytest.raises(SystemExit):
        demo.main(["--only", str(max(demo.EXPERIMENTS) + 1)])
    with pytest.raises(SystemExit):
        demo.main(["--only", "one"])


@pytest.mark.parametrize("bar", ["plain", "tqdm"])
def test_progress_bar_does_not_interleave_with_the_tables(tmp_path, monkeypatch, bar):
    # stdout and stderr into one terminal-like stream: what a reader sees on each line is the
    # text after its last carriage return
    import io

    if bar == "plain":
        monkeypatch.setitem(sys.modules, "tqdm", None)
    else:
        pytest.importorskip("tqdm")
    screen = io.StringIO()
    monkeypatch.setattr(sys, "stderr", screen)
    res = demo.run(str(tmp_path), quick=True, only=[1, 5], stream=screen)
    visible = [line.rsplit("\r", 1)[-1] for line in screen.getvalue().split("\n")]
    for k in (1, 5):
        for t in res["tables"][k]:
            lines = t.format().split("\n")
            i = visible.index(lines[0])                  # the title is a line of its own...
            assert visible[i:i + len(lines)] == lines    # ...and so is every line after it
    assert "#" in screen.getvalue() or "%" in screen.getvalue()   # a bar was drawn


def test_runs_without_matplotlib_and_skips_what_lacks_its_package(tmp_path, monkeypatch,
                                                                   capsys):
    # matplotlib absent: tables only; scikit-learn absent: items 3-4 are skipped, not crashed
    for name in ("matplotlib", "matplotlib.figure", "sklearn", "sklearn.datasets"):
        monkeypatch.setitem(sys.modules, name, None)
    res = demo.run(str(tmp_path), quick=True, only=[3, 5], progress=False)
    cap = capsys.readouterr()
    assert res["skipped"] == {3: "scikit-learn"} and sorted(res["tables"]) == [5]
    assert res["figures"] == [] and os.listdir(tmp_path) == ["tables.txt"]
    assert "matplotlib is not installed" in cap.err and "skipping 3." in cap.err
    assert "5. Exponentially weighted averages" in cap.out


def test_quick_demo_low_bit_state_and_stochastic_rounding(quick_run):
    """Item 9, quick: 8-bit and bfloat16 state reach float32 state's validation accuracy within
    0.5 points (the MLP of item 3 and, with torch, a torch MLP); with bfloat16 params and no
    master weights, rounding to nearest loses most updates (most weights never move, the loss
    stays behind float32's) where stochastic rounding follows the float32 run."""
    _, res = quick_run
    t9a, t9b = res["tables"][9]
    models = ["digits MLP (fusedopt.optim.Adam)"] + \
        (["torch MLP (fusedopt.torch.AdamW)"] if _has_torch() else [])
    rows = {(r[0], r[1]): dict(zip(t9a.headers, r)) for r in t9a.rows}
    assert sorted(rows) == sorted((m, sd) for m in models
                                  for sd in ("float32", "bfloat16", "uint8"))
    for (model, sd), r in rows.items():
        base = rows[(model, "float32")]["val accuracy"]
        assert base > 0.5, model                      # it learned (chance is 0.1)
        assert r["mean val accuracy of 1 inits"] == r["val accuracy"]     # quick: one init
        assert r["gap to float32 (points)"] == pytest.approx(100 * (r["val accuracy"] - base))
        assert r["gap to float32 (points)"] >= -0.5, (model, sd, r)
    per_param = {sd: rows[(models[-1], sd)]["state bytes / param"]
                 for sd in ("float32", "bfloat16", "uint8")}
    assert per_param["uint8"] < per_param["bfloat16"] < per_param["float32"] == 8
    sr = {r[0]: dict(zip(t9b.headers, r)) for r in t9b.rows}
    rne, sto = sr["bfloat16, round to nearest"], sr["bfloat16, stochastic rounding"]
    f32 = sr["float32 params"]["final train loss"]
    assert rne["weights that moved"] < 0.5 < sto["weights that moved"]
    behind = rne["final train loss"] - f32
    assert behind > 0.05 and abs(sto["final train loss"] - f32) < behind / 4
