"""Experiment 9: fewer bytes of optimizer state (8-bit blockwise and bfloat16) and stochastic
rounding of bfloat16 params.

Layer: tools (scikit-learn, torch and ml_dtypes are imported only inside functions).

Three runs from item 3's digits split, batches and epochs:

* the digits MLP of item 3 (``fusedopt.optim.Adam``, lr 1e-3) with ``state_dtype`` float32,
  bfloat16 and uint8 (Dettmers' blockwise 8-bit state; tensors under ``quant.MIN_SIZE``
  elements keep float32 state, so only its first weight matrix, 64 x 64, is 8-bit);
* a small torch MLP (64-128-64-10, ``fusedopt.torch.AdamW``), where torch is installed, with
  the same three state dtypes (its two larger weight matrices 8-bit);
* the digits MLP with bfloat16 params and bfloat16 gradients and no master weights, stepped
  by plain SGD whose updates mostly fall below half a bfloat16 unit in the last place: rounded
  to nearest even such an update is lost (the run stalls), rounded stochastically it is kept
  on average; float32 params and bfloat16 params with float32 master weights for reference.

The first two from ``cfg.inits`` initializations (3; 1 with ``--quick``), the same for every
state dtype: one validation image is 0.28 points of accuracy, so a gap of one or two images
between two single runs is noise; the mean over the inits is compared.

Tables: accuracy, losses and state bytes per state dtype (with the gap of the mean accuracy to
float32 state's, in points); the bfloat16 runs with the share of weights that ever moved. Figures:
``09_state_dtypes.png`` (loss curves per state dtype) and ``09_stochastic_rounding.png``.
"""
from __future__ import annotations

import importlib.util
import math

import numpy as np

from .. import optim, quant
from ..benchmarks.table import Table
from . import mlp
from .figures import legend_outside

__all__ = ["TITLE", "NEEDS", "units", "run", "STATE_DTYPES", "SR_RUNS", "SR_LR",
           "state_nbytes", "train_torch", "Bf16Params"]

TITLE = "8-bit and bfloat16 optimizer state, stochastic rounding"
NEEDS = "sklearn"

STATE_DTYPES = ("float32", "bfloat16", "uint8")
#: The learning rate of the stochastic-rounding runs (plain SGD): most updates ``lr * g`` of
#: the weights are below half a bfloat16 ulp of the weight.
SR_LR = 0.01
#: The runs of the stochastic-rounding part: (label, param dtype, optimizer options).
SR_RUNS = (
    ("float32 params", "float32", {}),
    ("bfloat16, round to nearest", "bfloat16", {}),
    ("bfloat16, stochastic rounding", "bfloat16", {"stochastic_rounding": True}),
    ("bfloat16 + float32 master", "bfloat16", {"master_weights": True}),
)


def _has_torch():
    return importlib.util.find_spec("torch") is not None


def units(cfg):
    """Progress units: one per training run."""
    return len(STATE_DTYPES) * (1 + _has_torch()) * cfg.inits + len(SR_RUNS)


def state_nbytes(states) -> int:
    """The bytes of a list of state arrays and ``quant.QuantizedState``s (codes and absmax)."""
    return int(sum(a.nbytes for a in states))


def _numpy_state_bytes(params0, state_dtype):
    opt = optim.Adam([p.copy() for p in params0], state_dtype=state_dtype)
    return state_nbytes([a for v in opt.state.values() for a in v])


def train_torch(cfg, data, order, state_dtype, seed=0):
    """The torch MLP 64-128-64-10 (ReLU, torch's default init from ``seed``) trained with
    ``fusedopt.torch.AdamW(lr=1e-3, state_dtype=...)`` over the batches of ``order``:
    ``(train losses, validation losses, validation accuracy, state bytes)``."""
    import torch  # noqa: PLC0415 -- optional

    import fusedopt.torch as fot  # noqa: PLC0415 -- imports torch

    Xtr, Xva, ytr, yva = (torch.from_numpy(np.asarray(a)) for a in data)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 10))
    opt = fot.AdamW(model.parameters(), lr=1e-3, state_dtype=state_dtype, seed=seed)
    loss_fn = torch.nn.functional.cross_entropy

    def val_loss():
        with torch.no_grad():
            return float(loss_fn(model(Xva), yva))

    train_loss, vl, it = [], [val_loss()], 0
    for idx in order:
        for s in range(0, len(idx), cfg.batch):
            b = torch.from_numpy(idx[s:s + cfg.batch])
            opt.zero_grad()
            loss = loss_fn(model(Xtr[b]), ytr[b])
            loss.backward()
            opt.step()
            train_loss.append(loss.item())
            it += 1
            if it % cfg.eval_every == 0:
                vl.append(val_loss())
    with torch.no_grad():
        acc = float((model(Xva).argmax(1) == yva).double().mean())
    nbytes = sum(t.nbytes for st in opt.state.values() for k, t in st.items() if k != "step")
    return np.array(train_loss), np.array(vl), acc, int(nbytes)


class Bf16Params:
    """The demo's ``step(grads)`` for bfloat16 params: the MLP's loss is evaluated on float32
    arrays (``params32``, given by ``mlp.train``) that always hold the bfloat16 params' values
    exactly; the gradients are rounded to bfloat16 and the optimizer ``make(bf16 params)``
    steps the bfloat16 params, which are then widened back into ``params32``."""

    def __init__(self, params32, make):
        import ml_dtypes  # noqa: PLC0415 -- optional

        self.bf16 = ml_dtypes.bfloat16
        self.params32 = params32
        self.params = [p.astype(self.bf16) for p in params32]
        self.opt = make(self.params)

    def step(self, grads):
        self.opt.step([g.astype(self.bf16) for g in grads])
        for a, b in zip(self.params32, self.params):
            a[...] = b


def _sr_make(dtype, options, seed):
    def make(params):
        if dtype == "float32":
            return optim.SGD(params, lr=SR_LR)
        return Bf16Params(params, lambda p: optim.SGD(p, lr=SR_LR, seed=seed, **options))
    return make


def _moved(params0, params):
    """The share of weight elements (biases left out) that differ from their start."""
    pairs = list(zip(params0[::2], params[::2]))
    return sum(int(np.count_nonzero(a != b)) for a, b in pairs) / sum(a.size for a, _ in pairs)


def _smooth(x, k):
    return np.convolve(x, np.ones(k) / k, mode="valid")


def run(ctx):
    cfg, figs, bar = ctx.cfg, ctx.figs, ctx.bar
    data, params0, order = mlp.setup(ctx)
    n_iter = sum(math.ceil(len(o) / cfg.batch) for o in order)
    # 1. state dtypes: item 3's MLP (NumPy) and a torch MLP, from cfg.inits initializations
    # (the first is item 3's); the curves of the first, the accuracy averaged over all
    runs, accs = {}, {}
    numpy_model, torch_model = "digits MLP (fusedopt.optim.Adam)", \
        "torch MLP (fusedopt.torch.AdamW)"
    for k in range(cfg.inits):
        start = params0 if k == 0 else mlp.mlp_init(np.random.default_rng(cfg.seed + 1000 * k))
        for sd in STATE_DTYPES:
            res = mlp.train(cfg, data, lambda p, sd=sd: optim.Adam(p, lr=1e-3, state_dtype=sd),
                            start, order)
            runs.setdefault((numpy_model, sd), res[:3] + (
                _numpy_state_bytes(params0, sd), sum(p.size for p in params0)))
            accs.setdefault((numpy_model, sd), []).append(res[2])
            bar.update()
        if _has_torch():
            for sd in STATE_DTYPES:
                with mlp._torch_one_thread():   # tiny tensors: faster so on a busy machine
                    res = train_torch(cfg, data, order, sd, seed=cfg.seed + k)
                runs.setdefault((torch_model, sd), res + (
                    64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10,))
                accs.setdefault((torch_model, sd), []).append(res[2])
                bar.update()
    tab = Table(f"9a. Optimizer state in float32, bfloat16 and 8 bits: the digits, "
                f"{len(data[0])} train / {len(data[1])} validation, batch {cfg.batch}, "
                f"{cfg.epochs} epochs = {n_iter} iterations, same init and batches per model",
                ["model", "state dtype", "state bytes / param", "final train loss",
                 "final val loss", "val accuracy",
                 f"mean val accuracy of {cfg.inits} inits", "gap to float32 (points)"],
                note=f"8-bit state: tensors of >= {quant.MIN_SIZE} elements (blocks of "
                     f"{quant.BLOCK}, a float32 absmax each); smaller ones keep float32 "
                     "state. Losses and 'val accuracy': the first init (item 3's for the "
                     "digits MLP); train loss the mean of the last 20 batches. The gap: of the "
                     f"mean accuracy (one validation image is {100 / len(data[1]):.2f} "
                     "points).")
    for (model, sd), (tl, vl, acc, nbytes, nparams) in runs.items():
        mean = float(np.mean(accs[(model, sd)]))
        base = float(np.mean(accs[(model, "float32")]))
        tab.add(model, sd, nbytes / nparams, float(np.mean(tl[-20:])), float(vl[-1]), acc,
                mean, 100 * (mean - base))
    # 2. stochastic rounding of bfloat16 params
    start = [p.astype(_bf16()).astype(np.float32) for p in params0]  # bf16-representable
    sr = {}
    for label, dtype, options in SR_RUNS:
        tl, vl, acc, params = mlp.train(cfg, data, _sr_make(dtype, options, cfg.seed), start,
                                        order)
        sr[label] = (tl, vl, acc, _moved(start, params))
        bar.update()
    tab2 = Table(f"9b. bfloat16 params and gradients, no master weights: SGD lr {SR_LR:g} on "
                 f"the digits MLP, {n_iter} iterations",
                 ["params", "final train loss", "final val loss", "val accuracy",
                  "weights that moved"],
                 note="Most SGD updates of the weights are below half a bfloat16 ulp: rounded "
                      "to nearest even they are lost; stochastic rounding (a counter-based hash "
                      "of seed, step and element) keeps them on average.")
    for label, (tl, vl, acc, moved) in sr.items():
        tab2.add(label, float(np.mean(tl[-20:])), float(vl[-1]), acc, moved)
    if figs.enabled:
        _figures(figs, cfg, runs, sr)
    return [tab, tab2]


def _bf16():
    import ml_dtypes  # noqa: PLC0415 -- optional

    return ml_dtypes.bfloat16


_STYLE = {"float32": dict(lw=4.0, alpha=0.4), "bfloat16": dict(ls="--", lw=1.3),
          "uint8": dict(ls=":", lw=1.6, color="k")}


_SR_STYLE = {"float32 params": dict(lw=4.5, alpha=0.4),
             "bfloat16, stochastic rounding": dict(ls="--", lw=1.3),
             "bfloat16 + float32 master": dict(ls=":", lw=1.6, color="k")}


def _figures(figs, cfg, runs, sr):
    models = list(dict.fromkeys(m for m, _ in runs))
    fig, axes = figs.new(1, len(models), (5.0, 4.0))
    for ax, model in zip(axes[0], models):
        for (m, sd), (tl, vl, *_rest) in runs.items():
            if m == model:
                ax.semilogy(np.arange(len(vl)) * cfg.eval_every, vl, label=f"{sd} state",
                            **_STYLE[sd])
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_ylabel("validation loss (cross-entropy)")
    legend_outside(axes[0, -1], title="state dtype (curves lie\non each other)",
                   title_fontsize=7)
    figs.save(fig, "09_state_dtypes.png")
    fig, axes = figs.new(1, 1, (6.4, 4.2))
    ax = axes[0, 0]
    for label, (tl, *_rest) in sr.items():
        k = max(1, len(tl) // 50)
        s = _smooth(tl, k)
        ax.semilogy(np.arange(len(s)) + k, s, label=label, **_SR_STYLE.get(label, {}))
    ax.set_title(f"bfloat16 params without master weights, SGD lr {SR_LR:g}", fontsize=9)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"training loss (moving average of {k} batches)")
    legend_outside(ax, title="float32 (wide band), stochastic\nrounding (dashed) and master\n"
                   "weights (dotted) lie on each other", title_fontsize=7)
    figs.save(fig, "09_stochastic_rounding.png")
