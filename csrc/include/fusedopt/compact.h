// fusedopt/compact.h -- compact optimizer state and stochastic rounding, per element: the 8-bit
// blockwise format's encoding and the counter-based hash of stochastic rounding. Shared by g++
// (csrc/cpu/compact.cpp, every ISA copy) and NVRTC; the definitions are those of the module
// docstring of fusedopt.quant (the NumPy ground truth), and the tables (the dynamic map and its
// thresholds) come from there too, so nothing here repeats a number of the format.
//
// Every function is branch-free integer or exact float code, so the loops vectorize it and every
// copy gives the same bits.
#pragma once
#include "half.h"
#include "hd.h"

namespace fusedopt {

// Elements per block of 8-bit state (fusedopt.quant.BLOCK): one float32 absmax each.
constexpr int kQuantBlock = 256;

// MurmurHash3's 32-bit finalizer (fusedopt.quant.fmix32).
FUSEDOPT_HD unsigned fo_fmix32(unsigned h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

// The per-tensor key of stochastic rounding (fusedopt.quant.sr_key): seed, step and the
// tensor's index in the call's list.
FUSEDOPT_HD unsigned fo_sr_key(unsigned long long seed, unsigned long long step,
                               unsigned tensor) {
    unsigned h = fo_fmix32(static_cast<unsigned>(seed));
    h = fo_fmix32(h ^ static_cast<unsigned>(seed >> 32));
    h = fo_fmix32(h ^ static_cast<unsigned>(step));
    h = fo_fmix32(h ^ static_cast<unsigned>(step >> 32));
    return fo_fmix32(h ^ tensor);
}

// float32 -> bfloat16 bits, rounded stochastically with 16 random bits of (key, element index
// lo/hi): add them below the kept bits and truncate. NaN becomes the quiet NaN with its sign
// (as fo_float_to_bf16).
FUSEDOPT_HD unsigned short fo_float_to_bf16_sr(float x, unsigned key, unsigned idx_lo,
                                               unsigned idx_hi) {
    const unsigned r = fo_fmix32(fo_fmix32(key ^ idx_lo) ^ idx_hi) >> 16;
    return static_cast<unsigned short>((fo_bf16_nan_canonical_bits(x) + r) >> 16);
}

// The buckets of the encoding table (fusedopt.quant.ENCODE_LO, ENCODE_HI): the top 16 bits of
// |y| clamped to [kEncodeLo, kEncodeHi], the negative half after the positive one.
constexpr unsigned kEncodeLo = 0x3000u;
constexpr unsigned kEncodeHi = 0x3f81u;
constexpr unsigned kEncodeSpan = kEncodeHi - kEncodeLo + 1;

// The encoder's normalization of a block with absmax a (> 0, or NaN/inf): y = x * inv with
// inv = 1.0f / a, one float32 reciprocal per block and one multiplication per element (no
// division per element; as bitsandbytes). A subnormal a (below 2^-126), whose reciprocal may
// overflow, first scales x and a by 2^64 (exact): y = (x * 2^64) * (1.0f / (a * 2^64)).
// fusedopt.quant's docstring states the same; a == 0 gives code-of-zero without normalizing.
constexpr float kQuantTinyAbsmax = 1.17549435082228750797e-38f;  // 2^-126, FLT_MIN
constexpr float kQuantTinyScale = 18446744073709551616.0f;        // 2^64
FUSEDOPT_HD bool fo_quant_tiny(float a) { return a < kQuantTinyAbsmax; }
FUSEDOPT_HD float fo_quant_inv(float a) {
    return fo_quant_tiny(a) ? 1.0f / (a * kQuantTinyScale) : 1.0f / a;
}
FUSEDOPT_HD float fo_quant_normalize(float x, float a) {
    return fo_quant_tiny(a) ? (x * kQuantTinyScale) * fo_quant_inv(a) : x * fo_quant_inv(a);
}

// The 8-bit code of a normalized value y (fo_quant_normalize): the nearest entry of the map, ties to the
// lower, a NaN 255 -- the count of thresholds t[j] (fusedopt.quant.thresholds: the largest float32
// at or below the exact midpoint of entries j and j+1) below y. `lut` (fusedopt.quant.
// encode_table) gives the code of the smallest value of y's bucket, and a bucket holds at most one
// threshold, so one comparison completes it: two look-ups, no search.
FUSEDOPT_HD unsigned fo_quant_encode(float y, const int* lut, const float* t) {
    const unsigned u = fo_float_bits(y);
    unsigned e = (u & 0x7fffffffu) >> 16;
    e = e < kEncodeLo ? kEncodeLo : e;
    e = e > kEncodeHi ? kEncodeHi : e;
    const int c = lut[(e - kEncodeLo) + (u >> 31) * kEncodeSpan];
    const unsigned code = static_cast<unsigned>(c) + static_cast<unsigned>(y > t[c]);
    return fo_select(y != y, 255u, code);
}

}  // namespace fusedopt
