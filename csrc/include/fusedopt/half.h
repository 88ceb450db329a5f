// fusedopt/half.h -- float16 and bfloat16 <-> float32 in portable bit code, with the bits of the
// NumPy reference: NumPy's own float16 casts and ml_dtypes' bfloat16 casts.
//
// Shared by g++ (the CPU loops, csrc/cpu/kernels.cpp, every ISA copy) and NVRTC (bfloat16 in
// csrc/cuda/multi_tensor.cuh). Every function is branch-free (all cases computed, one select),
// so that the CPU loops vectorize them (AVX2: 8 lanes, AVX-512: 16); integer operations and two
// exact or correctly rounded float operations, hence the same bits in every copy. The hardware
// conversions are not used on the CPU: AVX-512 BF16's vcvtneps2bf16 flushes denormals to zero
// and F16C's vcvtps2ph quiets signalling NaNs, where the reference keeps both.
//
// Narrowing rounds to nearest, ties to even; an overflow gives infinity.
//   float16   NaN keeps its sign and the top 10 payload bits, and stays a NaN (0x7c01 if those
//             are all zero) -- numpy/_core/src/npymath/halffloat.cpp, npy_floatbits_to_halfbits.
//   bfloat16  NaN becomes the quiet NaN 0x7fc0 with its sign (ml_dtypes, Eigen's
//             float_to_bfloat16_rtne).
// Widening is exact (NaN payloads kept).
#pragma once
#include "hd.h"

namespace fusedopt {

// The bits of a float and back (bit casts).
FUSEDOPT_HD unsigned fo_float_bits(float x) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(x);
#else
    return __builtin_bit_cast(unsigned, x);  // not memcpy: GCC vectorizes this one in every loop
#endif
}
FUSEDOPT_HD float fo_bits_float(unsigned u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    return __builtin_bit_cast(float, u);
#endif
}

// c ? a : b on bit patterns, with masks: GCC keeps it a select (a vector blend) even though the
// float operations of the other branches could trap, where a ?: would become a branch.
FUSEDOPT_HD unsigned fo_select(bool c, unsigned a, unsigned b) {
    return b ^ ((a ^ b) & (0u - static_cast<unsigned>(c)));
}

// float16 bits -> float32, exact.
FUSEDOPT_HD float fo_half_to_float(unsigned short h) {
    const unsigned sign = (static_cast<unsigned>(h) & 0x8000u) << 16;
    const int em = static_cast<int>(h & 0x7fffu);  // exponent and mantissa
    const unsigned e = static_cast<unsigned>(em) << 13;
    const unsigned normal = e + 0x38000000u;  // exponent rebiased by 127 - 15
    const unsigned special = e | 0x7f800000u;  // infinity, NaN with its payload
    // A subnormal is m * 2^-24 (m = em < 1024): exact in float32, and normal there.
    const unsigned sub = fo_float_bits(static_cast<float>(em) * 5.9604644775390625e-8f);
    const unsigned mag = fo_select(em >= 0x7c00, special, fo_select(em >= 0x0400, normal, sub));
    return fo_bits_float(mag | sign);
}

// float32 -> float16 bits, to nearest even.
FUSEDOPT_HD unsigned short fo_float_to_half(float x) {
    const unsigned u = fo_float_bits(x);
    const unsigned sign = (u >> 16) & 0x8000u;
    const int a = static_cast<int>(u & 0x7fffffffu);  // |x|
    const unsigned ua = static_cast<unsigned>(a);
    // |x| >= 2^-14 (a normal float16): drop 13 mantissa bits, adding 0xfff plus the lowest kept
    // bit (ties to even); a carry moves into the exponent, up to infinity (0x7c00) at 65520.
    const unsigned normal = (ua - 0x38000000u + 0xfffu + ((ua >> 13) & 1u)) >> 13;
    // |x| < 2^-14: the float add |x| + 0.5 rounds to a multiple of 2^-24 (the float16
    // subnormal step) to nearest even; its low mantissa bits are then the float16 bits.
    const unsigned sub = fo_float_bits(fo_bits_float(ua) + 0.5f) - 0x3f000000u;
    const unsigned payload = 0x7c00u + ((ua & 0x7fffffu) >> 13);
    const unsigned nan = payload | static_cast<unsigned>(payload == 0x7c00u);
    const unsigned mag =
        fo_select(a > 0x7f800000, nan,
                  fo_select(a >= 0x47800000, 0x7c00u,  // >= 65536 and infinity
                            fo_select(a >= 0x38800000, normal, sub)));
    return static_cast<unsigned short>(mag | sign);
}

// bfloat16 bits -> float32, exact.
FUSEDOPT_HD float fo_bf16_to_float(unsigned short b) {
    return fo_bits_float(static_cast<unsigned>(b) << 16);
}

// The bits of x for a narrowing to bfloat16, a NaN replaced by sign|0x7fc00000: the bfloat16
// NaN in the top 16 bits, zeros below, so that adding anything below 2^16 (0x7fff plus the
// lowest kept bit, 0, to nearest even; 16 random bits, stochastically) and dropping the low
// half gives sign|0x7fc0. The narrowings then round one value and narrow it once, with no select
// at 16 bits (a vector loop would pack and permute a rounded value, a NaN and a mask each).
// x != x is one unordered compare; both arms are integer bits, so ?: becomes a blend.
FUSEDOPT_HD unsigned fo_bf16_nan_canonical_bits(float x) {
    const unsigned u = fo_float_bits(x);
    return x != x ? (u & 0x80000000u) | 0x7fc00000u : u;
}

// float32 -> bfloat16 bits, to nearest even.
FUSEDOPT_HD unsigned short fo_float_to_bf16(float x) {
    const unsigned u = fo_bf16_nan_canonical_bits(x);
    return static_cast<unsigned short>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace fusedopt
