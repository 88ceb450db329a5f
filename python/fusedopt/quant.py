"""8-bit blockwise optimizer state: the format, and stochastic rounding of bfloat16.

Layer: support (pure NumPy: the format shared by the reference, the kernel front doors and the
optimizers; imports nothing compiled).

The format (Dettmers, Lewis, Shleifer & Zettlemoyer, "8-bit Optimizers via Block-wise
Quantization", ICLR 2022): a float32 tensor of n elements is held as n uint8 ``codes`` (the
tensor's shape) and ``ceil(n / BLOCK)`` float32 ``absmax`` values, one per block of ``BLOCK``
consecutive elements (flat, C order; the last block may be short). Element i of block b is
``dynamic_map(signed)[codes[i]] * absmax[b]``.

Quantization of one block (:func:`quantize`; the kernels do the same, bit for bit):

1. ``absmax = max |x|`` over the block (float32; a NaN in the block gives a NaN absmax);
2. ``y = x * inv`` with ``inv = 1 / absmax`` computed once per block in float32 (one float32
   reciprocal per block and one float32 multiplication per element, as bitsandbytes; no
   division per element), or ``y = 0`` where ``absmax == 0``. A subnormal absmax
   (``0 < absmax < 2**-126``), whose reciprocal may overflow, first scales both by ``2**64``
   (exact): ``y = (x * 2**64) * (1 / (absmax * 2**64))``. ``y`` may differ from the exactly
   rounded ``x / absmax`` by an ulp (the element equal to absmax may give ``1 - 2**-24``); the
   codes are the nearest ones to this ``y``, and absmax stays the stored scale. A NaN absmax
   gives a NaN ``y`` (code 255); an infinite one ``y = 0`` for finite x and NaN for infinite x
   (code 255), as the division did;
3. the code is the index of the map entry nearest to ``y``; a ``y`` exactly half-way between
   two entries takes the lower one (the entry of smaller value). Computed exactly:
   ``code = #{j : y > mid_j}`` with ``mid_j = (map[j] + map[j+1]) / 2`` in float64 (exact
   for two float32 values). Equivalently ``code = #{j : not (y <= thresholds[j])}`` with the
   float32 ``thresholds`` below; a NaN ``y`` thus takes code 255 (and its block a NaN absmax).
   The kernels find it in two look-ups (:func:`encode_table`): a table indexed by the sign and
   the top 16 bits of ``|y|`` gives the code ``c`` of the smallest value with those bits, and
   ``c + (y > thresholds[c])`` is the code (no two thresholds share such a bucket).

The dynamic map (the paper's "dynamic tree quantization", section 2 and appendix): a code's
bits after the sign are a run of E zeros (the decimal exponent: the value is scaled by
``10**-E``), one indicator bit 1, then F linear fraction bits that pick one of ``2**F`` equal
parts of the interval [0.1, 1]; the value is that part's midpoint. With 7 magnitude bits
(``signed``: first moments, momentum) E runs over 0..6 with F = 6 - E, giving
64 + 32 + ... + 1 = 127 magnitudes per sign; with 8 (unsigned: second moments, sums, maxima:
the sign bit becomes one more fraction bit) E runs over 0..6 with F = 7 - E, 254 magnitudes.
Zero (all magnitude bits zero) and the value 1.0 complete the 256 entries, so that the block's
largest element (``y = +-1`` before the sign) and zero are stored exactly. The entries are
computed in float64, rounded once to float32, and sorted: the code is the rank of the value
(0 the most negative), not the bit pattern of the tree; ranks make the nearest-code search a
plain search over a sorted table.

Stochastic rounding (:func:`stochastic_round_bf16`) of float32 to bfloat16: add 16 random bits
to the float32's low 16 bits and truncate, so that x rounds up with probability equal to its
distance from the lower bfloat16 in units of the last place. The random bits come from a
counter-based hash, the same on every backend and for any thread count: with ``fmix`` the
32-bit finalizer of MurmurHash3 (``h ^= h >> 16; h *= 0x85ebca6b; h ^= h >> 13;
h *= 0xc2b2ae35; h ^= h >> 16``, uint32 arithmetic),

    key  = fmix(fmix(fmix(fmix(fmix(seed_lo) ^ seed_hi) ^ step_lo) ^ step_hi) ^ tensor)
    bits = fmix(fmix(key ^ i_lo) ^ i_hi) >> 16

where ``seed`` (0 <= seed < 2**64) and ``step`` are split into their low and high 32 bits,
``tensor`` is the tensor's index in the call's list and ``i`` the element's flat index in the
tensor (low and high 32 bits). NaN becomes bfloat16's quiet NaN with its sign, infinities stay;
a finite value within one ulp of the largest bfloat16 may round up to infinity.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["BLOCK", "MIN_SIZE", "QuantizedState", "dynamic_map", "thresholds", "encode_table",
           "quantize",
           "dequantize", "zeros", "blocks", "requantize_", "stochastic_round_bf16", "sr_key",
           "fmix32"]

#: Elements per block: one float32 absmax for each.
BLOCK = 256
#: Policy of the optimizer classes: tensors with fewer elements keep float32 state (as
#: bitsandbytes' ``min_8bit_size``); the kernels take quantized state of any size.
MIN_SIZE = 4096

_MAPS: dict = {}


def _build_map(signed: bool) -> np.ndarray:
    mag_bits = 7 if signed else 8
    values = [0.0, 1.0]
    for e in range(7):  # E zeros, the indicator bit, F fraction bits
        f = mag_bits - 1 - e
        parts = 2 ** f
        for k in range(parts):
            mid = 0.1 + 0.9 * (k + 0.5) / parts
            v = mid * 10.0 ** -e
            values.append(v)
            if signed:
                values.append(-v)
    out = np.sort(np.array(values, np.float64).astype(np.float32))
    assert out.size == 256 and np.all(np.diff(out) > 0)
    return out


def dynamic_map(signed: bool) -> np.ndarray:
    """The 256 values of the dynamic map, float32, increasing (a read-only array).

    ``signed``: 127 negative values, 0, 127 positive values and 1.0; unsigned: 0, 254 positive
    values and 1.0. See the module docstring for the definition.

    >>> from fusedopt import quant
    >>> m = quant.dynamic_map(True)
    >>> float(m[0]), float(m[127]), float(m[255])
    (-0.992968738079071, 0.0, 1.0)
    """
    signed = bool(signed)
    if ("map", signed) not in _MAPS:
        m = _build_map(signed)
        m.flags.writeable = False
        _MAPS[("map", signed)] = m
    return _MAPS[("map", signed)]


def thresholds(signed: bool) -> np.ndarray:
    """float32[256]: ``thresholds[j]`` for j < 255 is the largest float32 <= the exact midpoint
    of map entries j and j+1, so that for a float32 y, ``y > mid_j`` exactly when
    ``y > thresholds[j]``; ``thresholds[255]`` is +inf (a sentinel: nothing is above it).
    The kernels encode with these: ``code = #{j : not (y <= thresholds[j])}``."""
    signed = bool(signed)
    if ("thr", signed) not in _MAPS:
        m = dynamic_map(signed).astype(np.float64)
        mid = (m[:-1] + m[1:]) / 2.0  # exact in float64
        t = mid.astype(np.float32)
        above = t.astype(np.float64) > mid
        t[above] = np.nextafter(t[above], np.float32(-np.inf))
        t = np.append(t, np.float32(np.inf)).astype(np.float32)
        t.flags.writeable = False
        _MAPS[("thr", signed)] = t
    return _MAPS[("thr", signed)]


#: The buckets of encode_table: the top 16 bits of |y| (its bits >> 16), clamped to
#: [ENCODE_LO, ENCODE_HI] (below: |y| < 2**-31, far below the smallest nonzero entry; above:
#: |y| > 1, infinity, NaN), minus ENCODE_LO; negative y (sign bit set) use the second half.
ENCODE_LO = 0x3000
ENCODE_HI = 0x3F81
ENCODE_SPAN = ENCODE_HI - ENCODE_LO + 1


def encode_table(signed: bool) -> np.ndarray:
    """int32[2 * ENCODE_SPAN]: for each bucket of floats (see ENCODE_LO), the code of its
    smallest value. Every bucket holds at most one threshold (checked here), so for y in the
    bucket the code is ``table[b] + (y > thresholds[table[b]])`` (a NaN y: 255)."""
    signed = bool(signed)
    if ("lut", signed) not in _MAPS:
        m = dynamic_map(signed).astype(np.float64)
        mid = (m[:-1] + m[1:]) / 2.0
        e = np.arange(ENCODE_LO, ENCODE_HI + 1, dtype=np.uint32)
        lo, hi = e << np.uint32(16), (e << np.uint32(16)) | np.uint32(0xFFFF)
        lo[0], hi[-1] = 0, 0x7F800000  # the clamped ends: from zero, up to infinity
        small, big = lo.view(np.float32).astype(np.float64), hi.view(np.float32).astype(np.float64)
        pos = [np.searchsorted(mid, v, side="left") for v in (small, big)]
        neg = [np.searchsorted(mid, v, side="left") for v in (-big, -small)]
        if max(np.max(pos[1] - pos[0]), np.max(neg[1] - neg[0])) > 1:
            raise AssertionError("a bucket of encode_table holds two thresholds")
        t = np.concatenate([pos[0], neg[0]]).astype(np.int32)
        t.flags.writeable = False
        _MAPS[("lut", signed)] = t
    return _MAPS[("lut", signed)]


def blocks(n: int) -> int:
    """The number of blocks (absmax values) of a tensor of ``n`` elements."""
    return -(-int(n) // BLOCK)


def _is_array(a) -> bool:
    """A NumPy array, or a CuPy one (device state for fusedopt._cuda; CuPy is not imported)."""
    return isinstance(a, np.ndarray) or type(a).__module__.split(".")[0] == "cupy"


class QuantizedState:
    """One tensor of 8-bit blockwise state.

    Attributes
    ----------
    codes : uint8 ndarray
        The tensor's shape; indices into ``dynamic_map(signed)``. NumPy arrays for the CPU
        kernels, or CuPy arrays (``codes`` and ``absmax`` on the params' device) for the CUDA
        ones; only the kernels and the checks take CuPy ones (the functions here are NumPy's).
    absmax : float32 ndarray
        One-dimensional, ``ceil(size / BLOCK)`` values.
    signed : bool
        Which map: True for first moments and momentum, False for second moments, sums, maxima.
    """

    __slots__ = ("codes", "absmax", "signed")

    def __init__(self, codes, absmax, signed: bool):
        if not _is_array(codes) or codes.dtype != np.uint8:
            raise TypeError("codes must be a uint8 numpy.ndarray (or cupy.ndarray), got "
                            f"{type(codes).__name__} {getattr(codes, 'dtype', '')}".rstrip())
        if not _is_array(absmax) or absmax.dtype != np.float32 or absmax.ndim != 1:
            raise TypeError("absmax must be a one-dimensional float32 numpy.ndarray (or "
                            "cupy.ndarray), got "
                            f"{type(absmax).__name__} {getattr(absmax, 'dtype', '')} "
                            f"of {getattr(absmax, 'ndim', '?')} dimensions")
        if absmax.size != blocks(codes.size):
            raise ValueError(f"absmax has {absmax.size} values but codes of {codes.size} "
                             f"elements need {blocks(codes.size)} (one per {BLOCK})")
        if not isinstance(signed, (bool, np.bool_)):
            raise TypeError(f"signed must be a bool, got {type(signed).__name__}")
        self.codes = codes
        self.absmax = absmax
        self.signed = bool(signed)

    @property
    def shape(self) -> tuple:
        return self.codes.shape

    @property
    def size(self) -> int:
        return int(self.codes.size)

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.absmax.nbytes)

    def __repr__(self) -> str:
        return (f"QuantizedState(shape={self.shape}, signed={self.signed}, "
                f"blocks={self.absmax.size})")


#: Absmax values below this (subnormal) are scaled by TINY_SCALE before their reciprocal.
TINY_ABSMAX = np.float32(2.0 ** -126)
TINY_SCALE = np.float32(2.0 ** 64)


def _normalize(xb: np.ndarray, absmax: np.ndarray) -> np.ndarray:
    """float32 ``y`` of the blocks ``xb`` (rows) with their absmax: ``x * (1 / absmax)``, one
    reciprocal per block (see the module docstring: subnormal absmax, zero absmax)."""
    tiny = absmax < TINY_ABSMAX
    pre = np.where(tiny, TINY_SCALE, np.float32(1)).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        inv = (np.float32(1) / (absmax * pre)).astype(np.float32)
        y = (xb * pre[:, None]) * inv[:, None]  # pre == 1: exactly x * inv
    return np.where(absmax[:, None] == 0, np.float32(0), y).astype(np.float32)


def _encode(x: np.ndarray, signed: bool):
    """(codes, absmax) of a float32 array, flat."""
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    n = x.size
    nb = blocks(n)
    pad = np.zeros(nb * BLOCK, np.float32)
    pad[:n] = x
    xb = pad.reshape(nb, BLOCK)
    with np.errstate(invalid="ignore", divide="ignore"):
        absmax = np.max(np.abs(xb), axis=1) if nb else np.zeros(0, np.float32)
        absmax = absmax.astype(np.float32)
        y = _normalize(xb, absmax).ravel()[:n]
    # Nearest entry, ties to the lower: the number of exact midpoints strictly below y.
    m = dynamic_map(signed).astype(np.float64)
    mid = (m[:-1] + m[1:]) / 2.0
    codes = np.searchsorted(mid, y.astype(np.float64), side="left")  # a NaN counts all: 255
    return codes.astype(np.uint8), absmax


def quantize(x, signed: bool) -> QuantizedState:
    """A float32 array (any shape; float64 or 16-bit values are first cast to float32) as a
    QuantizedState of the same shape. See the module docstring for the rule."""
    x = np.asarray(x)
    codes, absmax = _encode(x.astype(np.float32), signed)
    return QuantizedState(codes.reshape(x.shape), absmax, bool(signed))


def dequantize(q: QuantizedState) -> np.ndarray:
    """The float32 values of a QuantizedState: ``map[codes] * absmax`` per block (one float32
    multiplication each), in the codes' shape."""
    if not isinstance(q, QuantizedState):
        raise TypeError(f"q must be a QuantizedState, got {type(q).__name__}")
    m = dynamic_map(q.signed)
    flat = m[q.codes.ravel()]
    scale = np.repeat(q.absmax, BLOCK)[:flat.size]
    with np.errstate(invalid="ignore", over="ignore"):
        return (flat * scale).astype(np.float32).reshape(q.shape)


def requantize_(q: QuantizedState, x) -> None:
    """Store the float32 values ``x`` (q's shape) into ``q`` in place (codes and absmax)."""
    codes, absmax = _encode(x, q.signed)
    q.codes[...] = codes.reshape(q.shape)
    q.absmax[...] = absmax


def zeros(shape, signed: bool) -> QuantizedState:
    """A QuantizedState of zeros (codes of 0.0, absmax 0)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    n = math.prod(shape)
    zero = int(np.flatnonzero(dynamic_map(signed) == 0)[0])
    return QuantizedState(np.full(shape, zero, np.uint8), np.zeros(blocks(n), np.float32),
                          bool(signed))


# ---- stochastic rounding ------------------------------------------------------------------------

_M32 = 0xFFFFFFFF


def fmix32(h):
    """MurmurHash3's 32-bit finalizer, on a Python int or a uint32 ndarray."""
    if isinstance(h, np.ndarray):
        h = h.astype(np.uint32, copy=True)
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
        return h
    h &= _M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def sr_key(seed: int, step: int, tensor: int) -> int:
    """The per-tensor key of the stochastic rounding hash (see the module docstring)."""
    h = fmix32(seed & _M32)
    h = fmix32(h ^ ((seed >> 32) & _M32))
    h = fmix32(h ^ (step & _M32))
    h = fmix32(h ^ ((step >> 32) & _M32))
    return fmix32(h ^ (tensor & _M32))


def stochastic_round_bf16(x, key: int) -> np.ndarray:
    """float32 ``x`` rounded stochastically to ``ml_dtypes.bfloat16`` with the random bits of
    ``key`` (:func:`sr_key`) and each element's flat index."""
    import ml_dtypes  # noqa: PLC0415 -- optional, needed only with bfloat16 arrays

    x = np.ascontiguousarray(x, dtype=np.float32)
    i = np.arange(x.size, dtype=np.uint64)
    lo = (i & np.uint64(_M32)).astype(np.uint32)
    hi = (i >> np.uint64(32)).astype(np.uint32)
    r = fmix32(fmix32(np.uint32(key) ^ lo) ^ hi) >> np.uint32(16)
    u = x.ravel().view(np.uint32)
    with np.errstate(over="ignore"):
        out = ((u + r) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(x.ravel())
    out[nan] = ((u[nan] >> np.uint32(16)) & np.uint32(0x8000)).astype(np.uint16) | np.uint16(0x7FC0)
    return out.view(ml_dtypes.bfloat16).reshape(x.shape)
