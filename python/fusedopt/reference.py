"""The NumPy reference: every update rule written out as the textbook has it.

Layer: kernels (the NumPy twin of the kernels; imports no kernels).

This module is the ground truth of fusedopt. Each function updates lists of arrays in place,
one tensor at a time, with plain NumPy expressions in the order of operations of the equations
in its docstring. The per-step scalars come from ``fusedopt._scalars`` (float64, cast once to the
array dtype), exactly as the compiled kernels receive them, so the fused kernels are expected to
reproduce these results bit for bit.

Signatures match ``fusedopt.ops``; see there for the argument documentation, the notation and
the AMP pair ``grad_scale``/``found_inf`` (when ``found_inf[0] != 0`` nothing changes; otherwise
the rule sees ``g / grad_scale``, the scale cast once to the array dtype, as the kernels do).

16-bit params (float16, ``ml_dtypes.bfloat16``): the rule runs on a float32 param, the float32
``master_params[i]`` when given, else the param widened (``astype(float32)``, exact), and sees
the grad widened; the param then receives the float32 result rounded to nearest even (NumPy's
and ml_dtypes' ``astype``). The states are float32.

Compact state (issue 10): where the math type is float32 (float32, float16 and bfloat16 params)
each state tensor may instead be a bfloat16 array (the rule sees it widened, exactly; the new
value is stored rounded to nearest even) or a ``fusedopt.quant.QuantizedState`` (the rule sees
it dequantized; the new values are requantized block by block: new absmax, nearest codes of
x * (1 / absmax), see ``fusedopt.quant``).
First moments and momentum are signed, every other state unsigned (see ``_checks.SIGNED``).
The rule's float32 values of this step are used throughout the step (the update of the param
uses the state before it is stored compactly).

``stochastic_rounding=True`` (bfloat16 params only) stores the param (or the master weights'
value) into bfloat16 with ``quant.stochastic_round_bf16`` and the key
``quant.sr_key(seed, step, i)`` of the tensor's index ``i`` in the list, instead of rounding to
nearest even.

Layer: the reference (NumPy only); it imports nothing compiled.
"""
from __future__ import annotations

import numpy as np

from . import _checks, _scalars, quant

__all__ = ["sgd_", "adagrad_", "rmsprop_", "adam_", "adamax_", "global_norm",
           "clip_by_global_norm_", "found_inf_",
           "lbfgs_direction"]


def _amp_scalar(name, a):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray (one float32), got "
                        f"{type(a).__module__}.{type(a).__name__}")
    if a.dtype != np.float32 or a.size != 1:
        raise TypeError(f"{name} must hold one float32, got dtype {a.dtype} and size {a.size}")


def _amp(grad_scale, found_inf):
    """(skip the step, the grad scale or None) of AMP's optional pair."""
    if (grad_scale is None) != (found_inf is None):
        raise ValueError("grad_scale and found_inf go together: give both or neither")
    if grad_scale is None:
        return False, None
    _amp_scalar("grad_scale", grad_scale)
    _amp_scalar("found_inf", found_inf)
    return bool(found_inf.reshape(-1)[0] != 0), grad_scale.reshape(-1)[0]


def _unscaled(g, p, scale):
    """g / grad_scale, the scale cast once to the dtype (the kernels' AMP instance)."""
    return g if scale is None else g / p.dtype.type(scale)


def _load(s):
    """The float values a rule works on for one state tensor (the array itself when plain)."""
    kind = _checks.state_kind(s)
    if kind == "uint8":
        return quant.dequantize(s)
    if kind == "bfloat16":
        return s.astype(np.float32)
    return s


def _store(s, w):
    """The updated values ``w`` of ``_load(s)`` back into a compact state ``s``."""
    kind = _checks.state_kind(s)
    if kind == "uint8":
        quant.requantize_(s, w)
    elif kind == "bfloat16":
        with np.errstate(over="ignore", invalid="ignore"):
            s[...] = w.astype(s.dtype)


def _widen(p, g, master_params, i):
    """(the param the rule updates, the grad it sees): for a 16-bit param, its float32 master
    weights (or the param widened) and the grad widened; else the arrays themselves."""
    if not _checks.is_16bit(p.dtype):
        return p, g
    w = master_params[i] if master_params is not None else p.astype(np.float32)
    return w, g.astype(np.float32)


def _narrow(p, w, key=None):
    """The updated float32 ``w`` into the 16-bit param ``p``, rounded to nearest even, or
    stochastically with ``key`` (bfloat16 only)."""
    if w is not p:
        if key is not None:
            p[...] = quant.stochastic_round_bf16(w, key)
            return
        with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN are kept, silently
            p[...] = w.astype(p.dtype)


def found_inf_(arrays, found_inf):
    """``found_inf[0] = 1`` if any element of ``arrays`` is infinite or NaN; left as it is
    otherwise."""
    _checks.check_lists([("arrays", arrays, False)], dtypes=_checks.PARAM_DTYPES)
    _amp_scalar("found_inf", found_inf)
    if any(not np.isfinite(a.astype(np.float32) if _checks.is_16bit(a.dtype) else a).all()
           for a in arrays):
        found_inf.reshape(-1)[0] = 1.0


def _grad(g, p, k, maximize, weight_decay):
    """The gradient the rule sees: negated to maximize, plus the L2 term wd * p."""
    if maximize:
        g = -g
    if weight_decay != 0:
        g = g + k.weight_decay * p
    return g


def sgd_(params, grads, momentum_buffers=None, *, step, lr, momentum=0.0, dampening=0.0,
         weight_decay=0.0, nesterov=False, maximize=False, master_params=None,
         grad_scale=None, found_inf=None, stochastic_rounding=False, seed=0):
    r"""SGD, heavy-ball momentum, dampening and Nesterov momentum (Sutskever et al. 2013).

    In the notation of ``fusedopt.ops`` and ``rules/sgd.h``::

        g               <- (maximize ? -g : g) + weight_decay * p
        momentum_buffer <- g                                         (first step)
        momentum_buffer <- momentum * momentum_buffer + (1 - dampening) * g
        g               <- g + momentum * momentum_buffer  (nesterov)  or  momentum_buffer
        p               <- p - lr * g
    """
    s = _scalars.sgd(step=step, lr=lr, momentum=momentum, dampening=dampening,
                     weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
    lists = [("params", params, True), ("grads", grads, False)]
    if s.momentum != 0:
        lists.append(("momentum_buffers", momentum_buffers, True))
    _checks.check_rule_lists(lists, master_params)
    sr = _checks.rounding(params, stochastic_rounding, seed)
    skip, scale = _amp(grad_scale, found_inf)
    if skip:
        return
    for i, (p16, g) in enumerate(zip(params, grads)):
        p, g = _widen(p16, g, master_params, i)
        k = _scalars.cast(s, p.dtype)
        g = _grad(_unscaled(g, p, scale), p, k, maximize, weight_decay)
        if s.momentum != 0:
            momentum_buffer = _load(momentum_buffers[i])
            if s.first_step:
                momentum_buffer[...] = g
            else:
                momentum_buffer[...] = k.momentum * momentum_buffer + k.one_minus_dampening * g
            g = g + k.momentum * momentum_buffer if nesterov else momentum_buffer
            _store(momentum_buffers[i], momentum_buffer)
        p[...] = p - k.lr * g
        _narrow(p16, p, quant.sr_key(seed, step, i) if sr else None)


def adagrad_(params, grads, state_sums, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
             eps=1e-10, eps_root=0.0, maximize=False, master_params=None,
             grad_scale=None, found_inf=None, stochastic_rounding=False, seed=0):
    r"""Adagrad (Duchi, Hazan & Singer 2011).

    In the notation of ``fusedopt.ops`` and ``rules/adagrad.h``::

        lr_t = lr / (1 + (t - 1) * lr_decay)
        sum  <- sum + g * g
        p    <- p - lr_t * (g / (sqrt(sum + eps_root) + eps))
    """
    s = _scalars.adagrad(step=step, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         eps=eps, eps_root=eps_root, maximize=maximize)
    _checks.check_rule_lists([("params", params, True), ("grads", grads, False),
                              ("state_sums", state_sums, True)], master_params)
    sr = _checks.rounding(params, stochastic_rounding, seed)
    skip, scale = _amp(grad_scale, found_inf)
    if skip:
        return
    for i, (p16, g) in enumerate(zip(params, grads)):
        p, g = _widen(p16, g, master_params, i)
        sum_ = _load(state_sums[i])
        k = _scalars.cast(s, p.dtype)
        g = _grad(_unscaled(g, p, scale), p, k, maximize, weight_decay)
        sum_[...] = sum_ + g * g
        _store(state_sums[i], sum_)
        denom = np.sqrt(sum_ + k.eps_root) + k.eps
        p[...] = p - k.lr_t * (g / denom)
        _narrow(p16, p, quant.sr_key(seed, step, i) if sr else None)


def rmsprop_(params, grads, square_avgs, grad_avgs=None, momentum_buffers=None, *, step,
             lr=1e-2, alpha=0.99, eps=1e-8, eps_root=0.0, weight_decay=0.0, momentum=0.0,
             centered=False, maximize=False, master_params=None,
             grad_scale=None, found_inf=None, stochastic_rounding=False, seed=0):
    r"""RMSProp (Hinton, Coursera lecture 6e), centered form (Graves 2013), with momentum.

    In the notation of ``fusedopt.ops`` and ``rules/rmsprop.h``::

        square_avg      <- alpha * square_avg + (1 - alpha) * (g * g)
        grad_avg        <- alpha * grad_avg + (1 - alpha) * g                   (centered)
        denom            = sqrt(square_avg - grad_avg * grad_avg + eps_root) + eps
        momentum_buffer <- momentum * momentum_buffer + g / denom;  p <- p - lr * momentum_buffer
        p               <- p - lr * (g / denom)                                 (momentum == 0)
    """
    s = _scalars.rmsprop(step=step, lr=lr, alpha=alpha, eps=eps, eps_root=eps_root,
                         weight_decay=weight_decay, momentum=momentum, centered=centered,
                         maximize=maximize)
    lists = [("params", params, True), ("grads", grads, False),
             ("square_avgs", square_avgs, True)]
    if centered:
        lists.append(("grad_avgs", grad_avgs, True))
    _checks.centered_states(centered, square_avgs, grad_avgs)
    if s.momentum != 0:
        lists.append(("momentum_buffers", momentum_buffers, True))
    _checks.check_rule_lists(lists, master_params)
    sr = _checks.rounding(params, stochastic_rounding, seed)
    skip, scale = _amp(grad_scale, found_inf)
    if skip:
        return
    for i, (p16, g) in enumerate(zip(params, grads)):
        p, g = _widen(p16, g, master_params, i)
        square_avg = _load(square_avgs[i])
        k = _scalars.cast(s, p.dtype)
        g = _grad(_unscaled(g, p, scale), p, k, maximize, weight_decay)
        square_avg[...] = k.alpha * square_avg + k.one_minus_alpha * (g * g)
        _store(square_avgs[i], square_avg)
        var = square_avg
        if centered:
            grad_avg = _load(grad_avgs[i])
            grad_avg[...] = k.alpha * grad_avg + k.one_minus_alpha * g
            _store(grad_avgs[i], grad_avg)
            var = square_avg - grad_avg * grad_avg
        denom = np.sqrt(var + k.eps_root) + k.eps
        if s.momentum != 0:
            momentum_buffer = _load(momentum_buffers[i])
            momentum_buffer[...] = k.momentum * momentum_buffer + g / denom
            _store(momentum_buffers[i], momentum_buffer)
            p[...] = p - k.lr * momentum_buffer
        else:
            p[...] = p - k.lr * (g / denom)
        _narrow(p16, p, quant.sr_key(seed, step, i) if sr else None)


def adam_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, step, lr=1e-3,
          betas=(0.9, 0.999), eps=1e-8, eps_root=0.0, weight_decay=0.0,
          decoupled_weight_decay=False, amsgrad=False, maximize=False, master_params=None,
          grad_scale=None, found_inf=None, stochastic_rounding=False, seed=0):
    r"""Adam (Kingma & Ba 2015), AdamW (Loshchilov & Hutter 2019), AMSGrad (Reddi et al. 2018).

    In the notation of ``fusedopt.ops`` and ``rules/adam.h``::

        p              <- p * decay,  decay = 1 - lr * weight_decay   (decoupled weight decay)
        exp_avg        <- beta1 * exp_avg + (1 - beta1) * g
        exp_avg_sq     <- beta2 * exp_avg_sq + (1 - beta2) * (g * g)
        max_exp_avg_sq <- max(max_exp_avg_sq, exp_avg_sq)    (amsgrad; replaces exp_avg_sq below)
        v_hat = exp_avg_sq * inv_bias_correction2,  inv_bias_correction2 = 1 / (1 - beta2**t)
        p              <- p - step_size * exp_avg / (sqrt(v_hat + eps_root) + eps),
                          step_size = lr / (1 - beta1**t)

    (lr * m_hat / (sqrt(v_hat + eps_root) + eps) with m_hat = exp_avg / (1 - beta1**t): the
    bias corrections are folded into two float64 scalars, one division per element.)
    """
    s = _scalars.adam(step=step, lr=lr, betas=betas, eps=eps, eps_root=eps_root,
                      weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                      amsgrad=amsgrad, maximize=maximize)
    lists = [("params", params, True), ("grads", grads, False), ("exp_avgs", exp_avgs, True),
             ("exp_avg_sqs", exp_avg_sqs, True)]
    if amsgrad:
        lists.append(("max_exp_avg_sqs", max_exp_avg_sqs, True))
    _checks.check_rule_lists(lists, master_params)
    sr = _checks.rounding(params, stochastic_rounding, seed)
    skip, scale = _amp(grad_scale, found_inf)
    if skip:
        return
    decoupled = decoupled_weight_decay and weight_decay != 0
    for i, (p16, g) in enumerate(zip(params, grads)):
        p, g = _widen(p16, g, master_params, i)
        exp_avg, exp_avg_sq = _load(exp_avgs[i]), _load(exp_avg_sqs[i])
        k = _scalars.cast(s, p.dtype)
        g = _grad(_unscaled(g, p, scale), p, k, maximize,
                  0 if decoupled_weight_decay else weight_decay)
        if decoupled:
            p[...] = p * k.decay
        exp_avg[...] = k.beta1 * exp_avg + k.one_minus_beta1 * g
        exp_avg_sq[...] = k.beta2 * exp_avg_sq + k.one_minus_beta2 * (g * g)
        _store(exp_avgs[i], exp_avg)
        _store(exp_avg_sqs[i], exp_avg_sq)
        v = exp_avg_sq
        if amsgrad:
            v = _load(max_exp_avg_sqs[i])
            np.maximum(v, exp_avg_sq, out=v)
            _store(max_exp_avg_sqs[i], v)
        v_hat = v * k.inv_bias_correction2
        p[...] = p - k.step_size * exp_avg / (np.sqrt(v_hat + k.eps_root) + k.eps)
        _narrow(p16, p, quant.sr_key(seed, step, i) if sr else None)


def adamax_(params, grads, exp_avgs, exp_infs, *, step, lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
            weight_decay=0.0, maximize=False, master_params=None,
            grad_scale=None, found_inf=None, stochastic_rounding=False, seed=0):
    r"""AdaMax (Kingma & Ba 2015, section 7.1), the infinity-norm variant of Adam.

    In the notation of ``fusedopt.ops`` and ``rules/adamax.h``::

        exp_avg <- beta1 * exp_avg + (1 - beta1) * g
        exp_inf <- max(beta2 * exp_inf, |g| + eps)
        p       <- p - step_size * (exp_avg / exp_inf),   step_size = lr / (1 - beta1**t)
    """
    s = _scalars.adamax(step=step, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        maximize=maximize)
    _checks.check_rule_lists([("params", params, True), ("grads", grads, False),
                              ("exp_avgs", exp_avgs, True), ("exp_infs", exp_infs, True)],
                             master_params)
    sr = _checks.rounding(params, stochastic_rounding, seed)
    skip, scale = _amp(grad_scale, found_inf)
    if skip:
        return
    for i, (p16, g) in enumerate(zip(params, grads)):
        p, g = _widen(p16, g, master_params, i)
        exp_avg, exp_inf = _load(exp_avgs[i]), _load(exp_infs[i])
        k = _scalars.cast(s, p.dtype)
        g = _grad(_unscaled(g, p, scale), p, k, maximize, weight_decay)
        exp_avg[...] = k.beta1 * exp_avg + k.one_minus_beta1 * g
        exp_inf[...] = np.maximum(k.beta2 * exp_inf, np.abs(g) + k.eps)
        _store(exp_avgs[i], exp_avg)
        _store(exp_infs[i], exp_inf)
        p[...] = p - k.step_size * (exp_avg / exp_inf)
        _narrow(p16, p, quant.sr_key(seed, step, i) if sr else None)


def global_norm(arrays):
    """L2 norm of all elements of a list of arrays, accumulated in float64.

    Mathematically sqrt(sum of x**2); the fused version sums in a fixed blocked order, so the
    two agree to rounding (about 1e-15 relative), not bit for bit.
    """
    _checks.check_lists([("arrays", arrays, False)])
    total = 0.0
    for a in arrays:
        x = a.astype(np.float64).ravel()
        total += float(np.dot(x, x))
    return float(np.sqrt(total))


def clip_by_global_norm_(arrays, max_norm, *, eps=1e-6, error_if_nonfinite=False):
    """Scale every array by min(1, max_norm / (norm + eps)); returns the norm before clipping.

    A non-finite norm scales by NaN (or 0), as torch.nn.utils.clip_grad_norm_ does, unless
    ``error_if_nonfinite`` asks for a ValueError instead.
    """
    max_norm = _checks.nonneg("max_norm", max_norm)
    eps = _checks.nonneg("eps", eps)
    _checks.flag("error_if_nonfinite", error_if_nonfinite)
    _checks.check_lists([("arrays", arrays, True)])
    norm = global_norm(arrays)
    if error_if_nonfinite and not np.isfinite(norm):
        raise ValueError(f"the global norm of arrays is {norm}; nothing was clipped")
    if norm + eps == 0.0:  # a zero norm (empty or all-zero arrays, eps == 0): nothing to clip
        return norm
    coef = max_norm / (norm + eps)
    if coef < 1.0 or not np.isfinite(norm):
        with np.errstate(invalid="ignore"):  # inf * 0 -> NaN, as intended
            for a in arrays:
                a[...] = a * a.dtype.type(coef)
    return norm


def lbfgs_direction(grad, s_list, y_list):
    r"""The L-BFGS direction ``d = -H grad`` by the two-loop recursion (Nocedal & Wright,
    *Numerical Optimization*, 2nd ed., Algorithm 7.4).

    ``s_list`` and ``y_list`` hold the pairs oldest to newest, ``s_i = x_{i+1} - x_i`` and
    ``y_i = g_{i+1} - g_i``; ``rho_i = 1 / (y_i . s_i)``. The initial matrix is ``gamma I`` with
    ``gamma = s . y / y . y`` of the newest pair; with no pairs, ``d = -grad``.

    .. math::
        q &\leftarrow g; \quad \text{for } i = k-1 \dots k-m:
            \ \alpha_i \leftarrow \rho_i s_i^T q, \ q \leftarrow q - \alpha_i y_i \\
        r &\leftarrow \gamma q; \quad \text{for } i = k-m \dots k-1:
            \ \beta \leftarrow \rho_i y_i^T r, \ r \leftarrow r + s_i (\alpha_i - \beta) \\
        d &= -r

    Arrays are flattened; the result has grad's shape and dtype (scalars are Python floats, so
    float32 stays float32).
    """
    g = np.asarray(grad)
    q = g.ravel().copy()
    s_list = [np.asarray(s).ravel() for s in s_list]
    y_list = [np.asarray(y).ravel() for y in y_list]
    if len(s_list) != len(y_list):
        raise ValueError(f"s_list has {len(s_list)} arrays but y_list has {len(y_list)}")
    k = len(s_list)
    rho = [1.0 / float(np.dot(y_list[i], s_list[i])) for i in range(k)]
    alpha = [0.0] * k
    for i in reversed(range(k)):
        alpha[i] = rho[i] * float(np.dot(s_list[i], q))
        q = q - alpha[i] * y_list[i]
    if k:
        gamma = float(np.dot(s_list[-1], y_list[-1])) / float(np.dot(y_list[-1], y_list[-1]))
        r = gamma * q
    else:
        r = q
    for i in range(k):
        beta = rho[i] * float(np.dot(y_list[i], r))
        r = r + (alpha[i] - beta) * s_list[i]
    return (-r).reshape(g.shape)


# --- The compact form of the L-BFGS direction ------------------------------------------------
# The NumPy twins, bit for bit, of the kernels _core.lbfgs_compact_{dots,coefficients,combine,
# direction} (csrc/cpu/lbfgs_compact.cpp): the same blocked float64 sums, the same loops.

#: Elements per block of every float64 blocked sum (``_core.reduce_block``).
REDUCE_BLOCK = 16384


def blocked_sums(terms):
    """The block sums of ``fusedopt/blocked_sum.h`` over a float64 vector of terms: blocks of
    ``REDUCE_BLOCK`` elements; in a block starting at ``lo`` element ``i`` goes to lane
    ``(i - lo) % 8``, each lane adds its terms in order starting from 0.0, and the lanes are
    combined as ``((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))``."""
    terms = np.asarray(terms, dtype=np.float64).ravel()
    sums = []
    zero = np.zeros(1)
    for lo in range(0, terms.size, REDUCE_BLOCK):
        blk = terms[lo:lo + REDUCE_BLOCK]
        a = [float(np.cumsum(np.concatenate([zero, blk[j::8]]))[-1]) for j in range(8)]
        sums.append(((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])))
    return sums


def blocked_dot(a, b):
    """sum(a * b) in float64 as every kernel takes it: the block sums of ``blocked_sums`` added
    in block order from 0.0."""
    total = 0.0
    for s in blocked_sums(np.asarray(a, np.float64).ravel() * np.asarray(b, np.float64).ravel()):
        total = total + s
    return total


def _ring_rows(s, head, count):
    m = s.shape[0]
    return [(head + k) % m for k in range(count)]


def lbfgs_compact_dots(s, y, g, head, count, gram_row=-1):
    """The first pass of the compact-form direction: ``[s_k . g] + [y_k . g]`` over the pairs
    ``k`` oldest first (ring rows ``(head + k) % m`` of the ``(m, n)`` arrays ``s``, ``y``), and
    with ``gram_row = r >= 0`` also ``[s_k . y_r] + [y_k . y_r]`` (the new column of S^T Y and
    Y^T Y). Each dot is ``blocked_dot``; float64 array of 2 or 4 ``count`` entries."""
    rows = _ring_rows(s, head, count)
    vs = [g] + ([y[gram_row]] if gram_row >= 0 else [])
    out = []
    for v in vs:
        out += [blocked_dot(s[r], v) for r in rows] + [blocked_dot(y[r], v) for r in rows]
    return np.array(out, dtype=np.float64)


def lbfgs_compact_coefficients(dots, sy, yy, head, count):
    r"""The 2m x 2m algebra of the compact form (Byrd, Nocedal & Schnabel 1994, eq. 2.6;
    Nocedal & Wright eq. 7.24), in float64, loops in the kernel's order:

    .. math::
        H = \gamma I + [S\ \gamma Y]
            \begin{bmatrix} R^{-T}(D + \gamma Y^TY)R^{-1} & -R^{-T} \\ -R^{-1} & 0 \end{bmatrix}
            [S\ \gamma Y]^T

    with R the upper triangle of S^T Y (``sy[i, j] = s_i . y_j``, ring indexing), D its diagonal
    and ``gamma = s.y / y.y`` of the newest pair. From ``dots = [S^T g, Y^T g]``:
    ``p = R^{-1} S^T g``, ``a = R^{-T} (D p + gamma (Y^T Y p - Y^T g))``; returns
    ``(cs, cy, gamma)`` with ``cs = -a``, ``cy = gamma p``, so that
    ``-H g = -gamma g + S cs + Y cy``."""
    c = int(count)
    o = _ring_rows(sy, head, c)
    if c == 0:
        return np.zeros(0), np.zeros(0), 1.0
    R = [[float(sy[o[i], o[j]]) for j in range(c)] for i in range(c)]
    YY = [[float(yy[o[i], o[j]]) for j in range(c)] for i in range(c)]
    u = [float(v) for v in dots[:c]]
    w = [float(v) for v in dots[c:2 * c]]
    gamma = R[c - 1][c - 1] / YY[c - 1][c - 1]
    p = [0.0] * c
    for i in reversed(range(c)):
        t = u[i]
        for j in range(i + 1, c):
            t = t - R[i][j] * p[j]
        p[i] = t / R[i][i]
    a = [0.0] * c
    for i in range(c):
        q = 0.0
        for j in range(c):
            q = q + YY[i][j] * p[j]
        t = R[i][i] * p[i] + gamma * (q - w[i])
        for j in range(i):
            t = t - R[j][i] * a[j]
        a[i] = t / R[i][i]
    return (np.array([-v for v in a]), np.array([gamma * v for v in p]), gamma)


def lbfgs_compact_combine(out, g, s, y, head, count, cs, cy, gamma):
    """The second pass: ``out = (-gamma) g``, then ``out = (out + cs[k] s_k) + cy[k] y_k`` for
    k oldest first (coefficients cast to out's dtype once, arithmetic in that dtype; no pair:
    ``out = -g``); returns ``g . out`` (``blocked_dot``)."""
    dt = out.dtype.type
    gv = np.asarray(g).ravel()
    rows = _ring_rows(s, head, count)
    if not rows:
        o = -gv
    else:
        o = dt(-gamma) * gv
        for k, r in enumerate(rows):
            o = (o + dt(cs[k]) * s[r]) + dt(cy[k]) * y[r]
    out[...] = o.reshape(out.shape)
    return blocked_dot(gv, o)


def lbfgs_compact_direction(out, grad, s, y, sy, yy, head, count, gram_row=-1):
    """``out = -H grad`` through the compact form: ``lbfgs_compact_dots`` (the new Gram column
    of ``gram_row`` written into ``sy``, ``yy`` first), ``lbfgs_compact_coefficients``,
    ``lbfgs_compact_combine``; returns ``grad . out``. The bits of
    ``_core.lbfgs_compact_direction``; mathematically ``lbfgs_direction`` (the two-loop)."""
    dots = lbfgs_compact_dots(s, y, grad, head, count, gram_row)
    c = int(count)
    if gram_row >= 0:
        for k, r in enumerate(_ring_rows(s, head, c)):
            sy[r, gram_row] = dots[2 * c + k]
            yy[r, gram_row] = yy[gram_row, r] = dots[3 * c + k]
    cs, cy, gamma = lbfgs_compact_coefficients(dots, sy, yy, head, c)
    return lbfgs_compact_combine(out, grad, s, y, head, c, cs, cy, gamma)


__all__ += ["blocked_sums", "blocked_dot", "lbfgs_compact_dots", "lbfgs_compact_coefficients",
            "lbfgs_compact_combine", "lbfgs_compact_direction"]


def lbfgsb_gram_at(s, y, idx, rows, q=None):
    """The Gram matrices ``(S S^T, S Y^T, Y Y^T)`` of the first ``rows`` rows of the (m, n)
    history ``s``, ``y`` over the columns ``idx`` (strictly increasing), summed as
    ``_core.lbfgsb_gram_blocks`` does (bit for bit, however its partials were updated): per
    block of ``REDUCE_BLOCK`` elements of x, the ``blocked_dot`` of the block's gathered
    columns (lanes by position in that sub-list); the blocks added in block order from 0.0.
    With q (values at idx): ``(gram, [S q] + [Y q])`` summed the same way."""
    idx = np.asarray(idx, np.int64)
    n = s.shape[1]
    cuts = np.searchsorted(idx, np.arange(0, n + REDUCE_BLOCK, REDUCE_BLOCK))
    subs = [idx[cuts[b]:cuts[b + 1]] for b in range(-(-n // REDUCE_BLOCK))]

    def by_blocks(a, b):
        """sum over the blocks, in order from 0.0, of blocked_dot(a(block), b(block))."""
        total = 0.0
        for blk, at in enumerate(subs):
            total = total + blocked_dot(a(blk, at), b(blk, at))
        return total

    gram = np.zeros((3, rows, rows))
    for c, (u, v) in enumerate([(s, s), (s, y), (y, y)]):
        for i in range(rows):
            for j in range(rows):
                gram[c, i, j] = by_blocks(lambda _, at: u[i, at], lambda _, at: v[j, at])
    if q is None:
        return gram
    q = np.asarray(q)
    dots = np.array([by_blocks(lambda _, at: u[j, at], lambda b, _: q[cuts[b]:cuts[b + 1]])
                     for u in (s, y) for j in range(rows)])
    return gram, dots


__all__ += ["lbfgsb_gram_at"]
