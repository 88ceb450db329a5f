"""Weight initializers for NumPy networks, drawn from a given ``numpy.random.Generator``.

Layer: tools (pure NumPy: no kernels).

    >>> rng = np.random.default_rng(0)
    >>> W1 = glorot_uniform(rng, (64, 128))           # x @ W1: fan_in 64, fan_out 128
    >>> W2 = he_normal(rng, (128, 10), dtype=np.float32)

Fans follow the Keras convention for the kernel of ``x @ W``: shape ``(fan_in, fan_out)``; for
more axes ``(..., in, out)`` (a convolution kernel) both fans are multiplied by the product of
the leading axes (the receptive field); a 1-D shape has ``fan_in = fan_out = shape[0]``. Pass
``fan_in=``/``fan_out=`` to override (for example for PyTorch's ``(out, in)`` layout).

- ``glorot_uniform``: ``U(-l, l)``, ``l = gain * sqrt(6 / (fan_in + fan_out))`` (Glorot &
  Bengio 2010; ``torch.nn.init.xavier_uniform_``).
- ``glorot_normal``: ``N(0, s^2)``, ``s = gain * sqrt(2 / (fan_in + fan_out))``.
- ``he_uniform``: ``U(-l, l)``, ``l = sqrt(6 / fan_in)`` (He et al. 2015, ReLU layers).
- ``he_normal``: ``N(0, s^2)``, ``s = sqrt(2 / fan_in)`` (``torch.nn.init.kaiming_normal_``;
  untruncated, unlike Keras' ``HeNormal``).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numpy.typing import DTypeLike, NDArray

from . import _checks
from ._checks import real

__all__ = ["fans", "glorot_uniform", "glorot_normal", "he_uniform", "he_normal"]


def _shape(shape):
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be an int or a tuple of ints, got {type(shape).__name__}") \
            from None
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise TypeError(f"shape must be a tuple of ints, got {shape!r}")
        if s < 1:
            raise ValueError(f"shape must have positive sizes, got {shape!r}")
    if not shape:
        raise ValueError("shape must have at least one axis")
    return tuple(int(s) for s in shape)


def fans(shape: int | tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a kernel of this shape (see the module notes).

    Parameters
    ----------
    shape : int or tuple of int
        Positive sizes, at least one axis.

    Examples
    --------
    >>> fans((64, 128)), fans((3, 3, 16, 32)), fans(7)
    ((64, 128), (144, 288), (7, 7))
    """
    s = _shape(shape)
    if len(s) == 1:
        return s[0], s[0]
    field = math.prod(s[:-2])
    return s[-2] * field, s[-1] * field


def _args(rng, shape, dtype, fan_in, fan_out):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    shape = _shape(shape)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    fi, fo = fans(shape)
    for name, v in (("fan_in", fan_in), ("fan_out", fan_out)):
        if v is not None:
            _checks.integer(name, v, minimum=1)
    return shape, dtype, int(fan_in or fi), int(fan_out or fo)


def _gain(gain):
    g = real("gain", gain)
    if g <= 0:
        raise ValueError(f"gain must be > 0, got {g}")
    return g


def _uniform(rng, shape, dtype, limit):
    # Drawn in float64 and rounded once, so a float32 array is the float64 one rounded.
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def _normal(rng, shape, dtype, std):
    return (std * rng.standard_normal(size=shape)).astype(dtype)


_PARAMETERS = """\
    Parameters
    ----------
    rng : numpy.random.Generator
        The source of randomness (``np.random.default_rng(seed)``).
    shape : int or tuple of int
        The shape of the kernel, ``(fan_in, fan_out)`` for ``x @ W`` (see the module notes).
{gain}    fan_in : int, optional, default None
        Overrides the fan-in of ``shape``.
{fan_out}    dtype : {{np.float32, np.float64}}, default np.float64
        Drawn in float64 and rounded once to ``dtype``.

    Returns
    -------
    ndarray of shape ``shape`` and dtype ``dtype``
"""
_GAIN = """\
    gain : float, default 1.0
        A factor of the bound or the standard deviation, > 0 (``sqrt(2)`` for ReLU layers).
"""
_FAN_OUT = """\
    fan_out : int, optional, default None
        Overrides the fan-out of ``shape``.
"""


_F = TypeVar("_F", bound=Callable[..., Any])


def _documented(f: _F) -> _F:
    """Fill in the parameters the initializers share (written once, above)."""
    glorot = "gain" in f.__code__.co_varnames
    f.__doc__ = (f.__doc__ or "").replace("    <parameters>\n", _PARAMETERS.format(
        gain=_GAIN if glorot else "", fan_out=_FAN_OUT if glorot else ""))
    return f


@_documented
def glorot_uniform(rng: np.random.Generator, shape: int | tuple[int, ...], *, gain: float = 1.0,
                   fan_in: int | None = None, fan_out: int | None = None,
                   dtype: DTypeLike = np.float64) -> NDArray[Any]:
    """Glorot/Xavier uniform: ``U(+-gain * sqrt(6 / (fan_in + fan_out)))``.

    <parameters>

    Examples
    --------
    >>> W = glorot_uniform(np.random.default_rng(0), (64, 128))
    >>> bool(abs(W).max() <= math.sqrt(6 / (64 + 128)))
    True
    """
    shape, dtype, fi, fo = _args(rng, shape, dtype, fan_in, fan_out)
    return _uniform(rng, shape, dtype, _gain(gain) * math.sqrt(6.0 / (fi + fo)))


@_documented
def glorot_normal(rng: np.random.Generator, shape: int | tuple[int, ...], *, gain: float = 1.0,
                  fan_in: int | None = None, fan_out: int | None = None,
                  dtype: DTypeLike = np.float64) -> NDArray[Any]:
    """Glorot/Xavier normal: ``N(0, (gain * sqrt(2 / (fan_in + fan_out)))^2)``.

    <parameters>

    Examples
    --------
    >>> glorot_normal(np.random.default_rng(0), (3, 3, 16, 32), dtype=np.float32).dtype
    dtype('float32')
    """
    shape, dtype, fi, fo = _args(rng, shape, dtype, fan_in, fan_out)
    return _normal(rng, shape, dtype, _gain(gain) * math.sqrt(2.0 / (fi + fo)))


@_documented
def he_uniform(rng: np.random.Generator, shape: int | tuple[int, ...], *,
               fan_in: int | None = None, dtype: DTypeLike = np.float64) -> NDArray[Any]:
    """He/Kaiming uniform: ``U(+-sqrt(6 / fan_in))``.

    <parameters>

    Examples
    --------
    >>> he_uniform(np.random.default_rng(0), 5, fan_in=2).shape
    (5,)
    """
    shape, dtype, fi, _ = _args(rng, shape, dtype, fan_in, None)
    return _uniform(rng, shape, dtype, math.sqrt(6.0 / fi))


@_documented
def he_normal(rng: np.random.Generator, shape: int | tuple[int, ...], *,
              fan_in: int | None = None, dtype: DTypeLike = np.float64) -> NDArray[Any]:
    """He/Kaiming normal: ``N(0, 2 / fan_in)``.

    <parameters>

    Examples
    --------
    >>> W = he_normal(np.random.default_rng(0), (1000, 100))
    >>> round(float(W.std()), 3), round(math.sqrt(2 / 1000), 3)
    (0.045, 0.045)
    """
    shape, dtype, fi, _ = _args(rng, shape, dtype, fan_in, None)
    return _normal(rng, shape, dtype, math.sqrt(2.0 / fi))
