"""Layer: kernels (the CUDA backend). The functions of ``fusedopt._core`` for CuPy arrays: the
update rules, ``scale_``, ``sum_squares`` and AMP's ``found_inf_``.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from . import runtime
from .checks import _CTYPES, _check, _check_device_scalar, _half_dtypes
from .launch import _launch, _launch_per_dtype


# Each takes _core's arguments: the lists and the fusedopt._scalars record; the keyword-only
# ones are, besides AMP's pair (as on the CPU), CUDA's own master_params:
#   master_params  float32 master weights of float16/bfloat16 params (updated; params receive
#                  the rounded result)
#   grad_scale, found_inf  one float32 each on the device: the step is skipped when
#                  found_inf != 0, and the grads are divided by grad_scale (AMP's loss scaling)
# List slots follow fusedopt/slots.h; a state keeps its slot whatever the flags.

def _rule(kernel, lists, record, master_params, grad_scale, found_inf):
    _launch(kernel, record, [(name, seq, name != "grads", slot)
                             for name, seq, slot, used in lists if used],
            master_params, grad_scale, found_inf)


def sgd(params, grads, momentum_buffers, scalars, *, master_params=None, grad_scale=None,
        found_inf=None):
    _rule("sgd_kernel", [("params", params, 0, True), ("grads", grads, 1, True),
                         ("momentum_buffers", momentum_buffers, 2, scalars.has_momentum)],
          scalars, master_params, grad_scale, found_inf)


def adagrad(params, grads, state_sums, scalars, *, master_params=None, grad_scale=None,
            found_inf=None):
    _rule("adagrad_kernel", [("params", params, 0, True), ("grads", grads, 1, True),
                             ("state_sums", state_sums, 2, True)],
          scalars, master_params, grad_scale, found_inf)


def rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, scalars, *,
            master_params=None, grad_scale=None, found_inf=None):
    _rule("rmsprop_kernel", [("params", params, 0, True), ("grads", grads, 1, True),
                             ("square_avgs", square_avgs, 2, True),
                             ("grad_avgs", grad_avgs, 3, scalars.centered),
                             ("momentum_buffers", momentum_buffers, 4, scalars.has_momentum)],
          scalars, master_params, grad_scale, found_inf)


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, scalars, *, master_params=None,
         grad_scale=None, found_inf=None):
    _rule("adam_kernel", [("params", params, 0, True), ("grads", grads, 1, True),
                          ("exp_avgs", exp_avgs, 2, True), ("exp_avg_sqs", exp_avg_sqs, 3, True),
                          ("max_exp_avg_sqs", max_exp_avg_sqs, 4, scalars.amsgrad)],
          scalars, master_params, grad_scale, found_inf)


def adamax(params, grads, exp_avgs, exp_infs, scalars, *, master_params=None, grad_scale=None,
           found_inf=None):
    _rule("adamax_kernel", [("params", params, 0, True), ("grads", grads, 1, True),
                            ("exp_avgs", exp_avgs, 2, True), ("exp_infs", exp_infs, 3, True)],
          scalars, master_params, grad_scale, found_inf)


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
