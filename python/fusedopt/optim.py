"""Optimizer classes with torch.optim's names and defaults, over lists of NumPy/CuPy arrays.

Layer: algorithms (calls ``fusedopt.ops`` or ``fusedopt.reference``, never ``_core``)::

    opt = fusedopt.optim.Adam(params, lr=1e-3)
    for batch in data:
        grads = compute_grads(params, batch)    # arrays aligned with params
        opt.step(grads)                          # params updated in place

Differences from torch.optim: ``step`` takes the gradients (NumPy arrays carry no ``.grad``);
``lr`` may be a float or a schedule, a callable of the number of steps already taken (0 for the
first step, as optax counts) returning the learning rate.

Parameter groups, as torch.optim's: ``params`` may be a list of dicts, each with ``"params"``
(arrays) and any of ``lr`` and the class's hyperparameters (Adagrad: also
``initial_accumulator_value``), which override the constructor's for that group::

    opt = fusedopt.optim.AdamW([{"params": weights}, {"params": biases, "weight_decay": 0.0}],
                               lr=1e-3, weight_decay=0.01)
    opt.step(weight_grads + bias_grads)          # grads aligned with opt.params, all groups

``opt.params`` lists every group's params in order; ``opt.param_groups[i]`` holds the group's
params and the values it sets, and may be changed between steps (``opt.param_groups[1]["lr"] =
...``); a value a group does not set is the optimizer's (``opt.lr``, ``opt.hyperparams``). One
kernel call per group; with several groups, every group's lists and hyperparameters are checked
before the first call. Each state array (``opt.state[name]``, aligned with ``opt.params``)
exists for every param when any group's options use it. ``state_dict()`` then has
``"param_groups"``: per group its ``"size"`` and the values it sets.

``backend="auto"`` runs the fused kernels of ``fusedopt.ops`` (C++ for NumPy arrays, CUDA for
CuPy arrays); ``backend="reference"`` runs ``fusedopt.reference``, the plain NumPy equations. Both
give the same bits.

Notation: in the update equations of each class, ``t`` is the number of the step being taken
(1 for the first), ``p`` a param, ``g`` its gradient, and every other name is a hyperparameter
(``beta1, beta2 = betas``) or a state array, named as its key in ``opt.state``; the rule
headers (``csrc/include/fusedopt/rules``) and ``fusedopt.ops`` use the same names.

Checkpoints: ``np.savez(f, **flatten_state_dict(opt.state_dict()))`` and
``opt.load_state_dict(unflatten_state_dict(np.load(f)))`` (no pickle); or ``pickle`` the
optimizer itself.

Fewer bytes of state: ``state_dtype="bfloat16"`` keeps every state in bfloat16 (math in
float32, rounded to nearest even on store), ``state_dtype="uint8"`` as Dettmers' blockwise 8-bit
state (``fusedopt.quant.QuantizedState``: uint8 codes of the dynamic map and a float32 absmax
per block of 256; signed map for ``exp_avg``, ``momentum_buffer`` and ``grad_avg``, unsigned for
the others) for tensors of at least ``quant.MIN_SIZE`` (4096) elements, float32 for smaller
ones; both per parameter group too, for float32, float16 and bfloat16 params. In
``state_dict()`` an 8-bit state is its codes under its name and its absmax in the list
``<name>_absmax``; ``load_state_dict`` converts what it is given into the optimizer's own
formats (a float32 checkpoint into an 8-bit optimizer is quantized, and back).
``stochastic_rounding=True`` (bfloat16 params) rounds the stored params with a counter-based
hash of ``seed``, the step and the element (the same bits for any thread count); group ``j``
uses ``group_seed(seed, j)``; the seed is in the state_dict.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union

import numpy as np

from . import _checks, _scalars, ops, quant, reference

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "LBFGS",
           "group_seed", "flatten_state_dict", "unflatten_state_dict"]

#: A learning rate: a float, or a schedule (a callable of the number of steps taken).
LearningRate = Union[float, Callable[[int], float]]
#: The backends: the fused kernels or the NumPy reference.
Backend = Literal["auto", "reference"]
#: How the state is stored: the math type, bfloat16, or blockwise 8-bit (``fusedopt.quant``).
StateDtype = Literal["float32", "bfloat16", "uint8"]
STATE_DTYPES = ("float32", "bfloat16", "uint8")
#: The states quantized with the signed dynamic map (first moments, momentum, RMSprop's
#: grad_avg); every other state is non-negative and takes the unsigned map.
SIGNED_STATES = frozenset({"exp_avg", "momentum_buffer", "grad_avg"})
#: Seeds of stochastic rounding: [0, SEED_LIMIT).
SEED_LIMIT = 2**63
#: The per-group keys that choose how the state is stored (not hyperparameters of the rule,
#: and not taken from a checkpoint: the optimizer converts a loaded state to its own).
_STORAGE = ("state_dtype", "stochastic_rounding")

_BACKENDS = {"auto": ops, "reference": reference}

# Documentation that several optimizers share, written once: ``_doc`` fills the placeholders
# ``<name>`` of a class docstring (continuation lines carry the docstring's 4-space indent).
_DOC_PIECES = {
    "params and lr": """\
params : array or list of arrays
        NumPy or CuPy arrays, float32, float64, float16 or bfloat16 (float32 states and math for
        these), C-contiguous, writeable; updated in place by ``step``. One array may be given
        alone.
    lr : float or callable, default {lr}
        The learning rate, >= 0; or a schedule (``fusedopt.schedules``), called with the number
        of steps already taken.""",
    "weight_decay": """\
weight_decay : float, default 0.0
        L2 penalty (added to ``g``), >= 0.""",
    "betas": """\
betas : tuple of 2 floats, default (0.9, 0.999)
        ``(beta1, beta2)``, each in [0, 1).""",
    "eps": """\
eps : float, default {eps}
        Added to the square root, >= 0.""",
    "eps_root": """\
eps_root : float, default 0.0
        Added inside the square root (optax), >= 0. Keyword only.""",
    "amsgrad": """\
amsgrad : bool, default False
        Use the running maximum of ``exp_avg_sq``.""",
    "adam moments": """\
exp_avg        <- beta1 * exp_avg + (1 - beta1) * g
        exp_avg_sq     <- beta2 * exp_avg_sq + (1 - beta2) * g * g
        max_exp_avg_sq <- max(max_exp_avg_sq, exp_avg_sq)   (amsgrad: used for exp_avg_sq below)
        p              <- p - lr * (exp_avg / (1 - beta1^t))
                                 / (sqrt(exp_avg_sq / (1 - beta2^t) + eps_root) + eps)

    State: ``exp_avg``, ``exp_avg_sq``, and ``max_exp_avg_sq`` with amsgrad, zeros at first.""",
    "shared parameters": """\
maximize : bool, default False
        Ascend the objective instead of descending (``g`` is negated first). Keyword only.
    backend : {{"auto", "reference"}}, default "auto"
        ``"auto"``: the fused kernels of ``fusedopt.ops``; ``"reference"``: the NumPy
        equations of ``fusedopt.reference``. The same bits. Keyword only.
    master_weights : bool, default False
        float16/bfloat16 params only: keep a float32 copy of each param in the state
        (``master_param``); the rule updates it and the param receives it rounded to nearest
        even. Without, each 16-bit param is widened, updated and rounded back. Keyword only.
    state_dtype : {{"float32", "bfloat16", "uint8"}}, default "float32"
        How the state is stored (also per parameter group). ``"float32"``: the math type (the
        param's dtype; float32 for 16-bit params). ``"bfloat16"``: bfloat16 arrays, the math in
        float32, rounded to nearest even on store. ``"uint8"``: Dettmers' blockwise 8-bit state
        (``fusedopt.quant``: codes of the dynamic map and a float32 absmax per block of 256),
        only for tensors of at least ``fusedopt.quant.MIN_SIZE`` (4096) elements; smaller ones
        keep float32 state. Both need float32, float16 or bfloat16 params; master weights stay
        float32. Keyword only.
    stochastic_rounding : bool, default False
        bfloat16 params only (also per parameter group): round the stored param to bfloat16
        stochastically (a counter-based hash of the seed, the step and the element: the same
        bits for any thread count) instead of to nearest even. Keyword only.
    seed : int or None, default None
        The seed of stochastic rounding, in [0, 2**63); None draws one from the OS. Kept in
        ``state_dict`` (``"seed"``), so that a resumed run is bit-identical. Keyword only.

    See ``Optimizer`` for ``step`` (AMP's ``grad_scale``/``found_inf``), ``state_dict``,
    checkpoints, threads and non-finite gradients.""",
}


def _doc(**defaults: str) -> Callable[[type], type]:
    """Fill in a class docstring's shared pieces, with the class's ``lr`` and ``eps``
    defaults."""

    def fill(cls: type) -> type:
        doc = cls.__doc__ or ""
        for name, text in _DOC_PIECES.items():
            if f"<{name}>" in doc:
                doc = doc.replace(f"<{name}>", text.format(**defaults))
        cls.__doc__ = doc
        return cls

    return fill


def _param_list(params: Any) -> list[Any]:
    if isinstance(params, (list, tuple)):
        params = list(params)
    elif hasattr(params, "dtype") and hasattr(params, "shape"):
        params = [params]
    else:
        try:
            params = list(params)
        except TypeError:
            raise TypeError(
                f"params must be a list of arrays, got {type(params).__name__}") from None
    if not params:
        raise ValueError("params is an empty list")
    kind = type(params[0])
    if not (kind is np.ndarray or kind.__module__.startswith("cupy")):
        raise TypeError(f"params[0] must be a numpy or cupy ndarray, got {kind.__name__}")
    _checks.check_lists([("params", params, True)], array_type=kind, dtypes=_checks.PARAM_DTYPES)
    return params


def _is_groups(params: Any) -> bool:
    """Whether ``params`` is a list of parameter groups (dicts) rather than of arrays."""
    return isinstance(params, (list, tuple)) and any(isinstance(g, Mapping) for g in params)


def _plain(v: Any) -> Any:
    """A value as state_dict() holds it: 0-d arrays and NumPy scalars as Python scalars, 1-d
    arrays and lists (``betas``) as tuples of Python scalars."""
    if isinstance(v, np.ndarray) and v.ndim == 1:
        return tuple(x.item() for x in v)
    if isinstance(v, list):
        return tuple(_plain(x) for x in v)
    if isinstance(v, (np.ndarray, np.generic)) and np.ndim(v) == 0:
        return v.item()
    return v


def _bfloat16() -> np.dtype:
    """``ml_dtypes.bfloat16``, imported on first use (only bfloat16 arrays need it)."""
    try:
        import ml_dtypes  # noqa: PLC0415 -- optional
    except ImportError as e:
        raise ImportError("bfloat16 state needs ml_dtypes: pip install ml_dtypes") from e
    return np.dtype(ml_dtypes.bfloat16)


def check_state_dtype(where: str, v: Any) -> str:
    """``v`` if it names a state format (ValueError naming ``where`` otherwise)."""
    if not isinstance(v, str) or v not in STATE_DTYPES:
        raise ValueError(f"{where} must be one of {', '.join(map(repr, STATE_DTYPES))}, got {v!r}")
    return v


def check_seed(where: str, v: Any) -> int:
    """A seed of stochastic rounding: an int in [0, 2**63)."""
    seed = _checks.integer(where, v, minimum=0)
    if seed >= SEED_LIMIT:
        raise ValueError(f"{where} must be < 2**63, got {seed}")
    return seed


def new_seed() -> int:
    """A seed drawn from the OS (``os.urandom``)."""
    return int.from_bytes(os.urandom(8), "little") % SEED_LIMIT


def group_seed(seed: int, j: int) -> int:
    """The seed that parameter group ``j``'s kernel calls pass to stochastic rounding.

    The hash of stochastic rounding counts tensors within one kernel call, and each group is
    one call: the groups' seeds are ``seed`` for the first group, then apart by the
    golden-ratio constant 0x9E3779B97F4A7C15 (mod 2**63), so that tensor ``i`` of two groups
    does not get the same random bits at the same step. ``fusedopt.torch`` does the same.

    Parameters
    ----------
    seed : int
        The optimizer's seed, in [0, 2**63).
    j : int
        The group's index, >= 0.

    Returns
    -------
    int
        In [0, 2**63).

    Examples
    --------
    >>> group_seed(5, 0), group_seed(5, 1) == (5 + 0x9E3779B97F4A7C15) % 2**63
    (5, True)
    """
    return (seed + j * 0x9E3779B97F4A7C15) % SEED_LIMIT


def state_format(state_dtype: str, size: int, name: str) -> str:
    """How the state ``name`` of a param of ``size`` elements is stored: ``"full"`` (the math
    type: float32 for 16-bit params, else the param's dtype), ``"bfloat16"`` or ``"uint8"``.
    Master weights are always full; 8-bit state only for tensors of at least
    ``quant.MIN_SIZE`` elements."""
    if name == "master_param" or state_dtype == "float32":
        return "full"
    if state_dtype == "uint8" and size < quant.MIN_SIZE:
        return "full"
    return state_dtype


def check_storage(where: str, params: Sequence[Any], state_dtype: str,
                  stochastic_rounding: bool, centered: bool = False) -> None:
    """bfloat16/8-bit state needs float32 math (no float64 params); stochastic rounding needs
    bfloat16 params; centered RMSprop refuses 8-bit state (ValueError naming the option)."""
    if centered and state_dtype == "uint8":
        raise ValueError(f"{where}state_dtype='uint8': {_checks.CENTERED_8BIT}")
    for i, p in enumerate(params):
        if state_dtype != "float32" and p.dtype == np.float64:
            raise ValueError(f"{where}state_dtype={state_dtype!r} needs float32, float16 or "
                             f"bfloat16 params (float32 math); params[{i}] is float64")
        if stochastic_rounding and p.dtype.name != "bfloat16":
            raise ValueError(f"{where}stochastic_rounding rounds bfloat16 params; params[{i}] "
                             f"has dtype {p.dtype}")


def math_dtype(p: Any) -> np.dtype:
    """The dtype of a param's full-precision state: float32 for 16-bit params."""
    return np.dtype(np.float32) if _checks.is_16bit(p.dtype) else np.dtype(p.dtype)


def convert_state(where: str, a: Any, absmax: Any, fmt: str, name: str, p: Any) -> Any:
    """New NumPy storage of one state of param ``p`` in format ``fmt`` (see ``state_format``),
    from a saved one: an array of the math type, a bfloat16 array, or uint8 codes with their
    float32 ``absmax``. The same format is copied exactly; another goes through float32
    (dequantized, or widened exactly) and is stored as ``fmt`` wants (quantized, or rounded to
    nearest even). Raises ValueError naming ``where`` on a wrong shape, dtype or absmax, and
    TypeError on an array-like that cannot be converted."""
    full = math_dtype(p)
    dtype = getattr(a, "dtype", None)
    kind = "uint8" if dtype == np.uint8 else "bfloat16" if getattr(dtype, "name", None) == \
        "bfloat16" else "full" if dtype == full else None
    if getattr(a, "shape", None) != p.shape or kind is None or \
            (kind != "full" and full != np.float32):
        also = " (or bfloat16, or uint8 codes with an absmax)" if full == np.float32 else ""
        raise ValueError(f"{where} must have shape {p.shape} and dtype {full}{also}")
    if kind == "uint8":
        blocks = quant.blocks(p.size)
        if getattr(absmax, "dtype", None) != np.float32 or np.shape(absmax) != (blocks,):
            raise ValueError(f"{where} holds 8-bit codes: its absmax ({where}_absmax) must be "
                             f"a float32 array of {blocks} blocks, got "
                             f"{'none' if absmax is None else np.shape(absmax)}")
    try:
        a = np.array(a, copy=True)
        if kind == "uint8":
            absmax = np.array(absmax, dtype=np.float32, copy=True)
    except Exception as e:  # anything the array-like raises: the argument is bad
        raise TypeError(f"{where} could not be converted to an array: "
                        f"{type(e).__name__}: {e}") from e
    signed = name in SIGNED_STATES
    if kind == "uint8":
        q = quant.QuantizedState(a, absmax, signed)
        if fmt == "uint8":
            return q
        x = quant.dequantize(q)
    elif kind == fmt:
        return a
    else:
        x = a.astype(np.float32)   # exact for bfloat16 (and float32 itself)
    if fmt == "uint8":
        return quant.quantize(x, signed)
    if fmt == "bfloat16":
        return x.astype(_bfloat16())
    return x.astype(full)


def _is_array(a: Any) -> bool:
    """A NumPy or CuPy array (not a ``quant.QuantizedState``)."""
    return hasattr(a, "dtype") and hasattr(a, "flags")


def _host(a: Any) -> Any:
    """A CuPy array copied to the host; anything else as it is."""
    return a.get() if type(a).__module__.startswith("cupy") and hasattr(a, "get") else a


def _to_device(b: Any, like: Any) -> Any:
    """A CuPy copy of the host state ``b`` (an array or a ``quant.QuantizedState``), for the
    CuPy param ``like``."""
    from ._cuda import runtime  # noqa: PLC0415 -- CuPy is optional: reached through _cuda

    cupy = runtime.cupy()
    if isinstance(b, quant.QuantizedState):
        return quant.QuantizedState(cupy.asarray(b.codes), cupy.asarray(b.absmax), b.signed)
    return cupy.asarray(b)


def _amp_value(name: str, x: Any) -> float:
    """The one float32 of ``grad_scale``/``found_inf``, read on the host."""
    if not (hasattr(x, "dtype") and hasattr(x, "reshape")):
        raise TypeError(f"{name} must be a float32 array of one element, got {type(x).__name__}")
    if x.dtype != np.float32 or x.size != 1:
        raise TypeError(f"{name} must be a float32 array of one element, got dtype {x.dtype} "
                        f"and {x.size} elements")
    return float(x.reshape(-1)[0])


class Optimizer:
    """Base class of the optimizers: holds the params, the learning rate (a float or a
    schedule), the hyperparameters and the state arrays; implements ``step``, ``state_dict``
    and ``load_state_dict``. Subclasses define the update rule.

    Attributes
    ----------
    params : list of arrays
        The arrays updated in place.
    lr : float or callable
        The learning rate or schedule given.
    hyperparams : dict
        The other constructor arguments, by name (``betas``, ``eps``...).
    state : dict of str to list of arrays
        The state arrays, one list per name (``exp_avg``...), aligned with ``params``.
    step_count : int
        The number of steps taken (read only).
    backend : str
        ``"auto"`` or ``"reference"``.
    state_dtype : str
        ``"float32"``, ``"bfloat16"`` or ``"uint8"`` (a group's own value overrides it).
    stochastic_rounding : bool
        Whether bfloat16 params are rounded stochastically (a group's own value overrides it).
    seed : int
        The seed of stochastic rounding (given, or drawn from the OS).

    Notes
    -----
    **Steps.** ``step(grads)`` takes the gradients, a list aligned with ``params``, and updates
    every param and state array in place; it checks everything first and raises
    TypeError/ValueError, changing nothing, on any bad input.

    **AMP.** ``step(grads, grad_scale=s, found_inf=f)``, with ``s`` and ``f`` float32 arrays
    of one element (NumPy or, with CuPy params, on the device): when ``f != 0`` nothing changes
    and the step count does not advance (as ``torch.cuda.amp.GradScaler`` skips
    ``optimizer.step``); otherwise the rule sees ``g / s``. Deciding whether the count
    advances reads ``f`` on the host: one float, one device sync with CuPy arrays. Fill ``f``
    with ``fusedopt.ops.found_inf_(grads, f)``.

    **Non-finite gradients.** A NaN or infinite gradient makes the params and the state NaN or
    infinite, for good: the rules do not check. Use AMP's ``found_inf`` above to skip such a
    step (no second pass over memory), or ``fusedopt.ops.clip_by_global_norm_`` with
    ``error_if_nonfinite=True``.

    **Threads.** Each optimizer holds a lock: ``step``, ``state_dict`` and ``load_state_dict``
    called from several threads at once are serialized, each happens whole, in some order (no
    update is lost). The kernels themselves release the GIL, so different optimizers step in
    parallel.

    **Checkpoints.** ``state_dict()`` is a copy: ``{"step": int, "lr": float or None (a
    schedule), "hyperparams": dict, "state": {name: [arrays]}}`` (8-bit states as codes and
    ``<name>_absmax``; and ``"seed"`` with stochastic rounding); ``load_state_dict`` restores
    it (a resumed run continues bit for bit, a schedule from the saved step count) and accepts
    0-d arrays where scalars are expected. ``flatten_state_dict`` turns it into a flat dict of
    NumPy arrays for ``np.savez`` and ``unflatten_state_dict`` back. Optimizers also survive
    ``pickle`` and ``copy.deepcopy`` (the copy holds copies of the params).
    """

    def __init__(self, params: Any, lr: LearningRate, backend: Backend = "auto",
                 master_weights: bool = False, *, state_dtype: StateDtype = "float32",
                 stochastic_rounding: bool = False, seed: int | None = None,
                 **hyperparams: Any) -> None:
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be 'auto' or 'reference', got {backend!r}")
        self.backend = backend
        self.master_weights = _checks.flag("master_weights", master_weights)
        self.state_dtype: str = check_state_dtype("state_dtype", state_dtype)
        self.stochastic_rounding = _checks.flag("stochastic_rounding", stochastic_rounding)
        self.seed: int = new_seed() if seed is None else check_seed("seed", seed)
        if not callable(lr):
            lr = _checks.nonneg("lr", lr)
        self.lr: LearningRate = lr
        self.hyperparams: dict[str, Any] = {k: _plain(v) for k, v in hyperparams.items()}
        self._grouped = _is_groups(params)
        if self._grouped:
            self.param_groups: list[dict[str, Any]] = [
                self._group(g, f"params[{j}]") for j, g in enumerate(params)]
            self.params: list[Any] = [p for g in self.param_groups for p in g["params"]]
            _checks.check_lists([("params", self.params, True)],
                                array_type=type(self.params[0]), dtypes=_checks.PARAM_DTYPES)
        else:
            self.params = _param_list(params)
            self.param_groups = [{"params": list(self.params)}]
        if self.master_weights:
            for i, p in enumerate(self.params):
                if not _checks.is_16bit(p.dtype):
                    raise TypeError("master_weights: float32 master weights belong to float16 "
                                    f"or bfloat16 params; params[{i}] has dtype {p.dtype}")
        for j, g in enumerate(self.param_groups):
            check_storage(f"params[{j}]: " if self._grouped else "", g["params"],
                          *self._storage(g),
                          centered=bool(g.get("centered", self.hyperparams.get("centered"))))
        self._step = 0
        self._lock = threading.Lock()
        # Checks every hyperparameter now rather than at the first step.
        for g in self.param_groups:
            glr = self._group_lr_value(g)
            self._scalars(1, 0.0 if callable(glr) else glr, self._group_hp(g))
        self.state: dict[str, list[Any]] = {
            name: [self._new_state(p, name, g) for g in self.param_groups for p in g["params"]]
            for name in self._all_state_names(self.param_groups)}

    # -- to be provided by subclasses ---------------------------------------------------------
    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        raise NotImplementedError

    def _scalars(self, step: int, lr: float, hp: Mapping[str, Any]) -> Any:
        """Checks the hyperparameters (raises) for the given step and lr."""
        raise NotImplementedError

    def _update(self, params: list[Any], grads: list[Any], state: Mapping[str, list[Any]],
                step: int, lr: float, hp: Mapping[str, Any], **amp: Any) -> None:
        """One kernel call for ``params`` (one group) with its state lists and
        hyperparameters."""
        raise NotImplementedError

    def _initial_value(self, name: str, group: Mapping[str, Any]) -> float:
        return 0.0

    #: Keys a parameter group may set besides ``params``, ``lr`` and the hyperparameters.
    _GROUP_EXTRA: tuple[str, ...] = ()

    # -- parameter groups ---------------------------------------------------------------------
    def _group(self, g: Any, where: str) -> dict[str, Any]:
        """A checked parameter group: ``{"params": [arrays], <the values it sets>}``."""
        if not isinstance(g, Mapping) or "params" not in g:
            raise TypeError(f"{where} must be a dict with a 'params' key (a parameter group), "
                            f"got {type(g).__name__}")
        out: dict[str, Any] = {"params": _param_list(g["params"])}
        for k, v in g.items():
            if k == "params":
                continue
            if k != "lr" and k not in self.hyperparams and k not in self._GROUP_EXTRA and \
                    k not in _STORAGE:
                raise ValueError(f"{where}: {k!r} is not a hyperparameter of "
                                 f"{type(self).__name__}")
            if k == "state_dtype":
                out[k] = check_state_dtype(f"{where}['state_dtype']", v)
            elif k == "stochastic_rounding":
                out[k] = _checks.flag(f"{where}['stochastic_rounding']", v)
            elif k == "lr":
                out[k] = v if callable(v) else _checks.nonneg(f"{where}['lr']", v)
            elif k in self._GROUP_EXTRA:
                out[k] = _checks.nonneg(f"{where}[{k!r}]", v)
            else:
                out[k] = _plain(v)
        return out

    def _group_hp(self, group: Mapping[str, Any],
                  base: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The hyperparameters of a group: its own values over the optimizer's (or
        ``base``)."""
        hp = dict(self.hyperparams if base is None else base)
        hp.update((k, v) for k, v in group.items() if k in hp)
        return hp

    def _storage(self, group: Mapping[str, Any]) -> tuple[str, bool]:
        """A group's ``(state_dtype, stochastic_rounding)``: its own, else the optimizer's."""
        return (group.get("state_dtype", self.state_dtype),
                group.get("stochastic_rounding", self.stochastic_rounding))

    def _rounding(self, j: int, group: Mapping[str, Any]) -> dict[str, Any]:
        """The stochastic-rounding keywords of group ``j``'s kernel call (none without)."""
        if not self._storage(group)[1]:
            return {}
        return {"stochastic_rounding": True, "seed": group_seed(self.seed, j)}

    def _group_lr_value(self, group: Mapping[str, Any]) -> LearningRate:
        return group.get("lr", self.lr)

    def _group_lr(self, group: Mapping[str, Any]) -> float:
        """The learning rate a group's next step uses (its own, else the optimizer's)."""
        lr = self._group_lr_value(group)
        if callable(lr):
            return _checks.nonneg("lr (the schedule's value)", lr(self._step))
        return lr

    def _all_state_names(self, groups: Sequence[Mapping[str, Any]],
                         base: Mapping[str, Any] | None = None) -> tuple[str, ...]:
        """The state arrays of every group (each param has them all; a group whose options
        do not use one keeps it untouched), and ``master_param`` with master weights."""
        names: dict[str, None] = {}
        for g in groups:
            names.update(dict.fromkeys(self._state_names(self._group_hp(g, base))))
        return tuple(names) + (("master_param",) if self.master_weights else ())

    def _loaded_groups(self, saved: Any) -> list[dict[str, Any]]:
        """The parameter groups of ``state_dict["param_groups"]``, checked against ours (one
        entry per group, the same sizes; an ``lr`` of None keeps our schedule)."""
        where = "state_dict['param_groups']"
        if not isinstance(saved, (list, tuple)) or len(saved) != len(self.param_groups):
            raise ValueError(f"{where} must be a list of {len(self.param_groups)} groups")
        out = []
        for j, (g, ours) in enumerate(zip(saved, self.param_groups)):
            if not isinstance(g, Mapping) or _plain(g.get("size")) != len(ours["params"]):
                raise ValueError(f"{where}[{j}] must be a dict with 'size' "
                                 f"{len(ours['params'])}")
            values = {k: v for k, v in g.items() if k not in ("size", "lr", *_STORAGE)}
            new = self._group({"params": ours["params"], **values}, f"{where}[{j}]")
            new.update((k, ours[k]) for k in _STORAGE if k in ours)   # ours, not the saved
            if "lr" in g and _plain(g["lr"]) is not None:
                new["lr"] = _checks.nonneg(f"{where}[{j}]['lr']", _plain(g["lr"]))
            elif callable(ours.get("lr")):
                new["lr"] = ours["lr"]
            out.append(new)
        return out

    # -----------------------------------------------------------------------------------------
    @property
    def _impl(self) -> Any:
        """The backend module (looked up, not stored: an optimizer pickles without modules)."""
        return _BACKENDS[self.backend]

    def _new_state(self, p: Any, name: str, group: Mapping[str, Any]) -> Any:
        """A state array: float32 for float16/bfloat16 params (the master weights a copy of the
        param), else the param's dtype; bfloat16, or a ``quant.QuantizedState``, as the group's
        ``state_dtype`` says."""
        if name == "master_param":
            return p.astype(np.float32)
        dtype = np.float32 if _checks.is_16bit(p.dtype) else p.dtype
        v = self._initial_value(name, group)
        fmt = state_format(self._storage(group)[0], p.size, name)
        if fmt == "uint8":
            signed = name in SIGNED_STATES
            q = quant.zeros(p.shape, signed) if v == 0.0 else \
                quant.quantize(np.full(p.shape, v, np.float32), signed)
            return _to_device(q, p) if type(p).__module__.startswith("cupy") else q
        if fmt == "bfloat16":
            dtype = _bfloat16()
        return np.zeros_like(p, dtype=dtype) if v == 0.0 else np.full_like(p, v, dtype=dtype)

    @property
    def step_count(self) -> int:
        """Number of steps taken so far."""
        return self._step

    def current_lr(self) -> float:
        """The learning rate the next step will use (a schedule's value at ``step_count``);
        with parameter groups, the first group's."""
        return self._group_lr(self.param_groups[0])

    def _grad_list(self, grads: Any) -> list[Any]:
        if isinstance(grads, (list, tuple)):
            return list(grads)
        if hasattr(grads, "dtype") and len(self.params) == 1:
            return [grads]
        raise TypeError(f"grads must be a list of arrays, got {type(grads).__name__}")

    def step(self, grads: Sequence[Any] | Any, *, grad_scale: Any = None,
             found_inf: Any = None) -> None:
        """One update of every param.

        Parameters
        ----------
        grads : list of arrays, or one array when there is one param
            Aligned with ``params``: same shapes and dtypes. Read only.
        grad_scale, found_inf : float32 arrays of one element, optional (both or neither)
            AMP's loss scaling: when ``found_inf != 0`` nothing changes and ``step_count`` does
            not advance; otherwise the rule sees ``g / grad_scale``. ``found_inf`` is read on
            the host (a device sync with CuPy arrays).

        Raises TypeError/ValueError naming the argument, changing nothing, on any bad input.
        Steps from several threads are serialized (see the class notes).
        """
        grads = self._grad_list(grads)
        amp: dict[str, Any] = {}
        skip = False
        if grad_scale is not None or found_inf is not None:
            if grad_scale is None or found_inf is None:
                raise ValueError("grad_scale and found_inf go together: give both or neither")
            _amp_value("grad_scale", grad_scale)
            skip = _amp_value("found_inf", found_inf) != 0.0
            # Both backends take the pair: the step is skipped, or g / grad_scale, in one pass.
            amp = {"grad_scale": grad_scale, "found_inf": found_inf}
        with self._lock:
            self._step_groups(grads, amp)
            if not skip:
                self._step += 1

    def _step_groups(self, grads: list[Any], amp: dict[str, Any]) -> None:
        """One kernel call per parameter group; with several, every list, hyperparameter and
        learning rate is checked before the first call."""
        step = self._step + 1
        master = self.state.get("master_param")
        if len(self.param_groups) == 1:
            g = self.param_groups[0]
            if master is not None:
                amp = {**amp, "master_params": master}
            self._update(self.params, grads, self.state, step, self._group_lr(g),
                         self._group_hp(g), **amp, **self._rounding(0, g))
            return
        # The lists whose every array has the math type are checked as before; the others
        # (bfloat16 and 8-bit states) array by array.
        full = {k: v for k, v in self.state.items()
                if all(state_format(self._storage(g)[0], p.size, k) == "full"
                       for g in self.param_groups for p in g["params"])}
        _checks.check_lists(
            [("params", self.params, True), ("grads", grads, False)] +
            [(f"state['{k}']", v, True, _checks.MASTER if k == "master_param" else _checks.MATH)
             for k, v in full.items()],
            array_type=type(self.params[0]), dtypes=_checks.PARAM_DTYPES)
        for k, v in self.state.items():
            if k not in full:
                self._check_stored(k, v)
        calls, lo = [], 0
        for j, g in enumerate(self.param_groups):
            hi = lo + len(g["params"])
            lr, hp = self._group_lr(g), self._group_hp(g)
            self._scalars(step, lr, hp)
            extra = {} if master is None else {"master_params": master[lo:hi]}
            extra.update(self._rounding(j, g))
            calls.append((self.params[lo:hi], grads[lo:hi],
                          {k: v[lo:hi] for k, v in self.state.items()}, lr, hp, extra))
            lo = hi
        for params, gs, state, lr, hp, extra in calls:
            self._update(params, gs, state, step, lr, hp, **amp, **extra)

    def _check_stored(self, name: str, arrs: list[Any]) -> None:
        """Each state array of a list with bfloat16 or 8-bit states as the kernels take it (one
        may have been replaced since): an array of the math type or bfloat16 (float32 math),
        or a ``quant.QuantizedState`` (float32 math) of the param's shape, contiguous and
        writeable (ValueError naming ``state[name][i]``)."""
        for i, (a, p) in enumerate(zip(arrs, self.params)):
            full = math_dtype(p)
            if isinstance(a, quant.QuantizedState):
                ok = full == np.float32 and a.codes.shape == p.shape and \
                    a.absmax.shape == (quant.blocks(p.size),) and \
                    a.codes.flags.c_contiguous and a.absmax.flags.c_contiguous and \
                    a.codes.flags.writeable and a.absmax.flags.writeable
            else:
                ok = _is_array(a) and a.shape == p.shape and a.flags.c_contiguous and \
                    getattr(a.flags, "writeable", True) and \
                    (a.dtype == full or (full == np.float32 and a.dtype.name == "bfloat16"))
            if not ok:
                raise ValueError(f"state[{name!r}][{i}] is not a state of params[{i}] (shape "
                                 f"{p.shape}, dtype {p.dtype}): an array of {full}"
                                 + (", of bfloat16, or a quant.QuantizedState" if full ==
                                    np.float32 else "") + ", of its shape, contiguous and "
                                 "writeable")

    def state_dict(self) -> dict[str, Any]:
        """A copy of the optimizer's state: ``{"step": int, "lr": float, or None when lr is a
        schedule, "hyperparams": dict, "state": {name: list of arrays}}``, and ``"seed"``
        where a group rounds stochastically. An
        8-bit state is its codes (uint8) under its name and its absmax (float32) in the list
        ``<name>_absmax`` (None for the tensors whose state is not 8-bit); a bfloat16 state a
        bfloat16 array. See ``flatten_state_dict`` to save it with ``np.savez``."""
        with self._lock:
            state: dict[str, list[Any]] = {}
            for k, v in self.state.items():
                state[k] = [a.codes.copy() if isinstance(a, quant.QuantizedState) else a.copy()
                            for a in v]
                if any(isinstance(a, quant.QuantizedState) for a in v):
                    state[f"{k}_absmax"] = [a.absmax.copy() if isinstance(
                        a, quant.QuantizedState) else None for a in v]
            out: dict[str, Any] = {
                "step": self._step,
                "lr": None if callable(self.lr) else self.lr,
                "hyperparams": dict(self.hyperparams),
                "state": state,
            }
            if any(self._storage(g)[1] for g in self.param_groups):
                out["seed"] = self.seed
            if self._grouped:
                out["param_groups"] = [
                    {"size": len(g["params"]),
                     **{k: None if callable(v) else v for k, v in g.items() if k != "params"}}
                    for g in self.param_groups]
            return out

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()``: a resumed run continues bit for bit, and a schedule
        continues from the saved step count. 0-d arrays are accepted where scalars are
        expected (as ``unflatten_state_dict(np.load(f))`` gives them).

        Everything is checked and converted (into new arrays) before anything is changed: on
        TypeError/ValueError the optimizer is as it was. A float ``lr`` replaces a float lr; a
        schedule stays (``lr`` None in ``state_dict``: the saved one was a schedule).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        missing = {"step", "lr", "hyperparams", "state"} - set(state_dict.keys())
        if missing:
            raise ValueError(f"state_dict lacks {sorted(missing)}")
        step = _checks.integer("state_dict['step']", state_dict["step"], minimum=0)
        if step >= _checks.STEP_MAX:
            raise ValueError(f"state_dict['step'] must be < 2**63 - 1, got {step}")
        lr = _plain(state_dict["lr"])
        if lr is not None:
            lr = _checks.nonneg("state_dict['lr']", lr)
        hp = state_dict["hyperparams"]
        if not isinstance(hp, Mapping) or set(hp) != set(self.hyperparams):
            raise ValueError(
                f"state_dict['hyperparams'] must have the keys {sorted(self.hyperparams)}")
        hp = {k: _plain(hp[k]) for k in self.hyperparams}
        seed = self.seed
        if "seed" in state_dict:    # older checkpoints have none: ours is kept
            seed = check_seed("state_dict['seed']", _plain(state_dict["seed"]))
        groups = self.param_groups
        if self._grouped or "param_groups" in state_dict:
            groups = self._loaded_groups(state_dict.get("param_groups"))
        for g in groups:
            glr = g.get("lr", lr)
            self._scalars(1, 0.0 if glr is None or callable(glr) else glr,
                          self._group_hp(g, hp))
        names = self._all_state_names(groups, hp)
        st = state_dict["state"]
        if not isinstance(st, Mapping) or \
                set(st) - {f"{n}_absmax" for n in names} != set(names):
            raise ValueError(f"state_dict['state'] must have the arrays {sorted(names)} (and "
                             "<name>_absmax for 8-bit ones)")
        state = {name: self._converted(name, st[name], st.get(f"{name}_absmax"), groups)
                 for name in names}
        # Checked and converted: now apply, in steps that cannot fail.
        with self._lock:
            self.hyperparams = hp
            if lr is not None and not callable(self.lr):
                self.lr = lr
            self.param_groups = groups
            self.state = state
            self._step = step
            self.seed = seed

    def _converted(self, name: str, arrs: Any, absmaxes: Any,
                   groups: Sequence[Mapping[str, Any]]) -> list[Any]:
        """New state arrays holding ``arrs`` (with ``absmaxes`` for 8-bit codes) in the format
        of each param's group (checked: shape, dtype, absmax, conversion; see
        ``convert_state``)."""
        where = f"state_dict['state']['{name}']"
        n = len(self.params)
        if not isinstance(arrs, (list, tuple)) or len(arrs) != n:
            raise ValueError(f"{where} must be a list of {n} arrays")
        if absmaxes is not None and (not isinstance(absmaxes, (list, tuple)) or
                                     len(absmaxes) > n):
            raise ValueError(f"{where[:-2]}_absmax'] must be a list of at most {n} arrays")
        absmaxes = list(absmaxes or ()) + [None] * (n - len(absmaxes or ()))
        formats = [state_format(self._storage(g)[0], p.size, name)
                   for g in groups for p in g["params"]]
        out = []
        for i, (a, m, p, fmt) in enumerate(zip(arrs, absmaxes, self.params, formats)):
            b = convert_state(f"{where}[{i}]", _host(a), _host(m), fmt, name, p)
            if not isinstance(p, np.ndarray):
                b = _to_device(b, p)
            elif type(p) is not np.ndarray and not isinstance(b, quant.QuantizedState):
                c = np.empty_like(p, dtype=b.dtype)  # a subclass (the tests' CuPy double)
                c[...] = b
                b = c
            out.append(b)
        return out

    # -- pickle and copy: everything but the lock ----------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            d = dict(self.__dict__)
        del d["_lock"]
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams.items())
        return (f"{type(self).__name__}({len(self.params)} params, lr={self.lr!r}, {hp}, "
                f"backend={self.backend!r})")


def flatten_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A ``state_dict()`` as a flat dict of NumPy arrays, for ``np.savez(f, **flat)``.

    Keys: ``"step"`` (0-d int64), ``"lr"`` (0-d float64; absent when lr is a schedule),
    ``"seed"`` (0-d int64, with stochastic rounding), ``"hyperparams.<name>"`` (0-d arrays;
    ``betas`` a 1-d array of 2), and ``"state.<name>.<i>"`` for the i-th array of each state
    list (CuPy arrays are copied to the host; the None entries of an ``<name>_absmax`` list are
    left out).
    ``unflatten_state_dict`` inverts it (bfloat16 arrays, which ``np.load`` returns as 2-byte
    void arrays, are viewed as bfloat16 again); nothing needs ``allow_pickle``.

    Parameters
    ----------
    state_dict : dict
        What ``Optimizer.state_dict()`` returns.

    Returns
    -------
    dict of str to numpy.ndarray

    Examples
    --------
    >>> np.savez("ckpt.npz", **flatten_state_dict(opt.state_dict()))    # doctest: +SKIP
    >>> opt.load_state_dict(unflatten_state_dict(np.load("ckpt.npz")))  # doctest: +SKIP
    """
    flat = {"step": np.asarray(state_dict["step"], dtype=np.int64)}
    if state_dict["lr"] is not None:
        flat["lr"] = np.asarray(state_dict["lr"], dtype=np.float64)
    if state_dict.get("seed") is not None:
        flat["seed"] = np.asarray(state_dict["seed"], dtype=np.int64)
    for k, v in state_dict["hyperparams"].items():
        flat[f"hyperparams.{k}"] = np.asarray(v)
    for k, arrs in state_dict["state"].items():
        for i, a in enumerate(arrs):
            if a is not None:
                flat[f"state.{k}.{i}"] = a if isinstance(a, np.ndarray) else a.get()
    for j, g in enumerate(state_dict.get("param_groups", ())):
        for k, v in g.items():
            if v is not None:
                flat[f"param_groups.{j}.{k}"] = np.asarray(v)
    return flat


def unflatten_state_dict(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The nested ``state_dict`` of a flat one (``flatten_state_dict``, or the ``np.load`` of
    its ``np.savez``): scalars as Python scalars, ``betas`` as a tuple, arrays as they are.

    Parameters
    ----------
    flat : mapping of str to arrays
        A dict, or the ``NpzFile`` that ``np.load`` returns (read it before closing it).

    Returns
    -------
    dict
        For ``Optimizer.load_state_dict``.

    Raises ValueError on a key it does not know, a missing ``step`` or a state list with a gap.

    Examples
    --------
    >>> opt = Adam([np.zeros(2)], lr=0.1)
    >>> opt.step([np.ones(2)])
    >>> flat = flatten_state_dict(opt.state_dict())
    >>> sorted(flat)[:4]
    ['hyperparams.amsgrad', 'hyperparams.betas', 'hyperparams.eps', 'hyperparams.eps_root']
    >>> unflatten_state_dict(flat)["step"]
    1
    """
    if not hasattr(flat, "keys"):
        raise TypeError(f"flat must be a dict of arrays, got {type(flat).__name__}")
    out: dict[str, Any] = {"lr": None, "hyperparams": {}}
    lists: dict[str, dict[int, Any]] = {}
    groups: dict[int, dict[str, Any]] = {}
    for key in flat.keys():
        v = flat[key]
        head, _, rest = key.partition(".")
        j, _, name = rest.partition(".")
        if key in ("step", "lr", "seed"):
            out[key] = _plain(v)
        elif head == "hyperparams" and rest:
            out["hyperparams"][rest] = _plain(v)
        elif head == "param_groups" and j.isdigit() and name:
            groups.setdefault(int(j), {})[name] = _plain(v)
        elif head == "state" and rest.rpartition(".")[2].isdigit():
            name, _, i = rest.rpartition(".")
            if isinstance(v, np.ndarray) and v.dtype.kind == "V" and v.dtype.itemsize == 2:
                v = v.view(_bfloat16())     # np.save writes bfloat16 as 2-byte voids
            lists.setdefault(name, {})[int(i)] = v
        else:
            raise ValueError(f"flat has an unknown key {key!r}")
    if "step" not in out:
        raise ValueError("flat lacks 'step'")
    out["state"] = {}
    for name, by_index in lists.items():
        if name.endswith("_absmax"):   # None where a tensor's state is not 8-bit
            out["state"][name] = [by_index.get(i) for i in range(max(by_index) + 1)]
            continue
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(f"flat's state.{name}.<i> are not numbered 0..n-1")
        out["state"][name] = [by_index[i] for i in range(len(by_index))]
    if groups:
        if sorted(groups) != list(range(len(groups))):
            raise ValueError("flat's param_groups.<j> are not numbered 0..n-1")
        out["param_groups"] = [{"lr": None, **groups[j]} for j in range(len(groups))]
    return out


@_doc(lr="1e-3")
class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening and Nesterov momentum
    (``torch.optim.SGD``).

    At step ``t``, for every element::

        g               <- (-g if maximize else g) + weight_decay * p
        momentum_buffer <- g                                           (t = 1)
        momentum_buffer <- momentum * momentum_buffer + (1 - dampening) * g    (t > 1)
        g               <- g + momentum * momentum_buffer    (nesterov)  or  momentum_buffer
        p               <- p - lr * g

    The momentum lines apply when ``momentum != 0``; only then is there a state array,
    ``momentum_buffer``. ``SGD(params, lr, momentum=0.9, dampening=0.9)`` is the exponential
    moving average form ``v = 0.9 v + 0.1 g`` (after a first step that sets ``v = g``).

    Parameters
    ----------
    <params and lr>
    momentum : float, default 0.0
        >= 0.
    dampening : float, default 0.0
        In [0, 1].
    <weight_decay>
    nesterov : bool, default False
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    <shared parameters>

    Examples
    --------
    >>> w = np.zeros(3)
    >>> SGD([w], lr=0.1, momentum=0.9).step([w - 1.0])
    >>> w
    array([0.1, 0.1, 0.1])
    """

    def __init__(self, params: Any, lr: LearningRate = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                 maximize: bool = False, backend: Backend = "auto",
                 master_weights: bool = False, state_dtype: StateDtype = "float32",
                 stochastic_rounding: bool = False, seed: int | None = None) -> None:
        super().__init__(params, lr, backend, master_weights, state_dtype=state_dtype,
                         stochastic_rounding=stochastic_rounding, seed=seed, momentum=momentum,
                         dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)

    def _state_names(self, hp):
        return ("momentum_buffer",) if hp["momentum"] != 0 else ()

    def _scalars(self, step, lr, hp):
        return _scalars.sgd(step=step, lr=lr, **hp)

    def _update(self, params, grads, state, step, lr, hp, **amp):
        self._impl.sgd_(params, grads, state.get("momentum_buffer"), step=step, lr=lr, **hp,
                        **amp)


@_doc(lr="1e-2", eps="1e-10")
class Adagrad(Optimizer):
    """Adagrad (``torch.optim.Adagrad``; Duchi, Hazan & Singer 2011), with optax's
    ``eps_root`` inside the square root.

    At step ``t``, for every element::

        g   <- (-g if maximize else g) + weight_decay * p
        sum <- sum + g * g
        p   <- p - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(sum + eps_root) + eps)

    State: ``sum``, starting at ``initial_accumulator_value``.

    Parameters
    ----------
    <params and lr>
    lr_decay : float, default 0.0
        >= 0.
    <weight_decay>
    initial_accumulator_value : float, default 0.0
        The first value of ``sum``, >= 0.
    <eps>
    <eps_root>
    <shared parameters>

    Examples
    --------
    >>> opt = Adagrad([np.zeros(2)], lr=0.5, initial_accumulator_value=3.0)
    >>> opt.step([np.ones(2)])           # sum = 3 + 1: a step of 0.5 / 2
    >>> opt.params[0], opt.state["sum"][0]
    (array([-0.25, -0.25]), array([4., 4.]))
    """

    def __init__(self, params: Any, lr: LearningRate = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, eps_root: float = 0.0, maximize: bool = False,
                 backend: Backend = "auto", master_weights: bool = False,
                 state_dtype: StateDtype = "float32", stochastic_rounding: bool = False,
                 seed: int | None = None) -> None:
        self._init_acc = _checks.nonneg("initial_accumulator_value", initial_accumulator_value)
        super().__init__(params, lr, backend, master_weights, state_dtype=state_dtype,
                         stochastic_rounding=stochastic_rounding, seed=seed, lr_decay=lr_decay,
                         weight_decay=weight_decay, eps=eps, eps_root=eps_root,
                         maximize=maximize)

    _GROUP_EXTRA = ("initial_accumulator_value",)

    def _initial_value(self, name, group):
        return group.get("initial_accumulator_value", self._init_acc)

    def _state_names(self, hp):
        return ("sum",)

    def _scalars(self, step, lr, hp):
        return _scalars.adagrad(step=step, lr=lr, **hp)

    def _update(self, params, grads, state, step, lr, hp, **amp):
        self._impl.adagrad_(params, grads, state["sum"], step=step, lr=lr, **hp, **amp)


@_doc(lr="1e-2", eps="1e-8")
class RMSprop(Optimizer):
    """RMSprop (``torch.optim.RMSprop``; Hinton, lecture 6e): the centered variant (Graves
    2013), momentum, optax's ``eps_root``.

    At step ``t``, for every element::

        g               <- (-g if maximize else g) + weight_decay * p
        square_avg      <- alpha * square_avg + (1 - alpha) * g * g
        grad_avg        <- alpha * grad_avg + (1 - alpha) * g                  (centered)
        denom            = sqrt(square_avg - grad_avg * grad_avg + eps_root) + eps   (centered)
        denom            = sqrt(square_avg + eps_root) + eps                   (otherwise)
        momentum_buffer <- momentum * momentum_buffer + g / denom              (momentum > 0)
        p               <- p - lr * momentum_buffer     (momentum > 0)   or   p - lr * g / denom

    State: ``square_avg``; ``grad_avg`` when centered; ``momentum_buffer`` when
    ``momentum != 0``.

    Parameters
    ----------
    <params and lr>
    alpha : float, default 0.99
        Smoothing constant, in [0, 1].
    <eps>
    <weight_decay>
    momentum : float, default 0.0
        >= 0.
    centered : bool, default False
        Divide by an estimate of the variance instead of the second moment.
    <eps_root>
    <shared parameters>

    Examples
    --------
    >>> opt = RMSprop([np.zeros(2)], lr=0.01, alpha=0.75, centered=True)
    >>> sorted(opt.state)
    ['grad_avg', 'square_avg']
    """

    def __init__(self, params: Any, lr: LearningRate = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, eps_root: float = 0.0, maximize: bool = False,
                 backend: Backend = "auto",
                 master_weights: bool = False, state_dtype: StateDtype = "float32",
                 stochastic_rounding: bool = False, seed: int | None = None) -> None:
        super().__init__(params, lr, backend, master_weights, state_dtype=state_dtype,
                         stochastic_rounding=stochastic_rounding, seed=seed, alpha=alpha, eps=eps,
                         eps_root=eps_root,
                         weight_decay=weight_decay, momentum=momentum, centered=centered,
                         maximize=maximize)

    def _state_names(self, hp):
        names = ["square_avg"]
        if hp["centered"]:
            names.append("grad_avg")
        if hp["momentum"] != 0:
            names.append("momentum_buffer")
        return tuple(names)

    def _scalars(self, step, lr, hp):
        return _scalars.rmsprop(step=step, lr=lr, **hp)

    def _update(self, params, grads, state, step, lr, hp, **amp):
        self._impl.rmsprop_(params, grads, state["square_avg"], state.get("grad_avg"),
                            state.get("momentum_buffer"), step=step, lr=lr, **hp, **amp)


@_doc(lr="1e-3", eps="1e-8")
class Adam(Optimizer):
    """Adam (``torch.optim.Adam``; Kingma & Ba 2015): bias correction, L2 ``weight_decay``,
    AMSGrad (Reddi et al. 2018) and optax's ``eps_root``.

    At step ``t``, for every element, with ``beta1, beta2 = betas``::

        g              <- (-g if maximize else g) + weight_decay * p
        <adam moments>

    Parameters
    ----------
    <params and lr>
    <betas>
    <eps>
    <weight_decay> See ``AdamW`` for the decoupled form.
    <amsgrad>
    <eps_root>
    <shared parameters>

    Examples
    --------
    >>> w = np.zeros(3, np.float32)
    >>> opt = Adam([w], lr=0.1)
    >>> opt.step([w - 1.0])          # the first step moves each element by about lr
    >>> w, opt.step_count
    (array([0.1, 0.1, 0.1], dtype=float32), 1)
    """

    _decoupled = False

    def __init__(self, params: Any, lr: LearningRate = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, eps_root: float = 0.0,
                 maximize: bool = False, backend: Backend = "auto",
                 master_weights: bool = False, state_dtype: StateDtype = "float32",
                 stochastic_rounding: bool = False, seed: int | None = None) -> None:
        super().__init__(params, lr, backend, master_weights, state_dtype=state_dtype,
                         stochastic_rounding=stochastic_rounding, seed=seed, betas=betas, eps=eps,
                         eps_root=eps_root,
                         weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)

    def _state_names(self, hp):
        names = ("exp_avg", "exp_avg_sq")
        return names + ("max_exp_avg_sq",) if hp["amsgrad"] else names

    def _scalars(self, step, lr, hp):
        return _scalars.adam(step=step, lr=lr, decoupled_weight_decay=self._decoupled, **hp)

    def _update(self, params, grads, state, step, lr, hp, **amp):
        self._impl.adam_(params, grads, state["exp_avg"], state["exp_avg_sq"],
                         state.get("max_exp_avg_sq"), step=step, lr=lr,
                         decoupled_weight_decay=self._decoupled, **hp, **amp)


@_doc(lr="1e-3", eps="1e-8")
class AdamW(Adam):
    """AdamW (``torch.optim.AdamW``; Loshchilov & Hutter 2019): Adam with decoupled weight
    decay, default ``weight_decay=1e-2``.

    At step ``t``, for every element, with ``beta1, beta2 = betas``::

        g              <- -g if maximize else g
        p              <- p * (1 - lr * weight_decay)
        <adam moments>

    Parameters
    ----------
    <params and lr>
    <betas>
    <eps>
    weight_decay : float, default 1e-2
        Decoupled decay (the params shrink by ``lr * weight_decay`` each step), >= 0.
    <amsgrad>
    <eps_root>
    <shared parameters>

    Examples
    --------
    >>> w = np.ones(3)
    >>> AdamW([w], lr=0.1, weight_decay=0.5).step([np.zeros(3)])  # only the decay, 1 - 0.05
    >>> w
    array([0.95, 0.95, 0.95])
    """

    _decoupled = True

    def __init__(self, params: Any, lr: LearningRate = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, eps_root: float = 0.0,
                 maximize: bool = False, backend: Backend = "auto",
                 master_weights: bool = False, state_dtype: StateDtype = "float32",
                 stochastic_rounding: bool = False, seed: int | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, eps_root=eps_root,
                         maximize=maximize, backend=backend, master_weights=master_weights,
                         state_dtype=state_dtype, stochastic_rounding=stochastic_rounding,
                         seed=seed)


@_doc(lr="2e-3")
class Adamax(Optimizer):
    """AdaMax (``torch.optim.Adamax``; Kingma & Ba 2015, section 7.1), Adam's infinity-norm
    variant.

    At step ``t``, for every element, with ``beta1, beta2 = betas``::

        g        <- (-g if maximize else g) + weight_decay * p
        exp_avg  <- beta1 * exp_avg + (1 - beta1) * g
        exp_inf  <- max(beta2 * exp_inf, |g| + eps)
        p        <- p - lr / (1 - beta1^t) * exp_avg / exp_inf

    State: ``exp_avg``, ``exp_inf``, zeros at first.

    Parameters
    ----------
    <params and lr>
    <betas>
    eps : float, default 1e-8
        Keeps ``exp_inf > 0``, >= 0.
    <weight_decay>
    <shared parameters>

    Examples
    --------
    >>> opt = Adamax([np.zeros(2, np.float32)], lr=0.1, betas=(0.5, 0.9))
    >>> opt.step([np.full(2, -4.0, np.float32)])
    >>> opt.state["exp_inf"][0]
    array([4., 4.], dtype=float32)
    """

    def __init__(self, params: Any, lr: LearningRate = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 backend: Backend = "auto",
                 master_weights: bool = False, state_dtype: StateDtype = "float32",
                 stochastic_rounding: bool = False, seed: int | None = None) -> None:
        super().__init__(params, lr, backend, master_weights, state_dtype=state_dtype,
                         stochastic_rounding=stochastic_rounding, seed=seed, betas=betas, eps=eps,
                         weight_decay=weight_decay,
                         maximize=maximize)

    def _state_names(self, hp):
        return ("exp_avg", "exp_inf")

    def _scalars(self, step, lr, hp):
        return _scalars.adamax(step=step, lr=lr, **hp)

    def _update(self, params, grads, state, step, lr, hp, **amp):
        self._impl.adamax_(params, grads, state["exp_avg"], state["exp_inf"], step=step, lr=lr,
                           **hp, **amp)


from .lbfgs import LBFGS  # noqa: E402 -- re-exported here; defined with the L-BFGS solver
