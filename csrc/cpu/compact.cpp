// csrc/cpu/compact.cpp -- the block loop of compact state (see compact.h): bfloat16 and 8-bit
// blockwise state, stochastic rounding of bfloat16 params.
//
// Compiled once per instruction set (FUSEDOPT_ISA), like kernels.cpp. Only float32 math exists
// here (compact state needs float32 math), and only the rule's loops over a block are template
// code (one instance per rule and flags, holding the fused pass for bfloat16 and for 8-bit state
// and the general loop); dequantizing, encoding, loading and storing buffers are plain functions
// shared by every rule, so the new kernels add few instances to the build.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "compact.h"
#include "fusedopt/compact.h"
#include "fusedopt/functors.h"
#include "fusedopt/half.h"
#include "loops.h"
#include "parallel.h"

namespace fusedopt {
namespace cpu {
namespace FUSEDOPT_ISA {
namespace {

constexpr int kB = kQuantBlock;

// n values of a param or grad of dtype d, from element `at`, as float32 (exact).
__attribute__((noinline)) void load_values(DType d, const void* src, int64_t at, int n,
                                           float* __restrict out) {
    if (d == DType::kFloat32) {
        const float* __restrict s = as<float>(src) + at;
        for (int i = 0; i < n; ++i) out[i] = s[i];
    } else if (d == DType::kFloat16) {
        const uint16_t* __restrict s = as<uint16_t>(src) + at;
        for (int i = 0; i < n; ++i) out[i] = fo_half_to_float(s[i]);
    } else {
        const uint16_t* __restrict s = as<uint16_t>(src) + at;
        for (int i = 0; i < n; ++i) out[i] = fo_bf16_to_float(s[i]);
    }
}

// The block's grad as float32, divided by *grad_scale where given (AMP).
__attribute__((noinline)) void load_grad(const CompactCall& c, const CompactTensor& t, int64_t at,
                                         int n, float* __restrict out) {
    load_values(t.dtype, t.grad, at, n, out);
    if (c.grad_scale) {
        const float scale = *c.grad_scale;
        for (int i = 0; i < n; ++i) out[i] = out[i] / scale;
    }
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// The AVX-512 copy looks the 256-entry tables (the map, the thresholds) up in registers: eight
// two-register permutes pick by the index's low 5 bits, three rounds of blends by bits 5, 6, 7
// -- no memory gathers. Exact selections: the same float32 bits as table[index].
struct Table256 {
    __m512 r[16];
    explicit Table256(const float* t) {
        for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_ps(t + 16 * j);
    }
    __m512 operator[](__m512i idx) const {
        const __m512 a0 = _mm512_permutex2var_ps(r[0], idx, r[1]);
        const __m512 a1 = _mm512_permutex2var_ps(r[2], idx, r[3]);
        const __m512 a2 = _mm512_permutex2var_ps(r[4], idx, r[5]);
        const __m512 a3 = _mm512_permutex2var_ps(r[6], idx, r[7]);
        const __m512 a4 = _mm512_permutex2var_ps(r[8], idx, r[9]);
        const __m512 a5 = _mm512_permutex2var_ps(r[10], idx, r[11]);
        const __m512 a6 = _mm512_permutex2var_ps(r[12], idx, r[13]);
        const __m512 a7 = _mm512_permutex2var_ps(r[14], idx, r[15]);
        const __mmask16 b5 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
        const __mmask16 b6 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(64));
        const __mmask16 b7 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(128));
        const __m512 c0 = _mm512_mask_blend_ps(b5, a0, a1);
        const __m512 c1 = _mm512_mask_blend_ps(b5, a2, a3);
        const __m512 c2 = _mm512_mask_blend_ps(b5, a4, a5);
        const __m512 c3 = _mm512_mask_blend_ps(b5, a6, a7);
        const __m512 d0 = _mm512_mask_blend_ps(b6, c0, c1);
        const __m512 d1 = _mm512_mask_blend_ps(b6, c2, c3);
        return _mm512_mask_blend_ps(b7, d0, d1);
    }
};

// fo_quant_encode's first look-up for 16 values y (lanes k): the code of the smallest value of
// each one's bucket (sign and top 16 bits of |y|, clamped).
inline __m512i encode_lookup(__m512 y, __mmask16 k, const int* lut) {
    const __m512i u = _mm512_castps_si512(y);
    __m512i e = _mm512_srli_epi32(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), 16);
    e = _mm512_min_epu32(_mm512_max_epu32(e, _mm512_set1_epi32(static_cast<int>(kEncodeLo))),
                         _mm512_set1_epi32(static_cast<int>(kEncodeHi)));
    __m512i idx = _mm512_sub_epi32(e, _mm512_set1_epi32(static_cast<int>(kEncodeLo)));
    idx = _mm512_mask_add_epi32(idx, _mm512_movepi32_mask(u), idx,
                                _mm512_set1_epi32(static_cast<int>(kEncodeSpan)));
    return _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), k, idx, lut, 4);
}

// The mask of the lanes of a vector of 16 from element i that lie below n (none when i >= n).
inline __mmask16 lanes(int i, int n) {
    const int r = n - i;
    return r >= 16 ? static_cast<__mmask16>(0xffff)
           : r <= 0 ? static_cast<__mmask16>(0)
                    : static_cast<__mmask16>((1u << r) - 1u);
}
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// VBMI: a 256-entry float32 table looked up for 64 codes at once. Each byte of the entries' bits
// is looked up in its own plane (two 128-entry byte permutes, blended by the code's bit 7), and
// the four planes are interleaved into 64 float32 values by byte and word unpacks. The unpacks
// work within 128-bit lanes, so the codes are first put in the order that makes their output
// come out in element order: lane l, dword j of output vector v is element 16 v + 4 l + j.
// Byte 16 l + 4 v + j of kPlanesOrder is 16 v + 4 l + j (a constant: no set-up per block).
alignas(64) constexpr uint8_t kPlanesOrder[64] = {
    0, 1, 2, 3, 16, 17, 18, 19, 32, 33, 34, 35, 48, 49, 50, 51,
    4, 5, 6, 7, 20, 21, 22, 23, 36, 37, 38, 39, 52, 53, 54, 55,
    8, 9, 10, 11, 24, 25, 26, 27, 40, 41, 42, 43, 56, 57, 58, 59,
    12, 13, 14, 15, 28, 29, 30, 31, 44, 45, 46, 47, 60, 61, 62, 63};
// Byte 0 of each dword of two vectors (permutex2var_epi8), then don't-care.
alignas(64) constexpr uint8_t kFirstBytes[64] = {
    0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60,
    64, 68, 72, 76, 80, 84, 88, 92, 96, 100, 104, 108, 112, 116, 120, 124};

struct Planes256 {
    __m512i order;
    __m512i t[4][2][2];
    __attribute__((target("avx512vbmi"))) explicit Planes256(const uint8_t* planes) {
        order = _mm512_load_si512(kPlanesOrder);
        for (int b = 0; b < 4; ++b)
            for (int h = 0; h < 2; ++h)
                for (int r = 0; r < 2; ++r)
                    t[b][h][r] = _mm512_loadu_si512(planes + b * kB + h * 128 + r * 64);
    }
    // f[v] = table[codes[16 v + j]], j < 16 (codes: 64 bytes in element order)
    __attribute__((target("avx512vbmi"))) void operator()(__m512i codes, __m512i f[4]) const {
        ordered(_mm512_permutexvar_epi8(order, codes), f);
    }
    // The same with the codes already in kPlanesOrder's order (byte 16 l + 4 v + j: element
    // 16 v + 4 l + j, as the saturating packs of four dword vectors leave them); the order is
    // its own inverse, so permutexvar_epi8(order, codes) puts them back in element order.
    __attribute__((target("avx512vbmi"))) void ordered(__m512i codes, __m512i f[4]) const {
        const __mmask64 high = _mm512_movepi8_mask(codes);
        __m512i p[4];
        for (int b = 0; b < 4; ++b)
            p[b] = _mm512_mask_blend_epi8(high,
                                          _mm512_permutex2var_epi8(t[b][0][0], codes, t[b][0][1]),
                                          _mm512_permutex2var_epi8(t[b][1][0], codes, t[b][1][1]));
        const __m512i lo01 = _mm512_unpacklo_epi8(p[0], p[1]);
        const __m512i hi01 = _mm512_unpackhi_epi8(p[0], p[1]);
        const __m512i lo23 = _mm512_unpacklo_epi8(p[2], p[3]);
        const __m512i hi23 = _mm512_unpackhi_epi8(p[2], p[3]);
        f[0] = _mm512_unpacklo_epi16(lo01, lo23);
        f[1] = _mm512_unpackhi_epi16(lo01, lo23);
        f[2] = _mm512_unpacklo_epi16(hi01, hi23);
        f[3] = _mm512_unpackhi_epi16(hi01, hi23);
    }
};

__attribute__((target("avx512vbmi"), noinline)) void decode_block_vbmi(
    const uint8_t* __restrict q, const uint8_t* __restrict planes, float a, int n,
    float* __restrict out) {
    const Planes256 map(planes);
    const __m512 va = _mm512_set1_ps(a);
    // 64 codes from element i, `rest` of them the block's (as encode_block_vbmi_finite)
    const auto group = [&](int i, int rest)
                           __attribute__((always_inline, target("avx512vbmi"))) {
        const __mmask64 k = rest >= 64 ? ~static_cast<__mmask64>(0)
                                       : (static_cast<__mmask64>(1) << rest) - 1;
        __m512i f[4];
        map(_mm512_maskz_loadu_epi8(k, q + i), f);
        for (int v = 0; v < 4; ++v)
            _mm512_mask_storeu_ps(out + i + 16 * v, lanes(16 * v, rest),
                                  _mm512_mul_ps(_mm512_castsi512_ps(f[v]), va));
    };
    int i = 0;
    for (; i + 64 <= n; i += 64) group(i, 64);
    if (i < n) group(i, n - i);
}

// encode_block's loop for a finite normal absmax (so every x is finite and |y| <= 1 + 2^-23;
// no NaN to handle), 64 values at a time, no table look-up but the thresholds': the candidate
// code c (the true code is c or c + 1) by arithmetic on the map's lines (CompactCall::
// encode_lines): a = max(|y|, 2^-31), its binary octave picks a decade boundary whose low bits
// name the decade above it, one comparison the decade, which picks the slope and intercept of
// z = y * slope - sign(y) * intercept; floor(z) is the magnitude index + 1 for y >= 0 and minus
// it - 2 for y < 0 (the ranks below zero run the other way). The four vectors' floors are packed
// with saturation into bytes (in kPlanesOrder's order) and made codes: for the signed map
// rank = floor + 127 (saturated at 0 below the most negative entry), for the unsigned one the
// floor itself (0 for every y < 0). Then as fo_quant_encode: c + (y > thresholds[c]), the
// thresholds looked up by VBMI (Planes256). Equal to fo_quant_encode for every float y in
// [-1 - 2^-23, 1 + 2^-23]: tools/exhaustive_encode.py, tests/test_state_dtypes.py.
template <bool Signed>
__attribute__((target("avx512vbmi"), noinline)) void encode_block_vbmi_finite(
    const float* __restrict in, float inv, uint8_t* __restrict q, const float* __restrict lines,
    const uint8_t* __restrict thr_planes, int n) {
    const Planes256 thr(thr_planes);
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512 tiny = _mm512_set1_ps(4.656612873077392578125e-10f);  // 2^-31
    const __m512 bound_lo = _mm512_loadu_ps(lines), bound_hi = _mm512_loadu_ps(lines + 16);
    const __m512 slopes = _mm512_loadu_ps(lines + 32), icepts = _mm512_loadu_ps(lines + 48);
    const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
    const __m512i one32 = _mm512_set1_epi32(1);
    const __m512i one = _mm512_set1_epi8(1);
    // 64 values from element i, of which `rest` (64 in every group but a short block's last)
    // are the block's: inlined twice, so full groups take no masks
    const auto group = [&](int i, int rest)
                           __attribute__((always_inline, target("avx512vbmi"))) {
        __m512 y[4];
        __m512i z[4];
        for (int v = 0; v < 4; ++v) {
            y[v] = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes(16 * v, rest), in + i + 16 * v),
                                 vinv);
            // |y| raised to 2^-31: imm 0b1011 = larger magnitude, sign cleared; its exponent
            // (96..127) indexes the octaves by its low 5 bits
            const __m512 a = _mm512_range_ps(y[v], tiny, 0xb);
            const __m512i oct = _mm512_srli_epi32(_mm512_castps_si512(a), 23);
            const __m512 bound = _mm512_permutex2var_ps(bound_lo, oct, bound_hi);
            const __m512i dec = _mm512_mask_add_epi32(
                _mm512_castps_si512(bound), _mm512_cmp_ps_mask(a, bound, _CMP_LT_OQ),
                _mm512_castps_si512(bound), one32);  // low 4 bits: the decade
            const __m512 slope = _mm512_permutexvar_ps(dec, slopes);
            // sign(y) * intercept: imm 0x78 = intercept ^ (y & sign)
            const __m512 icept = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(
                _mm512_castps_si512(_mm512_permutexvar_ps(dec, icepts)),
                _mm512_castps_si512(y[v]), sign, 0x78));
            z[v] = _mm512_cvt_roundps_epi32(_mm512_sub_ps(_mm512_mul_ps(y[v], slope), icept),
                                            _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        }
        const __m512i w01 = _mm512_packs_epi32(z[0], z[1]);
        const __m512i w23 = _mm512_packs_epi32(z[2], z[3]);
        __m512i c;  // the candidates, in kPlanesOrder's order
        if constexpr (Signed)  // floor in [-128, 127]: + 128 (xor), - 1 saturated at 0
            c = _mm512_subs_epu8(_mm512_xor_si512(_mm512_packs_epi16(w01, w23),
                                                  _mm512_set1_epi8(static_cast<char>(0x80))),
                                 one);
        else  // floor in [-256, 254]: below 0 saturated to 0
            c = _mm512_packus_epi16(w01, w23);
        __m512i t[4];
        thr.ordered(c, t);
        const __mmask64 up = _mm512_kunpackd(
            _mm512_kunpackw(_mm512_cmp_ps_mask(y[3], _mm512_castsi512_ps(t[3]), _CMP_GT_OQ),
                            _mm512_cmp_ps_mask(y[2], _mm512_castsi512_ps(t[2]), _CMP_GT_OQ)),
            _mm512_kunpackw(_mm512_cmp_ps_mask(y[1], _mm512_castsi512_ps(t[1]), _CMP_GT_OQ),
                            _mm512_cmp_ps_mask(y[0], _mm512_castsi512_ps(t[0]), _CMP_GT_OQ)));
        const __m512i cb = _mm512_permutexvar_epi8(thr.order, c);  // element order
        const __mmask64 k = rest >= 64 ? ~static_cast<__mmask64>(0)
                                       : (static_cast<__mmask64>(1) << rest) - 1;
        _mm512_mask_storeu_epi8(q + i, k, _mm512_mask_add_epi8(cb, up, cb, one));
    };
    int i = 0;
    for (; i + 64 <= n; i += 64) group(i, 64);
    if (i < n) group(i, n - i);
}

// encode_block's loop (y = x * inv) with the thresholds looked up 64 at a time (Planes256).
__attribute__((target("avx512vbmi"), noinline)) void encode_block_vbmi(
    const float* __restrict in, float inv, uint8_t* __restrict q, const int* __restrict lut,
    const uint8_t* __restrict thr_planes, int n) {
    const Planes256 thr(thr_planes);
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512i one = _mm512_set1_epi32(1);
    for (int i = 0; i < n; i += 64) {
        __m512 y[4];
        __m512i c[4];
        __mmask16 k[4];
        for (int v = 0; v < 4; ++v) {
            k[v] = lanes(i + 16 * v, n);
            y[v] = _mm512_mul_ps(_mm512_maskz_loadu_ps(k[v], in + i + 16 * v), vinv);
            c[v] = encode_lookup(y[v], k[v], lut);
        }
        __m512i cb = _mm512_castsi128_si512(_mm512_cvtepi32_epi8(c[0]));
        cb = _mm512_inserti32x4(cb, _mm512_cvtepi32_epi8(c[1]), 1);
        cb = _mm512_inserti32x4(cb, _mm512_cvtepi32_epi8(c[2]), 2);
        cb = _mm512_inserti32x4(cb, _mm512_cvtepi32_epi8(c[3]), 3);
        __m512i t[4];
        thr(cb, t);
        for (int v = 0; v < 4; ++v) {
            __m512i code = _mm512_mask_add_epi32(
                c[v], _mm512_cmp_ps_mask(y[v], _mm512_castsi512_ps(t[v]), _CMP_GT_OQ), c[v], one);
            code = _mm512_mask_mov_epi32(code, _mm512_cmp_ps_mask(y[v], y[v], _CMP_UNORD_Q),
                                         _mm512_set1_epi32(255));
            _mm_mask_storeu_epi8(q + i + 16 * v, k[v], _mm512_cvtepi32_epi8(code));
        }
    }
}
#endif

// n 8-bit codes of slot k's map (signedness s) dequantized: map[code] * a (one float32
// multiplication).
__attribute__((noinline)) void decode_block(const CompactCall& c, bool s,
                                            const uint8_t* __restrict q, float a, int n,
                                            float* __restrict out) {
    const float* __restrict m = c.map[s];
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    if (c.vbmi) {
        decode_block_vbmi(q, c.map_planes[s], a, n, out);
        return;
    }
    const Table256 map(m);
    const __m512 va = _mm512_set1_ps(a);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = lanes(i, n);
        const __m512i code = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, q + i));
        _mm512_mask_storeu_ps(out + i, k, _mm512_mul_ps(map[code], va));
    }
#else
    for (int i = 0; i < n; ++i) out[i] = m[q[i]] * a;
#endif
}

// State slot k of tensor t, block at `at` (a multiple of kB): widened or dequantized
// (map[code] * absmax, one float32 multiplication).
__attribute__((noinline)) void load_state(const CompactCall& c, const CompactTensor& t, int k,
                                          int64_t at, int n, float* __restrict out) {
    switch (t.kind[k]) {
        case StateKind::kFloat32: {
            const float* __restrict s = as<float>(t.state[k]) + at;
            for (int i = 0; i < n; ++i) out[i] = s[i];
            break;
        }
        case StateKind::kBFloat16: {
            const uint16_t* __restrict s = as<uint16_t>(t.state[k]) + at;
            for (int i = 0; i < n; ++i) out[i] = fo_bf16_to_float(s[i]);
            break;
        }
        case StateKind::kUInt8: {
            decode_block(c, t.qsigned[k], as<uint8_t>(t.state[k]) + at, t.absmax[k][at / kB],
                         n, out);
            break;
        }
    }
}

// The codes of a block of values with absmax a (fusedopt/compact.h: fo_quant_encode of
// fo_quant_normalize(x, a) -- x * (1 / a), one reciprocal per block --, or of 0 where a == 0).
// The tables are the call's for the map of signedness `qsigned`; where the CPU has VBMI
// (c.vbmi) the AVX-512 copy looks the thresholds up by VBMI and finds the candidate codes on the
// map's lines.
__attribute__((noinline)) void encode_block(const CompactCall& c, bool qsigned,
                                            const float* __restrict in, float a,
                                            uint8_t* __restrict q, int n) {
    const int* __restrict lut = c.encode[qsigned];
    const float* __restrict th = c.thresholds[qsigned];
    if (a == 0.0f) {
        const uint8_t zero = static_cast<uint8_t>(fo_quant_encode(0.0f, lut, th));
        for (int i = 0; i < n; ++i) q[i] = zero;
        return;
    }
    if (fo_quant_tiny(a)) {  // a subnormal absmax: x and a scaled by 2^64 first (rare)
        for (int i = 0; i < n; ++i)
            q[i] = static_cast<uint8_t>(fo_quant_encode(fo_quant_normalize(in[i], a), lut, th));
        return;
    }
    const float inv = fo_quant_inv(a);
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    if (c.vbmi) {
        const uint8_t* thr_planes = c.thr_planes[qsigned];
        const float* lines = c.encode_lines[qsigned];
        if (!(a < std::numeric_limits<float>::infinity()))  // NaN or infinite: NaN y
            encode_block_vbmi(in, inv, q, lut, thr_planes, n);
        else if (qsigned)
            encode_block_vbmi_finite<true>(in, inv, q, lines, thr_planes, n);
        else
            encode_block_vbmi_finite<false>(in, inv, q, lines, thr_planes, n);
        return;
    }
    // fo_quant_encode, 16 lanes at a time, the thresholds looked up in registers
    const Table256 thr(th);
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512i one = _mm512_set1_epi32(1);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = lanes(i, n);
        const __m512 y = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, in + i), vinv);
        const __m512i cand = encode_lookup(y, k, lut);
        __m512i code = _mm512_mask_add_epi32(cand, _mm512_cmp_ps_mask(y, thr[cand], _CMP_GT_OQ),
                                             cand, one);
        code = _mm512_mask_mov_epi32(code, _mm512_cmp_ps_mask(y, y, _CMP_UNORD_Q),
                                     _mm512_set1_epi32(255));
        _mm_mask_storeu_epi8(q + i, k, _mm512_cvtepi32_epi8(code));
    }
#else
    for (int i = 0; i < n; ++i) q[i] = static_cast<uint8_t>(fo_quant_encode(in[i] * inv, lut, th));
#endif
}

// The block's new values into state slot k: as float32, rounded to bfloat16 (nearest even), or
// requantized: absmax = max |x| (a NaN wins), codes of x * (1 / absmax) (encode_block).
__attribute__((noinline)) void store_state(const CompactCall& c, const CompactTensor& t, int k,
                                           int64_t at, int n, const float* __restrict in) {
    switch (t.kind[k]) {
        case StateKind::kFloat32: {
            float* __restrict s = as<float>(t.state[k]) + at;
            for (int i = 0; i < n; ++i) s[i] = in[i];
            break;
        }
        case StateKind::kBFloat16: {
            uint16_t* __restrict s = as<uint16_t>(t.state[k]) + at;
            for (int i = 0; i < n; ++i) s[i] = fo_float_to_bf16(in[i]);
            break;
        }
        case StateKind::kUInt8: {
            // |x| as bits orders like |x| itself, and any NaN lies above infinity.
            unsigned mx = 0;
            for (int i = 0; i < n; ++i) {
                const unsigned b = fo_float_bits(in[i]) & 0x7fffffffu;
                mx = b > mx ? b : mx;
            }
            const float a = fo_bits_float(mx);
            t.absmax[k][at / kB] = a;
            encode_block(c, t.qsigned[k], in, a, as<uint8_t>(t.state[k]) + at, n);
            break;
        }
    }
}

// The block's new param values (the master weights, when given, are updated in place) into a
// 16-bit param, rounded to nearest even or (bfloat16, stochastic_rounding) stochastically.
__attribute__((noinline)) void store_param(const CompactCall& c, const CompactTensor& t,
                                           int64_t at, int n, const float* __restrict in) {
    if (t.dtype == DType::kFloat16) {
        uint16_t* __restrict p = as<uint16_t>(t.param) + at;
        for (int i = 0; i < n; ++i) p[i] = fo_float_to_half(in[i]);
    } else if (c.stochastic_rounding) {
        uint16_t* __restrict p = as<uint16_t>(t.param) + at;
        const unsigned key = t.sr_key;
        const unsigned hi = static_cast<unsigned>(static_cast<uint64_t>(at) >> 32);
        const unsigned lo = static_cast<unsigned>(at);  // a block never crosses 2^32
        for (int i = 0; i < n; ++i)
            p[i] = fo_float_to_bf16_sr(in[i], key, lo + static_cast<unsigned>(i), hi);
    } else {
        uint16_t* __restrict p = as<uint16_t>(t.param) + at;
        for (int i = 0; i < n; ++i) p[i] = fo_float_to_bf16(in[i]);
    }
}

// The fused pass over one block. `InRegisters` (every state bfloat16): each element's states
// are widened, updated and rounded to nearest even in registers, one loop over the block. Else
// (8-bit states, or a mix of kinds): the states are widened or dequantized into `sv` (L1 buffers)
// first, the loop updates them there and keeps each one's absmax as an integer maximum, then
// 8-bit states are encoded with that absmax and the others stored. `pio` holds the param (the
// param or master weights themselves when float32, else a buffer), `gin` the grad (the grad
// itself when float32 and unscaled, else a buffer).
template <bool InRegisters, typename Op>
__attribute__((always_inline)) inline void fused_block(const CompactCall& c,
                                                       const CompactTensor& t, const Op& op,
                                                       int64_t at, int n, float* __restrict pio,
                                                       const float* __restrict gin,
                                                       float (*__restrict sv)[kB]) {
    constexpr unsigned S = Op::kStates;
    constexpr bool H0 = (S & state_bit(0)) != 0, H1 = (S & state_bit(1)) != 0,
                   H2 = (S & state_bit(2)) != 0;
    uint16_t* __restrict h0 = InRegisters && H0 ? as<uint16_t>(t.state[0]) + at : nullptr;
    uint16_t* __restrict h1 = InRegisters && H1 ? as<uint16_t>(t.state[1]) + at : nullptr;
    uint16_t* __restrict h2 = InRegisters && H2 ? as<uint16_t>(t.state[2]) + at : nullptr;
    if constexpr (!InRegisters) {
        for (int k = 0; k < 3; ++k)
            if (S & state_bit(k)) load_state(c, t, k, at, n, sv[k]);
    }
    float* __restrict v0 = sv[0];
    float* __restrict v1 = sv[1];
    float* __restrict v2 = sv[2];
    unsigned mx0 = 0, mx1 = 0, mx2 = 0;  // max |x| as bits (orders as |x|; a NaN above inf)
    FUSEDOPT_IVDEP
    for (int i = 0; i < n; ++i) {
        float p = pio[i];
        const float g = gin[i];
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f;
        if constexpr (InRegisters) {
            if constexpr (H0) s0 = fo_bf16_to_float(h0[i]);
            if constexpr (H1) s1 = fo_bf16_to_float(h1[i]);
            if constexpr (H2) s2 = fo_bf16_to_float(h2[i]);
        } else {
            if constexpr (H0) s0 = v0[i];
            if constexpr (H1) s1 = v1[i];
            if constexpr (H2) s2 = v2[i];
        }
        op(p, g, s0, s1, s2);
        pio[i] = p;
        if constexpr (InRegisters) {
            if constexpr (H0) h0[i] = fo_float_to_bf16(s0);
            if constexpr (H1) h1[i] = fo_float_to_bf16(s1);
            if constexpr (H2) h2[i] = fo_float_to_bf16(s2);
        } else {
            if constexpr (H0) {
                v0[i] = s0;
                const unsigned b = fo_float_bits(s0) & 0x7fffffffu;
                mx0 = b > mx0 ? b : mx0;
            }
            if constexpr (H1) {
                v1[i] = s1;
                const unsigned b = fo_float_bits(s1) & 0x7fffffffu;
                mx1 = b > mx1 ? b : mx1;
            }
            if constexpr (H2) {
                v2[i] = s2;
                const unsigned b = fo_float_bits(s2) & 0x7fffffffu;
                mx2 = b > mx2 ? b : mx2;
            }
        }
    }
    if constexpr (!InRegisters) {
        const unsigned mx[3] = {mx0, mx1, mx2};
        for (int k = 0; k < 3; ++k) {
            if (!(S & state_bit(k))) continue;
            if (t.kind[k] != StateKind::kUInt8) {
                store_state(c, t, k, at, n, sv[k]);
                continue;
            }
            const float a = fo_bits_float(mx[k]);
            t.absmax[k][at / kB] = a;
            encode_block(c, t.qsigned[k], sv[k], a, as<uint8_t>(t.state[k]) + at, n);
        }
    }
}

// Whether every state of tensor t that the rule uses is bfloat16 (and there is one).
bool all_bfloat16(const CompactTensor& t, unsigned states) {
    bool all = states != 0;
    for (int k = 0; k < 3; ++k)
        if (states & state_bit(k)) all = all && t.kind[k] == StateKind::kBFloat16;
    return all;
}

struct Unit {
    int64_t tensor;
    int64_t begin;
};

// The loop: chunks of kCompactChunk elements of one tensor on the pool's threads; in each, block
// by block, the fused pass (fused_block: in registers when every state is bfloat16).
template <typename Op>
void compact_loop(const CompactCall& c, const Op& op0) {
    constexpr unsigned S = Op::kStates;
    thread_local std::vector<Unit> units;  // reused: no allocation once grown
    units.clear();
    for (int64_t k = 0; k < c.ntensors; ++k)
        for (int64_t at = 0; at < c.tensors[k].size; at += kCompactChunk) units.push_back({k, at});
    const Unit* u = units.data();
    parallel_chunks(static_cast<int64_t>(units.size()), threads_for(c.total), [&](int64_t j) {
        const Op op = op0;  // a local copy: the scalars stay in registers
        const CompactTensor& t = c.tensors[u[j].tensor];
        const int64_t end = std::min(t.size, u[j].begin + kCompactChunk);
        const bool in_registers = all_bfloat16(t, S);
        // the param in place where it is float32 (or has float32 master weights), the grad where
        // it is float32 and unscaled; else their float32 values in buffers
        const bool p_direct = t.master != nullptr || t.dtype == DType::kFloat32;
        const bool g_direct = t.dtype == DType::kFloat32 && !c.grad_scale;
        alignas(64) float p[kB], g[kB], s[3][kB];
        if (in_registers && t.dtype == DType::kFloat32 && !t.master && g_direct) {
            // every state bfloat16, the param and grad float32 in place: no buffer and nothing
            // to store after a block, so one loop over the whole chunk (the same element-wise
            // pass, in fewer and longer streams)
            const int64_t at = u[j].begin;
            fused_block<true>(c, t, op, at, static_cast<int>(end - at), as<float>(t.param) + at,
                              as<float>(t.grad) + at, s);
            return;
        }
        for (int64_t at = u[j].begin; at < end; at += kB) {
            const int n = static_cast<int>(std::min<int64_t>(kB, end - at));
            float* pio = p_direct ? as<float>(t.master ? t.master : t.param) + at : p;
            const float* gin = g_direct ? as<float>(t.grad) + at : g;
            if (!p_direct) load_values(t.dtype, t.param, at, n, p);
            if (!g_direct) load_grad(c, t, at, n, g);
            if (in_registers)
                fused_block<true>(c, t, op, at, n, pio, gin, s);
            else
                fused_block<false>(c, t, op, at, n, pio, gin, s);
            if (t.master || t.dtype != DType::kFloat32) store_param(c, t, at, n, pio);
        }
    });
}

void sgd(const CompactCall& c, const rules::SgdScalars<double>& s, const rules::SgdFlags& f) {
    const rules::SgdScalars<float> st = s.cast<float>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            with_bool(f.has_momentum, [&](auto Mom) {
                with_bool(f.nesterov, [&](auto Nes) {
                    compact_loop(c, SgdOp<float, Max.value, WD.value, Mom.value, Nes.value>{st});
                });
            });
        });
    });
}

void adagrad(const CompactCall& c, const rules::AdagradScalars<double>& s,
             const rules::AdagradFlags& f) {
    const rules::AdagradScalars<float> st = s.cast<float>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            compact_loop(c, AdagradOp<float, Max.value, WD.value>{st});
        });
    });
}

void rmsprop(const CompactCall& c, const rules::RmspropScalars<double>& s,
             const rules::RmspropFlags& f) {
    const rules::RmspropScalars<float> st = s.cast<float>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            with_bool(f.centered, [&](auto C) {
                with_bool(f.has_momentum, [&](auto Mom) {
                    compact_loop(c, RmspropOp<float, Max.value, WD.value, C.value, Mom.value>{st});
                });
            });
        });
    });
}

void adam(const CompactCall& c, const rules::AdamScalars<double>& s, const rules::AdamFlags& f) {
    const rules::AdamScalars<float> st = s.cast<float>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            with_bool(f.amsgrad, [&](auto Ams) {
                compact_loop(c, AdamOp<float, Max.value, WD.value, Ams.value>{st});
            });
        });
    });
}

void adamax(const CompactCall& c, const rules::AdamaxScalars<double>& s,
            const rules::AdamaxFlags& f) {
    const rules::AdamaxScalars<float> st = s.cast<float>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            compact_loop(c, AdamaxOp<float, Max.value, WD.value>{st});
        });
    });
}

// CompactTable::encode_mismatches: encode_block (absmax 1, so y = x) against fo_quant_encode.
uint64_t encode_mismatches(const CompactCall& c, bool qsigned, uint32_t first, uint32_t last,
                           uint32_t stride) {
    alignas(64) float in[kB];
    uint8_t q[kB];
    const int* lut = c.encode[qsigned];
    const float* th = c.thresholds[qsigned];
    uint64_t bad = 0;
    for (uint64_t b = first; b <= last;) {
        int n = 0;
        for (; n < kB && b <= last; ++n, b += stride) in[n] = fo_bits_float(static_cast<unsigned>(b));
        encode_block(c, qsigned, in, 1.0f, q, n);
        for (int i = 0; i < n; ++i) bad += q[i] != fo_quant_encode(in[i], lut, th);
    }
    return bad;
}

}  // namespace

#define FUSEDOPT_STR2(x) #x
#define FUSEDOPT_STR(x) FUSEDOPT_STR2(x)
const CompactTable& compact_table() {
    static const CompactTable t{FUSEDOPT_STR(FUSEDOPT_ISA), sgd, adagrad, rmsprop, adam, adamax,
                                encode_mismatches};
    return t;
}

}  // namespace FUSEDOPT_ISA
}  // namespace cpu
}  // namespace fusedopt
