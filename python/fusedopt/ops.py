"""Fused in-place update kernels over lists of arrays.

Layer: kernels (the kernel-facing functions). Each one checks its hyperparameters (``fusedopt._scalars``),
builds the rule's scalar record once, and hands it whole to the backend: the C++/OpenMP kernels
of ``fusedopt._core`` for NumPy arrays, the CUDA kernels of ``fusedopt._cuda`` for CuPy arrays
(compiled on first use). A mix of NumPy and CuPy arrays raises TypeError.

Each function updates every tensor of a model in one call: one pass over memory, one parallel
region over the total element count, the GIL released.

Notation
--------
The equations use the names of the rule headers (``csrc/include/fusedopt/rules/``) and of
``fusedopt.reference``: ``p`` a param, ``g`` its grad, ``t`` the step, ``wd`` the weight decay,
``b1, b2`` the betas; the states are named as the optimizers' state keys (``exp_avg``,
``exp_avg_sq``, ``max_exp_avg_sq``, ``momentum_buffer``, ``sum``, ``square_avg``, ``grad_avg``,
``exp_inf``); every update first forms ``g <- (maximize ? -g : g) + wd * p`` (the L2 term only
when ``wd != 0``; Adam's decoupled form multiplies ``p`` by ``1 - lr * wd`` instead).

Shared arguments
----------------
params : list of arrays
    float32, float64, float16 or bfloat16 (``ml_dtypes.bfloat16``), C-contiguous, writeable,
    aligned; updated in place.
grads : list of arrays
    One per param, same shape and dtype. Read only.
state lists (exp_avgs, momentum_buffers, ...) : list of arrays
    One per param, same shape; the param's dtype, float32 for float16/bfloat16 params; updated
    in place. Allocate them with zeros (or ``initial_accumulator_value`` for Adagrad) and keep
    them between steps.
step : int
    The 1-based number of the step being taken (bias corrections, lr decay, first momentum step).
maximize : bool, default False
    Ascend the objective instead of descending.
grad_scale, found_inf : float32 arrays of one element, optional (both or neither)
    AMP's loss scaling, NumPy and CuPy alike (on the device for CuPy, without a host sync): when
    ``found_inf != 0`` the step changes nothing; otherwise the rule sees ``g / grad_scale`` in
    the same pass (the scale cast once to the array dtype). Zero ``found_inf``, call
    :func:`found_inf_` on the scaled grads, then step.
master_params : list of float32 arrays, optional
    16-bit params (NumPy and CuPy alike): with float16/bfloat16 params and grads, the states are
    float32 and the math is float32. Without master_params each param is widened (exactly),
    updated and rounded back to its dtype (to nearest even); with them the rule updates these
    float32 copies of the params instead, and the params receive the result rounded, in the
    same pass. Only for float16/bfloat16 params (TypeError otherwise).

Compact state and stochastic rounding (issue 10)
------------------------------------------------
Where the math type is float32 (float32, float16 and bfloat16 params), each state tensor may be
held compactly instead of as a float32 array: a ``ml_dtypes.bfloat16`` array (widened exactly,
stored rounded to nearest even) or a :class:`fusedopt.quant.QuantizedState` (8-bit blockwise:
uint8 codes and one float32 absmax per 256 elements, dequantized, updated in float32 and
requantized in the same pass; see :mod:`fusedopt.quant`). Signed 8-bit state for first moments
and momentum (``exp_avg``, ``momentum_buffer``, ``grad_avg``), unsigned for the others. Kinds
may differ from tensor to tensor and list to list. NumPy and CuPy alike: with CuPy params the
bfloat16 states are CuPy arrays and a QuantizedState holds CuPy ``codes`` and ``absmax`` on the
params' device (the same bits as the CPU kernels and the reference).
stochastic_rounding : bool, default False
    bfloat16 params only (ValueError otherwise): the param receives the float32 result rounded
    stochastically (``quant.stochastic_round_bf16``), with random bits from a counter-based hash
    of ``seed``, ``step``, the tensor's index in the list and the element's index: the same bits
    for any thread count and instruction set.
seed : int, default 0
    In [0, 2**64); keep it in the optimizer's state and pass the same one every step.

Non-finite gradients
--------------------
A NaN or infinite gradient poisons the params and the states permanently (every later step
keeps the NaN). Nothing checks for it by default, since a check is a second pass over memory;
to skip such a step, pass ``grad_scale``/``found_inf`` after :func:`found_inf_` (use a
``grad_scale`` of 1 without loss scaling).

Errors
------
Every argument is checked before any array is modified: a bad dtype, shape, list length, a
read-only or non-contiguous array, two written arguments sharing memory, or a hyperparameter out
of range raise TypeError/ValueError naming the argument, and nothing is changed.

The per-step scalars come from ``fusedopt._scalars`` (float64, cast once to the array dtype), the
same as in ``fusedopt.reference``; with FMA contraction off, results equal the reference bit for
bit.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import _checks, _core, _scalars
from . import quant

__all__ = ["num_threads", "sgd_", "adagrad_", "rmsprop_", "adam_", "adamax_", "global_norm",
           "clip_by_global_norm_", "found_inf_", "backend_of", "lbfgs_direction_"]

Arrays = Sequence[Any]  # a list of NumPy or CuPy arrays

# The tables of the 8-bit format, defined once in fusedopt.quant, into the kernels.
_core.set_quant_tables(quant.dynamic_map(False), quant.thresholds(False),
                       quant.dynamic_map(True), quant.thresholds(True),
                       quant.encode_table(False), quant.encode_table(True),
                       quantized_type=quant.QuantizedState)


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the CPU kernels with ``n`` threads inside a ``with`` block (the calling thread and
    ``n - 1`` workers of the pool); the previous count is restored on the way out.

    >>> from fusedopt import ops
    >>> with ops.num_threads(1):
    ...     pass
    """
    old = _core.get_num_threads()
    _core.set_num_threads(n)
    try:
        yield
    finally:
        _core.set_num_threads(old)


def mark_torch_caller(on: bool) -> bool:
    """Marks the calling thread as stepping torch tensors (``fusedopt.torch``'s steps; thread-
    local): under ``fusedopt.set_threading("auto")``, the default, its CPU kernel calls then run
    on the OpenMP runtime's threads (torch's) instead of fusedopt's pool. Returns the previous
    mark. No result depends on it."""
    return _core._torch_caller(bool(on))


def backend_of(params: Arrays):
    """The kernel module for a list of arrays: ``_core`` for NumPy, ``_cuda`` for CuPy.

    Only the first array picks; every other array is then checked to be of the same kind by the
    kernel module itself, which raises TypeError naming the first one that is not.

    Examples
    --------
    >>> import numpy as np
    >>> from fusedopt import ops
    >>> ops.backend_of([np.zeros(3)]).__name__
    'fusedopt._core'
    """
    if isinstance(params, (list, tuple)) and params:
        mod = type(params[0]).__module__
        if mod.startswith("cupy"):
            from . import _cuda  # noqa: PLC0415 -- CuPy is optional, imported on demand

            return _cuda
    return _core


def tensor_plan(params: Sequence[Any], states: Sequence[Any] = (),
                master_params: Sequence[Any] | None = None) -> Any:
    """The arrays of one multi-tensor call, checked once: a ``fusedopt._core.TensorPlan``, the
    path of ``fusedopt.torch`` to the CPU kernels.

    ``params`` is a list of NumPy arrays (float32, float64, float16 or ``ml_dtypes.bfloat16``),
    ``states`` up to three lists of arrays in the kernel's state slots (state0, state1, state2;
    None for a slot the rule does not use), each of the param's math type (float32 for 16-bit
    params) and shape, ``master_params`` float32 arrays of 16-bit params. The plan checks them
    as every kernel call checks its lists (dtypes, shapes, C-contiguous, aligned, writeable, no
    array aliasing another) and holds them.

    The plan then stands in for every list it holds: ``adam_(plan, plan, plan, plan, step=...)``
    after ``plan.set_grads(grads)``, where ``grads`` has one NumPy array or torch CPU tensor per
    param, checked at each call (the param's dtype and shape, contiguous, aligned, aliasing no
    array of the plan); each ``set_grads`` serves one kernel call.
    """
    states = list(states)
    if len(states) > 3:
        raise ValueError(f"states: at most 3 lists (state0, state1, state2), got {len(states)}")
    return _core.TensorPlan([params, None, *states, *[None] * (3 - len(states)), master_params])


def _extra(impl, master_params, grad_scale, found_inf) -> dict:
    """The optional keyword arguments that were given."""
    return {k: v for k, v in (("master_params", master_params), ("grad_scale", grad_scale),
                              ("found_inf", found_inf)) if v is not None}


#: dtypes of a plain state array (the math types): anything else is looked at by
#: ``_checks.state_kind``
_PLAIN_STATE = frozenset(np.dtype(d) for d in ("float32", "float64", "float16"))


def _compact(states) -> bool:
    """Whether any tensor of the state lists (name, list or None) is held compactly (bfloat16
    or 8-bit), from the items' types and dtypes alone (one pass, nothing else read). Malformed
    lists answer False: the plain path's checks then name them."""
    for _, seq in states:
        if isinstance(seq, (list, tuple)):
            for a in seq:
                if getattr(a, "dtype", None) not in _PLAIN_STATE \
                        and _checks.state_kind(a) != "plain":
                    return True
    return False


def _run(plain, impl, s, params, grads, states, master_params, grad_scale, found_inf, step, seed,
         sr) -> None:
    """The plain kernel call ``plain()``, or the compact one where a state item is compact or
    stochastic rounding is on: decided here from the states' types before either is called."""
    if sr or _compact(states):
        _compact_step(impl, s, params, grads, states, master_params, grad_scale, found_inf, step,
                      seed, sr)
    else:
        plain()


def _compact_step(impl, s, params, grads, states, master_params, grad_scale, found_inf, step,
                  seed, sr) -> None:
    """A step with compact state or stochastic rounding: one fused call of
    ``_core.compact_step`` (csrc/cpu/compact.cpp), whose checks refuse whatever
    ``_checks.check_lists`` refuses for these lists (the states (name, list or None) in the slots
    of fusedopt/slots.h, with their signedness) before anything changes; when it refuses, the
    Python checks run to name the fault in the library's words (the compiled message where they
    pass). For CuPy arrays ``_cuda.compact_step`` (csrc/cuda/compact.cu), which checks the same
    lists for device arrays."""
    if impl is not _core:
        slots = [None if seq is None else (n, seq) for n, seq in states]
        impl.compact_step(s, params, grads, slots + [None] * (3 - len(slots)),
                          master_params=master_params, grad_scale=grad_scale,
                          found_inf=found_inf, step=step, seed=seed, stochastic_rounding=sr)
        return
    signed_slots: list[Any] = [
        None if seq is None else (n, seq, _checks.SIGNEDNESS[n] == _checks.SIGNED)
        for n, seq in states]
    signed_slots += [None] * (3 - len(signed_slots))
    try:
        _core.compact_step(s, params, grads, signed_slots, master_params=master_params,
                           grad_scale=grad_scale, found_inf=found_inf, step=step, seed=seed,
                           stochastic_rounding=sr)
    except (TypeError, ValueError):
        _checks.check_rule_lists([("params", params, True), ("grads", grads, False)]
                                 + [(n, seq, True) for n, seq in states if seq is not None],
                                 master_params)
        raise


def sgd_(params: Arrays, grads: Arrays, momentum_buffers: Arrays | None = None, *, step: int,
         lr: float, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
         nesterov: bool = False, maximize: bool = False, master_params: Arrays | None = None,
         grad_scale=None, found_inf=None, stochastic_rounding: bool = False,
         seed: int = 0) -> None:
    """SGD with optional momentum, dampening, Nesterov momentum and L2 weight decay, in place.

    As torch.optim.SGD::

        momentum_buffer <- g                                            (step == 1)
        momentum_buffer <- momentum * momentum_buffer + (1 - dampening) * g   (after)
        g <- g + momentum * momentum_buffer   (nesterov)   or   g <- momentum_buffer
        p <- p - lr * g

    Parameters
    ----------
    params, grads
        See the module docstring.
    momentum_buffers : list of arrays, optional
        Required when ``momentum != 0``.
    step : int
        The 1-based step (the buffer is set to ``g`` on step 1).
    lr : float
        Learning rate, >= 0.
    momentum : float, default 0.0
    dampening : float, default 0.0
        In [0, 1].
    weight_decay : float, default 0.0
        L2 penalty.
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``.
    maximize : bool, default False
    master_params, grad_scale, found_inf, stochastic_rounding, seed
        See the module docstring.

    Examples
    --------
    >>> import numpy as np
    >>> from fusedopt import ops
    >>> p, g = [np.ones(3, np.float32)], [np.full(3, 0.5, np.float32)]
    >>> ops.sgd_(p, g, step=1, lr=0.1)
    >>> p[0]
    array([0.95, 0.95, 0.95], dtype=float32)
    """
    s = _scalars.sgd(step=step, lr=lr, momentum=momentum, dampening=dampening,
                     weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
    sr = _checks.rounding(params, stochastic_rounding, seed)
    impl = backend_of(params)
    states = [("momentum_buffers", momentum_buffers)] if s.momentum != 0 else []
    _run(lambda: impl.sgd(params, grads, momentum_buffers, s,
                 **_extra(impl, master_params, grad_scale, found_inf)),
         impl, s, params, grads, states, master_params, grad_scale, found_inf, step, seed, sr)


def adagrad_(params: Arrays, grads: Arrays, state_sums: Arrays, *, step: int, lr: float = 1e-2,
             lr_decay: float = 0.0, weight_decay: float = 0.0, eps: float = 1e-10,
             eps_root: float = 0.0, maximize: bool = False, master_params: Arrays | None = None,
             grad_scale=None, found_inf=None, stochastic_rounding: bool = False,
             seed: int = 0) -> None:
    """Adagrad (Duchi, Hazan & Singer 2011), in place::

        sum <- sum + g * g
        p   <- p - lr_t * (g / (sqrt(sum + eps_root) + eps)),   lr_t = lr / (1 + (t - 1) * lr_decay)

    Parameters
    ----------
    params, grads
        See the module docstring.
    state_sums : list of arrays
        The ``sum`` state (torch's name), initialised with ``initial_accumulator_value``.
    step : int
    lr : float, default 1e-2
    lr_decay : float, default 0.0
    weight_decay : float, default 0.0
    eps : float, default 1e-10
        Added to the square root.
    eps_root : float, default 0.0
        Added inside the square root (optax).
    maximize : bool, default False
    master_params, grad_scale, found_inf, stochastic_rounding, seed
        See the module docstring.

    Examples
    --------
    >>> import numpy as np
    >>> from fusedopt import ops
    >>> p, g, s = [np.ones(2)], [np.full(2, 2.0)], [np.zeros(2)]
    >>> ops.adagrad_(p, g, s, step=1, lr=0.5, eps=0.0)
    >>> s[0], p[0]
    (array([4., 4.]), array([0.5, 0.5]))
    """
    s = _scalars.adagrad(step=step, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         eps=eps, eps_root=eps_root, maximize=maximize)
    sr = _checks.rounding(params, stochastic_rounding, seed)
    impl = backend_of(params)
    states = [("state_sums", state_sums)]
    _run(lambda: impl.adagrad(params, grads, state_sums, s,
                     **_extra(impl, master_params, grad_scale, found_inf)),
         impl, s, params, grads, states, master_params, grad_scale, found_inf, step, seed, sr)


def rmsprop_(params: Arrays, grads: Arrays, square_avgs: Arrays, grad_avgs: Arrays | None = None,
             momentum_buffers: Arrays | None = None, *, step: int, lr: float = 1e-2,
             alpha: float = 0.99, eps: float = 1e-8, eps_root: float = 0.0,
             weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
             maximize: bool = False, master_params: Arrays | None = None, grad_scale=None,
             found_inf=None, stochastic_rounding: bool = False, seed: int = 0) -> None:
    """RMSprop (Hinton), centered (Graves 2013), with momentum, in place::

        square_avg <- alpha * square_avg + (1 - alpha) * (g * g)
        grad_avg   <- alpha * grad_avg + (1 - alpha) * g                      (centered)
        denom       = sqrt(square_avg - grad_avg * grad_avg + eps_root) + eps  (centered)
        denom       = sqrt(square_avg + eps_root) + eps                        (otherwise)
        momentum_buffer <- momentum * momentum_buffer + g / denom;  p <- p - lr * momentum_buffer
        p <- p - lr * (g / denom)                                              (momentum == 0)

    Parameters
    ----------
    params, grads
        See the module docstring.
    square_avgs : list of arrays
    grad_avgs : list of arrays, optional
        Required when ``centered``.
    momentum_buffers : list of arrays, optional
        Required when ``momentum != 0``.
    step : int
    lr : float, default 1e-2
    alpha : float, default 0.99
        In [0, 1].
    eps : float, default 1e-8
    eps_root : float, default 0.0
    weight_decay : float, default 0.0
    momentum : float, default 0.0
    centered : bool, default False
    maximize : bool, default False
    master_params, grad_scale, found_inf, stochastic_rounding, seed
        See the module docstring.

    Examples
    --------
    >>> import numpy as np
    >>> from fusedopt import ops
    >>> p, g, sq = [np.ones(2)], [np.ones(2)], [np.zeros(2)]
    >>> ops.rmsprop_(p, g, sq, step=1, lr=0.1, alpha=0.75, eps=0.0)
    >>> sq[0], p[0]
    (array([0.25, 0.25]), array([0.8, 0.8]))
    """
    s = _scalars.rmsprop(step=step, lr=lr, alpha=alpha, eps=eps, eps_root=eps_root,
                         weight_decay=weight_decay, momentum=momentum, centered=centered,
                         maximize=maximize)
    _checks.centered_states(s.centered, square_avgs, grad_avgs)
    sr = _checks.rounding(params, stochastic_rounding, seed)
    impl = backend_of(params)
    states = [("square_avgs", square_avgs), ("grad_avgs", grad_avgs if s.centered else None),
              ("momentum_buffers", momentum_buffers if s.momentum != 0 else None)]
    _run(lambda: impl.rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, s,
                     **_extra(impl, master_params, grad_scale, found_inf)),
         impl, s, params, grads, states, master_params, grad_scale, found_inf, step, seed, sr)


def adam_(params: Arrays, grads: Arrays, exp_avgs: Arrays, exp_avg_sqs: Arrays,
          max_exp_avg_sqs: Arrays | None = None, *, step: int, lr: float = 1e-3,
          betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, eps_root: float = 0.0,
          weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
          amsgrad: bool = False, maximize: bool = False, master_params: Arrays | None = None,
          grad_scale=None, found_inf=None, stochastic_rounding: bool = False,
          seed: int = 0) -> None:
    """Adam (Kingma & Ba 2015); AdamW with ``decoupled_weight_decay=True``; AMSGrad, in place::

        p              <- p * (1 - lr * wd)                       (decoupled weight decay)
        exp_avg        <- b1 * exp_avg + (1 - b1) * g
        exp_avg_sq     <- b2 * exp_avg_sq + (1 - b2) * (g * g)
        max_exp_avg_sq <- max(max_exp_avg_sq, exp_avg_sq)         (amsgrad: used below instead)
        m_hat = exp_avg / (1 - b1^t),  v_hat = exp_avg_sq / (1 - b2^t)
        p              <- p - lr * m_hat / (sqrt(v_hat + eps_root) + eps)

    computed with one division per element: ``step_size * exp_avg / (sqrt(exp_avg_sq *
    inv_bias_correction2 + eps_root) + eps)``, ``step_size = lr / (1 - b1^t)`` and
    ``inv_bias_correction2 = 1 / (1 - b2^t)`` in float64, cast once (``fusedopt.reference``).

    Parameters
    ----------
    params, grads
        See the module docstring.
    exp_avgs, exp_avg_sqs : list of arrays
    max_exp_avg_sqs : list of arrays, optional
        Required when ``amsgrad``.
    step : int
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1).
    eps : float, default 1e-8
    eps_root : float, default 0.0
        Added inside the square root (optax).
    weight_decay : float, default 0.0
    decoupled_weight_decay : bool, default False
        AdamW's form instead of the L2 penalty.
    amsgrad : bool, default False
    maximize : bool, default False
    master_params, grad_scale, found_inf, stochastic_rounding, seed
        See the module docstring.

    Examples
    --------
    >>> import numpy as np
    >>> from fusedopt import ops
    >>> p, g = [np.ones(2)], [np.ones(2)]
    >>> m, v = [np.zeros(2)], [np.zeros(2)]
    >>> ops.adam_(p, g, m, v, step=1, lr=0.1, eps=0.0)
    >>> p[0]
    array([0.9, 0.9])
    """
    s = _scalars.adam(step=step, lr=lr, betas=betas, eps=eps, eps_root=eps_root,
                      weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                      amsgrad=amsgrad, maximize=maximize)
    sr = _checks.rounding(params, stochastic_rounding, seed)
    impl = backend_of(params)
    states = [("exp_avgs", exp_avgs), ("exp_avg_sqs", exp_avg_sqs),
              ("max_exp_avg_sqs", max_exp_avg_sqs if s.amsgrad else None)]
    _run(lambda: impl.adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, s,
                  **_extra(impl, master_params, grad_scale, found_inf)),
         impl, s, params, grads, states, master_params, grad_scale, found_inf, step, seed, sr)


def adamax_(params: Arrays, grads: Arrays, exp_avgs: Arrays, exp_infs: Arrays, *, step: int,
            lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
            weight_decay: float = 0.0, maximize: bool = False,
            master_params: Arrays | None = None, grad_scale=None, found_inf=None,
            stochastic_rounding: bool = False, seed: int = 0) -> None:
    """AdaMax (Kingma & Ba 2015, section 7.1), in place::

        exp_avg <- b1 * exp_avg + (1 - b1) * g
        exp_inf <- max(b2 * exp_inf, |g| + eps)
        p       <- p - step_size * (exp_avg / exp_inf),   step_size = lr / (1 - b1^t)

    Parameters
    ----------
    params, grads
        See the module docstring.
    exp_avgs, exp_infs : list of arrays
    step : int
    lr : float, default 2e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0.0
    maximize : bool, default False
    master_params, grad_scale, found_inf, stochastic_rounding, seed
        See the module docstring.

    Examples
    --------
    >>> import numpy as np
    >>> from fusedopt import ops
    >>> p, g, m, u = [np.ones(2)], [np.ones(2)], [np.zeros(2)], [np.zeros(2)]
    >>> ops.adamax_(p, g, m, u, step=1, lr=0.5, betas=(0.5, 0.5), eps=0.0)
    >>> p[0]
    array([0.5, 0.5])
    """
    s = _scalars.adamax(step=step, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        maximize=maximize)
    sr = _checks.rounding(params, stochastic_rounding, seed)
    impl = backend_of(params)
    states = [("exp_avgs", exp_avgs), ("exp_infs", exp_infs)]
    _run(lambda: impl.adamax(params, grads, exp_avgs, exp_infs, s,
                    **_extra(impl, master_params, grad_scale, found_inf)),
         impl, s, params, grads, states, master_params, grad_scale, found_inf, step, seed, sr)


def global_norm(arrays: Arrays) -> float:
    """L2 norm over every element of a list of arrays, accumulated in float64.

    Deterministic: fixed blocks of ``_core.reduce_block`` elements, partial sums added in a fixed
    order, so the result has the same bits for any number of threads.

    Parameters
    ----------
    arrays : list of arrays
        float32 or float64 (NumPy or CuPy).

    Examples
    --------
    >>> import numpy as np
    >>> from fusedopt import ops
    >>> ops.global_norm([np.array([3.0]), np.array([4.0], np.float32)])
    5.0
    """
    return math.sqrt(backend_of(arrays).sum_squares(arrays))


def clip_by_global_norm_(arrays: Arrays, max_norm: float, *, eps: float = 1e-6,
                         error_if_nonfinite: bool = False) -> float:
    """Scale every array in place by ``min(1, max_norm / (norm + eps))`` (as
    ``torch.nn.utils.clip_grad_norm_``). Returns the global norm before clipping.

    A zero norm (all zeros, or an empty list) needs no clipping and scales nothing, whatever
    ``eps``. A non-finite norm scales by NaN (or 0), as torch does, unless ``error_if_nonfinite``.

    Parameters
    ----------
    arrays : list of arrays
        Updated in place.
    max_norm : float
        >= 0.
    eps : float, default 1e-6
        >= 0.
    error_if_nonfinite : bool, default False
        A NaN or infinite norm raises ValueError and nothing is scaled.

    Examples
    --------
    >>> import numpy as np
    >>> from fusedopt import ops
    >>> g = [np.array([3.0, 4.0])]
    >>> ops.clip_by_global_norm_(g, 1.0, eps=0.0)
    5.0
    >>> g[0]
    array([0.6, 0.8])
    """
    max_norm = _checks.nonneg("max_norm", max_norm)
    eps = _checks.nonneg("eps", eps)
    _checks.flag("error_if_nonfinite", error_if_nonfinite)
    impl = backend_of(arrays)
    norm = math.sqrt(impl.sum_squares(arrays))
    if error_if_nonfinite and not math.isfinite(norm):
        raise ValueError(f"the global norm of arrays is {norm}; nothing was clipped")
    if norm + eps == 0.0:  # norm == 0 and eps == 0: nothing to clip, and no 0 / 0
        return norm
    coef = max_norm / (norm + eps)
    if coef < 1.0 or not math.isfinite(norm):
        impl.scale_(arrays, coef)
    return norm


def found_inf_(arrays: Arrays, found_inf) -> None:
    """AMP's check: set ``found_inf[0]`` to 1 if any element of ``arrays`` is infinite or NaN,
    and leave it as it is otherwise.

    NumPy: float16, bfloat16, float32, float64 arrays and a one-element float32 NumPy
    ``found_inf`` (one fused parallel scan). CuPy: the same dtypes and ``found_inf`` on the
    device, without a host sync. Zero ``found_inf``, check the (scaled) grads, then pass
    ``grad_scale``/``found_inf`` to the update: a step with a non-finite grad changes nothing.

    Parameters
    ----------
    arrays : list of arrays
    found_inf : float32 array of one element
        Written (set to 1) when a non-finite element is found.

    Examples
    --------
    >>> import numpy as np
    >>> from fusedopt import ops
    >>> found = np.zeros(1, np.float32)
    >>> ops.found_inf_([np.array([1.0, np.inf])], found)
    >>> found
    array([1.], dtype=float32)
    """
    backend_of(arrays).found_inf_(arrays, found_inf)


def lbfgs_direction_(out, grad, history) -> float:
    """``out = -H grad``: the L-BFGS two-loop recursion (Nocedal & Wright, Algorithm 7.4) over a
    ``fusedopt.lbfgs.History``, in one fused call.

    ``out`` and ``grad`` have ``history.n`` elements (any shape, the same for both), the
    history's dtype, and are C-contiguous; ``out`` must not share memory with ``grad`` or the
    history. The recursion streams each history row twice (the axpy of one step fused with the
    dot of the next); its float64 reductions use fixed blocks in a fixed order, so the result has
    the same bits for any number of threads. With an empty history, ``out = -grad``.

    Parameters
    ----------
    out : array
        Receives the direction.
    grad : array
    history : fusedopt.lbfgs.History
        The pairs (s, y) in a ring buffer.

    Returns
    -------
    float
        ``grad . out`` (float64), taken in the last pass (the line search needs it).
    """
    try:
        s, y, rho, head, count = (history.s, history.y, history.rho, history.head,
                                  history.count)
    except AttributeError:
        raise TypeError("history must be a fusedopt.lbfgs.History (with s, y, rho, head, "
                        f"count), got {type(history).__module__}.{type(history).__name__}"
                        ) from None
    return backend_of([out]).lbfgs_direction(out, grad, s, y, rho, head, count)
