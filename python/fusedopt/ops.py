"""Fused in-place update kernels over lists of arrays.

Each function updates every tensor of a model in one call: one pass over memory, one parallel
region over the total element count, the GIL released. NumPy arrays run the C++/OpenMP kernels of
``fusedopt._core``; CuPy arrays run the CUDA kernels of ``fusedopt._cuda`` (compiled on first
use). A mix of NumPy and CuPy arrays raises TypeError.

Shared arguments
----------------
params : list of arrays
    float32 or float64, C-contiguous, writeable, aligned; updated in place.
grads : list of arrays
    One per param, same shape and dtype. Read only.
state lists (exp_avgs, momentum_buffers, ...) : list of arrays
    One per param, same shape and dtype; updated in place. Allocate them with zeros (or
    ``initial_accumulator_value`` for Adagrad) and keep them between steps.
step : int
    The 1-based number of the step being taken (bias corrections, lr decay, first momentum step).
maximize : bool
    Ascend the objective instead of descending.

CUDA only (CuPy arrays), keyword arguments of every update function:

master_params : list of float32 arrays, optional
    Mixed precision: with float16/bfloat16 params and grads, the states are float32 and the math
    is float32; with master_params the rule updates these float32 copies of the params and the
    params receive the result rounded to their dtype.
grad_scale, found_inf : float32 arrays of one element on the device, optional (both or neither)
    AMP's loss scaling without a host sync: when ``found_inf != 0`` the step changes nothing;
    otherwise the rule sees ``g / grad_scale``.

Every argument is checked before any array is modified: a bad dtype, shape, list length, a
read-only or non-contiguous array, two written arguments sharing memory, or a hyperparameter out
of range raise TypeError/ValueError naming the argument, and nothing is changed.

The per-step scalars come from ``fusedopt._scalars`` (float64, cast once to the array dtype), the
same as in ``fusedopt.reference``; with FMA contraction off, results equal the reference bit for
bit.
"""
from __future__ import annotations

import math

from . import _checks, _core, _scalars

__all__ = ["sgd_", "adagrad_", "rmsprop_", "adam_", "adamax_", "global_norm",
           "clip_by_global_norm_", "found_inf_", "backend_of", "lbfgs_direction_"]


def backend_of(params):
    """The kernel module for a list of arrays: ``_core`` for NumPy, ``_cuda`` for CuPy.

    Only the first array picks; every other array is then checked to be of the same kind by the
    kernel module itself, which raises TypeError naming the first one that is not.
    """
    if isinstance(params, (list, tuple)) and params:
        mod = type(params[0]).__module__
        if mod.startswith("cupy"):
            from . import _cuda  # noqa: PLC0415 -- CuPy is optional, imported on demand

            return _cuda
    return _core


def _cuda_only(impl, master_params, grad_scale, found_inf) -> dict:
    """The CUDA-only keyword arguments that were given, refused for the CPU backend."""
    kw = {k: v for k, v in (("master_params", master_params), ("grad_scale", grad_scale),
                            ("found_inf", found_inf)) if v is not None}
    if kw and impl is _core:
        raise TypeError(f"{', '.join(kw)}: mixed precision and AMP scaling need CuPy arrays "
                        "(the CUDA backend)")
    return kw


def sgd_(params, grads, momentum_buffers=None, *, step, lr, momentum=0.0, dampening=0.0,
         weight_decay=0.0, nesterov=False, maximize=False, master_params=None, grad_scale=None,
         found_inf=None):
    """SGD with optional momentum, dampening, Nesterov momentum and L2 weight decay.

    ``momentum_buffers`` is required when ``momentum != 0``. As in torch.optim.SGD the buffer is
    set to the gradient on the first step (``step == 1``) and decayed after that:
    ``buf = momentum * buf + (1 - dampening) * g``.
    """
    s = _scalars.sgd(step=step, lr=lr, momentum=momentum, dampening=dampening,
                     weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
    impl = backend_of(params)
    impl.sgd(params, grads, momentum_buffers, s.lr, s.momentum, s.one_minus_dampening,
             s.weight_decay, s.first_step, nesterov, maximize,
             **_cuda_only(impl, master_params, grad_scale, found_inf))


def adagrad_(params, grads, state_sums, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
             eps=1e-10, eps_root=0.0, maximize=False, master_params=None, grad_scale=None,
             found_inf=None):
    """Adagrad: ``sum += g*g; p -= clr * (g / (sqrt(sum + eps_root) + eps))``,
    ``clr = lr / (1 + (step - 1) * lr_decay)``."""
    s = _scalars.adagrad(step=step, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         eps=eps, eps_root=eps_root, maximize=maximize)
    impl = backend_of(params)
    impl.adagrad(params, grads, state_sums, s.clr, s.eps, s.eps_root, s.weight_decay, maximize,
                 **_cuda_only(impl, master_params, grad_scale, found_inf))


def rmsprop_(params, grads, square_avgs, grad_avgs=None, momentum_buffers=None, *, step,
             lr=1e-2, alpha=0.99, eps=1e-8, eps_root=0.0, weight_decay=0.0, momentum=0.0,
             centered=False, maximize=False, master_params=None, grad_scale=None,
             found_inf=None):
    """RMSprop; ``grad_avgs`` is required when ``centered``, ``momentum_buffers`` when
    ``momentum != 0``."""
    s = _scalars.rmsprop(step=step, lr=lr, alpha=alpha, eps=eps, eps_root=eps_root,
                         weight_decay=weight_decay, momentum=momentum, centered=centered,
                         maximize=maximize)
    impl = backend_of(params)
    impl.rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, s.lr, s.alpha,
                 s.one_minus_alpha, s.eps, s.eps_root, s.weight_decay, s.momentum, centered,
                 maximize, **_cuda_only(impl, master_params, grad_scale, found_inf))


def adam_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, step, lr=1e-3,
          betas=(0.9, 0.999), eps=1e-8, eps_root=0.0, weight_decay=0.0,
          decoupled_weight_decay=False, amsgrad=False, maximize=False, master_params=None,
          grad_scale=None, found_inf=None):
    """Adam with Kingma & Ba's bias correction; AdamW with ``decoupled_weight_decay=True``;
    AMSGrad with ``amsgrad=True`` (then ``max_exp_avg_sqs`` is required)."""
    s = _scalars.adam(step=step, lr=lr, betas=betas, eps=eps, eps_root=eps_root,
                      weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                      amsgrad=amsgrad, maximize=maximize)
    impl = backend_of(params)
    impl.adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, s.lr, s.beta1,
              s.one_minus_beta1, s.beta2, s.one_minus_beta2, s.bias_correction1,
              s.bias_correction2, s.eps, s.eps_root, s.weight_decay, s.decay,
              decoupled_weight_decay, amsgrad, maximize,
              **_cuda_only(impl, master_params, grad_scale, found_inf))


def adamax_(params, grads, exp_avgs, exp_infs, *, step, lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
            weight_decay=0.0, maximize=False, master_params=None, grad_scale=None,
            found_inf=None):
    """AdaMax: ``u = max(beta2*u, |g| + eps); p -= lr / (1 - beta1**step) * (m / u)``."""
    s = _scalars.adamax(step=step, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        maximize=maximize)
    impl = backend_of(params)
    impl.adamax(params, grads, exp_avgs, exp_infs, s.clr, s.beta1, s.one_minus_beta1, s.beta2,
                s.eps, s.weight_decay, maximize,
                **_cuda_only(impl, master_params, grad_scale, found_inf))


def global_norm(arrays) -> float:
    """L2 norm over every element of a list of arrays, accumulated in float64.

    Deterministic: fixed blocks of ``_core.reduce_block`` elements, partial sums added in a fixed
    order, so the result has the same bits for any number of threads.
    """
    return math.sqrt(backend_of(arrays).sum_squares(arrays))


def clip_by_global_norm_(arrays, max_norm, *, eps=1e-6, error_if_nonfinite=False) -> float:
    """Scale every array in place by ``min(1, max_norm / (norm + eps))`` (as
    ``torch.nn.utils.clip_grad_norm_``). Returns the global norm before clipping.

    With ``error_if_nonfinite=True`` a NaN or infinite norm raises ValueError and nothing is
    scaled.
    """
    max_norm = _checks.nonneg("max_norm", max_norm)
    eps = _checks.nonneg("eps", eps)
    _checks.flag("error_if_nonfinite", error_if_nonfinite)
    impl = backend_of(arrays)
    norm = math.sqrt(impl.sum_squares(arrays))
    if error_if_nonfinite and not math.isfinite(norm):
        raise ValueError(f"the global norm of arrays is {norm}; nothing was clipped")
    coef = max_norm / (norm + eps)
    if coef < 1.0 or not math.isfinite(norm):
        impl.scale_(arrays, coef)
    return norm


def found_inf_(arrays, found_inf) -> None:
    """AMP's check, CuPy arrays only: set ``found_inf`` (one float32 on the device) to 1 if any
    element of ``arrays`` (float16, bfloat16, float32, float64) is infinite or NaN, and leave it
    as it is otherwise, without a host sync. Zero it, check the scaled grads, then pass
    ``grad_scale``/``found_inf`` to the update: the step is skipped on the device."""
    impl = backend_of(arrays)
    if impl is _core:
        raise TypeError("found_inf_ needs CuPy arrays (the CUDA backend)")
    impl.found_inf_(arrays, found_inf)


def lbfgs_direction_(out, grad, history):
    """``out = -H grad``: the L-BFGS two-loop recursion (Nocedal & Wright, Algorithm 7.4) over a
    ``fusedopt.lbfgs.History``, in one fused call.

    ``out`` and ``grad`` have ``history.n`` elements (any shape, the same for both), the
    history's dtype, and are C-contiguous; ``out`` must not share memory with ``grad`` or the
    history. The recursion streams each history row twice (the axpy of one step fused with the
    dot of the next); its float64 reductions use fixed blocks in a fixed order, so the result has
    the same bits for any number of threads. With an empty history, ``out = -grad``.

    Returns ``grad . out`` (float64), taken in the last pass (the line search needs it).
    """
    return backend_of([out]).lbfgs_direction(out, grad, history.s, history.y, history.rho,
                                             history.head, history.count)
