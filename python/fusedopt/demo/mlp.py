"""Experiment 3: eight optimizers training an MLP on scikit-learn's handwritten digits; the
MLP itself (init, loss and gradients, training loop) is shared with experiment 4.

Layer: tools (scikit-learn and threadpoolctl are imported only inside functions).
"""
from __future__ import annotations

import contextlib
import importlib.util
import math

import numpy as np

from .. import init, optim
from ..benchmarks.table import Table
from .figures import first_below, legend_outside

__all__ = ["TITLE", "NEEDS", "units", "run", "setup", "train", "table_row", "load_digits_split",
           "mlp_init", "mlp_loss_and_grads", "mlp_predict", "MLP_OPTIMIZERS", "TorchAdam"]

TITLE = "optimizers on an MLP (digits)"
NEEDS = "sklearn"


def units(cfg):
    """Progress units: one per optimizer, one more for torch.optim.Adam where torch is."""
    return len(MLP_OPTIMIZERS) + _has_torch()


def _has_torch():
    """Whether torch is installed (found without importing it)."""
    return importlib.util.find_spec("torch") is not None


class TorchAdam:
    """``torch.optim.Adam`` behind the demo's ``step(grads)``: the NumPy params are shared
    with torch tensors (``torch.from_numpy``), so torch updates them in place."""

    def __init__(self, params, lr):
        import torch  # noqa: PLC0415 -- optional

        self._torch = torch
        self.tensors = [torch.from_numpy(p) for p in params]
        self.opt = torch.optim.Adam(self.tensors, lr=lr)

    def step(self, grads):
        for t, g in zip(self.tensors, grads):
            t.grad = self._torch.from_numpy(np.ascontiguousarray(g, dtype=g.dtype))
        self.opt.step()


def load_digits_split(seed=0, dtype=np.float32):
    """scikit-learn's 8x8 digits (1797 images, shipped with it), scaled to [0, 1] and split
    80/20 into train and validation sets, stratified by class."""
    from sklearn.datasets import load_digits  # noqa: PLC0415 -- optional
    from sklearn.model_selection import train_test_split  # noqa: PLC0415 -- optional

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(dtype)
    return train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)


def mlp_init(rng, sizes=(64, 64, 32, 10), dtype=np.float32):
    """He-normal weights, zero biases: [W1, b1, W2, b2, W3, b3]."""
    params = []
    for m, n in zip(sizes[:-1], sizes[1:]):
        params += [init.he_normal(rng, (m, n), dtype=dtype), np.zeros(n, dtype)]
    return params


def mlp_loss_and_grads(params, X, y):
    """Mean softmax cross-entropy of the ReLU MLP and the gradients of every param."""
    n_layers = len(params) // 2
    acts, pre = [X], []
    for i in range(n_layers):
        W, b = params[2 * i], params[2 * i + 1]
        z = acts[-1] @ W + b
        pre.append(z)
        if i < n_layers - 1:
            acts.append(np.maximum(z, 0))
    z = pre[-1]
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    m = X.shape[0]
    loss = float(np.mean(lse - z[np.arange(m), y]))
    dz = np.exp(z - lse[:, None])
    dz[np.arange(m), y] -= 1
    dz /= m
    grads = [None] * len(params)
    for i in reversed(range(n_layers)):
        grads[2 * i] = acts[i].T @ dz
        grads[2 * i + 1] = dz.sum(axis=0)
        if i:
            dz = (dz @ params[2 * i].T) * (pre[i - 1] > 0)
    return loss, grads


def mlp_predict(params, X):
    a = X
    for i in range(len(params) // 2):
        a = a @ params[2 * i] + params[2 * i + 1]
        if i < len(params) // 2 - 1:
            a = np.maximum(a, 0)
    return a.argmax(axis=1)


def _blas_one_thread():
    """Matrices this small run fastest on one BLAS thread (threads only add overhead, and
    much more on a busy machine). threadpoolctl comes with scikit-learn."""
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 -- optional
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def train(cfg, data, make_opt, params0, order):
    """Train from copies of ``params0`` over the batches of ``order`` with the optimizer
    ``make_opt(params)``: ``(train losses, validation losses, validation accuracy, final
    params)``."""
    with _blas_one_thread():
        return _train_loop(cfg, data, make_opt, params0, order)


def _train_loop(cfg, data, make_opt, params0, order):
    Xtr, Xva, ytr, yva = data
    params = [p.copy() for p in params0]
    opt = make_opt(params)
    train_loss, val_loss = [], [mlp_loss_and_grads(params, Xva, yva)[0]]
    it = 0
    with np.errstate(all="ignore"):
        for idx in order:
            for s in range(0, len(idx), cfg.batch):
                b = idx[s:s + cfg.batch]
                loss, grads = mlp_loss_and_grads(params, Xtr[b], ytr[b])
                opt.step(grads)
                train_loss.append(loss)
                it += 1
                if it % cfg.eval_every == 0:
                    val_loss.append(mlp_loss_and_grads(params, Xva, yva)[0])
    acc = float(np.mean(mlp_predict(params, Xva) == yva))
    return np.array(train_loss), np.array(val_loss), acc, params


MLP_OPTIMIZERS = (
    ("SGD", 0.1, lambda p: optim.SGD(p, lr=0.1)),
    ("momentum", 0.05, lambda p: optim.SGD(p, lr=0.05, momentum=0.9)),
    ("Nesterov", 0.05, lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    ("Adagrad", 0.05, lambda p: optim.Adagrad(p, lr=0.05)),
    ("RMSprop", 1e-3, lambda p: optim.RMSprop(p, lr=1e-3)),
    ("Adam", 1e-3, lambda p: optim.Adam(p, lr=1e-3)),
    ("AdamW", 1e-3, lambda p: optim.AdamW(p, lr=1e-3, weight_decay=1e-2)),
    ("Adamax", 2e-3, lambda p: optim.Adamax(p, lr=2e-3)),
)


def setup(ctx):
    """The digits split, the initial params and the batch order of every epoch: made once per
    run and shared by experiments 3 and 4 (``ctx.shared``)."""
    if "mlp" not in ctx.shared:
        ctx.shared["mlp"] = _setup(ctx.cfg)
    return ctx.shared["mlp"]


def _setup(cfg):
    data = load_digits_split(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    params0 = mlp_init(rng)
    order = [rng.permutation(len(data[0])) for _ in range(cfg.epochs)]
    return data, params0, order


def table_row(tab, cfg, name, lr, res):
    tl, vl, acc, _ = res
    tab.add(name, lr, first_below(vl, cfg.threshold, cfg.eval_every), float(tl[-1]),
            float(vl[-1]), acc)


def _torch_adam(params):
    return TorchAdam(params, lr=1e-3)


@contextlib.contextmanager
def _torch_one_thread():
    """torch on one thread for the while (these tiny tensors run several times faster so on a
    busy machine), its setting restored after."""
    import torch  # noqa: PLC0415 -- optional

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


#: Line styles of the loss plots: curves that lie on each other (Adam, AdamW and torch's Adam)
#: stay visible, dashed and dotted over a wide pale band.
_STYLES = {"Adam": dict(lw=4.5, alpha=0.45), "AdamW": dict(ls="--", lw=1.3),
           "Adam (torch.optim)": dict(ls=":", lw=1.6, color="k")}


def run(ctx):
    cfg, figs, bar = ctx.cfg, ctx.figs, ctx.bar
    data, params0, order = setup(ctx)
    n_iter = sum(math.ceil(len(o) / cfg.batch) for o in order)
    runs = list(MLP_OPTIMIZERS)
    if _has_torch():
        runs.append(("Adam (torch.optim)", 1e-3, _torch_adam))
    curves = {}
    for name, lr, make in runs:
        with _torch_one_thread() if make is _torch_adam else contextlib.nullcontext():
            curves[name] = (lr, train(cfg, data, make, params0, order))
        bar.update()
    note = (f"Validation loss evaluated every {cfg.eval_every} iterations; momentum/Nesterov: "
            f"SGD with momentum 0.9; AdamW: weight decay 1e-2.")
    if "Adam (torch.optim)" in curves:
        dw = max(float(np.max(np.abs(a - b))) for a, b in
                 zip(curves["Adam"][1][3], curves["Adam (torch.optim)"][1][3]))
        note += (f" Adam (torch.optim): torch.optim.Adam, same lr, init and batches: after "
                 f"{n_iter} float32 steps max |w_fusedopt - w_torch| = {dw:.3g} (torch "
                 f"computes the step in another order, so rounding differs).")
    tab = Table(f"3. MLP 64-64-32-10 (ReLU, He init) on the digits: {len(data[0])} train / "
                f"{len(data[1])} validation, batch {cfg.batch}, {cfg.epochs} epochs = "
                f"{n_iter} iterations, same init and batches for all",
                ["optimizer", "lr", f"first iter val loss < {cfg.threshold:g}",
                 "final train loss", "final val loss", "val accuracy"], note=note)
    for name, (lr, res) in curves.items():
        table_row(tab, cfg, name, lr, res)
    if figs.enabled:
        fig, axes = figs.new(1, 2, (5.2, 4.2))
        for name, (_, (tl, vl, _, _)) in curves.items():
            k = max(1, len(tl) // 100)
            smooth = np.convolve(tl, np.ones(k) / k, mode="valid")
            style = _STYLES.get(name, {})
            axes[0, 0].semilogy(np.arange(len(smooth)) + k, smooth, label=name, **style)
            axes[0, 1].semilogy(np.arange(len(vl)) * cfg.eval_every, vl, label=name, **style)
        axes[0, 0].set_title(f"training loss (moving average of {k} batches)")
        axes[0, 0].set_ylabel("mean cross-entropy of the batch")
        axes[0, 1].set_title("validation loss")
        axes[0, 1].set_ylabel("mean cross-entropy, validation set")
        axes[0, 1].axhline(cfg.threshold, color="0.3", lw=0.8, ls=(0, (6, 3)),
                           label=f"threshold {cfg.threshold:g} (table column)")
        for ax in axes[0]:
            ax.set_xlabel("iteration")
        legend_outside(axes[0, 1], title="Adam (wide band), AdamW\n(dashed) and torch's Adam\n"
                       "(dotted) lie on each other", title_fontsize=7)
        figs.save(fig, "03_digits_mlp.png")
    return [tab]
