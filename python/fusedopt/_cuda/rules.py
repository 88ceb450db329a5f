"""CUDA backend, the functions of ``fusedopt._core`` for CuPy arrays: the update rules,
``scale_``, ``sum_squares`` and AMP's ``found_inf_``.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from . import runtime
from .checks import _CTYPES, _check, _check_device_scalar, _half_dtypes
from .launch import _decay_mode, _launch, _launch_per_dtype


# Each takes _core's positional arguments; the keyword-only ones are CUDA's own:
#   master_params  float32 master weights of float16/bfloat16 params (updated; params receive
#                  the rounded result)
#   grad_scale, found_inf  one float32 each on the device: the step is skipped when
#                  found_inf != 0, and the grads are divided by grad_scale (AMP's loss scaling)

def sgd(params, grads, momentum_buffers, lr, momentum, one_minus_dampening, weight_decay,
        first_step, nesterov, maximize, *, master_params=None, grad_scale=None, found_inf=None):
    mom = momentum != 0.0
    lists = [("params", params, True, 0), ("grads", grads, False, 1)]
    if mom:
        lists.append(("momentum_buffers", momentum_buffers, True, 2))
    _launch("sgd_kernel",
            (bool(maximize), _decay_mode(weight_decay, False), mom, bool(nesterov)), lists,
            (lr, momentum, one_minus_dampening, weight_decay, bool(first_step)),
            master_params, grad_scale, found_inf)


def adagrad(params, grads, state_sums, clr, eps, eps_root, weight_decay, maximize, *,
            master_params=None, grad_scale=None, found_inf=None):
    lists = [("params", params, True, 0), ("grads", grads, False, 1),
             ("state_sums", state_sums, True, 2)]
    _launch("adagrad_kernel", (bool(maximize), _decay_mode(weight_decay, False)), lists,
            (clr, eps, eps_root, weight_decay), master_params, grad_scale, found_inf)


def rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, lr, alpha,
            one_minus_alpha, eps, eps_root, weight_decay, momentum, centered, maximize, *,
            master_params=None, grad_scale=None, found_inf=None):
    mom = momentum != 0.0
    lists = [("params", params, True, 0), ("grads", grads, False, 1),
             ("square_avgs", square_avgs, True, 2)]
    if centered:
        lists.append(("grad_avgs", grad_avgs, True, 3))
    if mom:
        lists.append(("momentum_buffers", momentum_buffers, True, len(lists)))
    _launch("rmsprop_kernel",
            (bool(maximize), _decay_mode(weight_decay, False), bool(centered), mom), lists,
            (lr, alpha, one_minus_alpha, eps, eps_root, weight_decay, momentum),
            master_params, grad_scale, found_inf)


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, lr, beta1, one_minus_beta1,
         beta2, one_minus_beta2, bias_correction1, bias_correction2, eps, eps_root,
         weight_decay, decay, decoupled, amsgrad, maximize, *, master_params=None,
         grad_scale=None, found_inf=None):
    lists = [("params", params, True, 0), ("grads", grads, False, 1),
             ("exp_avgs", exp_avgs, True, 2), ("exp_avg_sqs", exp_avg_sqs, True, 3)]
    if amsgrad:
        lists.append(("max_exp_avg_sqs", max_exp_avg_sqs, True, 4))
    _launch("adam_kernel",
            (bool(maximize), _decay_mode(weight_decay, bool(decoupled)), bool(amsgrad)), lists,
            (lr, beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction1,
             bias_correction2, eps, eps_root, weight_decay, decay),
            master_params, grad_scale, found_inf)


def adamax(params, grads, exp_avgs, exp_infs, clr, beta1, one_minus_beta1, beta2, eps,
           weight_decay, maximize, *, master_params=None, grad_scale=None, found_inf=None):
    lists = [("params", params, True, 0), ("grads", grads, False, 1),
             ("exp_avgs", exp_avgs, True, 2), ("exp_infs", exp_infs, True, 3)]
    _launch("adamax_kernel", (bool(maximize), _decay_mode(weight_decay, False)), lists,
            (clr, beta1, one_minus_beta1, beta2, eps, weight_decay),
            master_params, grad_scale, found_inf)


def scale_(arrays, factor):
    dev = _check([("arrays", arrays, True)])
    if dev is not None:  # grad_scale, found_inf: not read by scale_kernel
        _launch_per_dtype("scale_kernel", arrays, _CTYPES, dev,
                          lambda table, dtype, _: (table, table, dtype.type(float(factor))))


def found_inf_(arrays, found_inf):
    """Set ``found_inf`` (one float32 on the device) to 1 if any element of ``arrays`` (float16,
    bfloat16, float32 or float64) is infinite or NaN; leave it as it is otherwise. With the
    optimizers' ``grad_scale``/``found_inf`` this is AMP's check, without a host sync: zero
    ``found_inf``, call this on the scaled grads, then step (the step is skipped on the device).
    One launch per dtype present."""
    dtypes = {**_CTYPES, **_half_dtypes()}
    dev = _check([("arrays", arrays, False)], dtypes=tuple(dtypes))
    _check_device_scalar("found_inf", found_inf, dev)
    if dev is not None:
        _launch_per_dtype("found_inf_kernel", arrays, dtypes, dev, lambda *_: (found_inf,))


def sum_squares(arrays) -> float:
    """Sum of squares of every element, float64, with the bits of ``_core.sum_squares``."""
    dev = _check([("arrays", arrays, False)])
    if dev is None:
        return 0.0
    cp = runtime.cupy()
    with cp.cuda.Device(dev):
        nchunks = sum(-(-a.size // int(_core.reduce_block)) for a in arrays)
        partial = cp.empty(max(1, nchunks), np.float64)
        out = cp.empty(1, np.float64)
        n32, n64 = _launch_per_dtype("sum_squares_partial", arrays, _CTYPES, dev,
                                     lambda table, dtype, at: (partial[at:],),
                                     chunk=int(_core.reduce_block), file="reduce.cu")
        fin = runtime.function("reduce.cu", "fusedopt::cuda::sum_squares_finish")
        fin((1,), (1,), (partial, np.int64(n32), np.int64(n64), out))
        return float(out.item())
