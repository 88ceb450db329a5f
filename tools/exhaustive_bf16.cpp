// Exhaustive check of the bfloat16 narrowings of fusedopt/half.h and fusedopt/compact.h against
// their first form (main 96b5c38): round, then select the NaN sign|0x7fc0 at 16 bits. Now a NaN
// is made sign|0x7fc00000 before rounding (fo_bf16_nan_canonical_bits); this shows the bits equal
// for EVERY float32 pattern: fo_float_to_bf16 (to nearest even), fo_float_to_bf16_sr (two keys),
// every NaN sign|0x7fc0, and the widening fo_bf16_to_float for every bfloat16 pattern. Build it
// with each kernel copy's flags (csrc/CMakeLists.txt), so that the vectorized code of that copy
// runs (the loops below vectorize):
//
//   for f in "" -mavx2 "-mavx512f -mavx512vl -mavx512bw -mavx512dq -mprefer-vector-width=512"; do
//    g++ -O3 -ffp-contract=off -fno-math-errno $f -Icsrc/include -o /tmp/e tools/exhaustive_bf16.cpp
//    /tmp/e; done
//
// About 15-35 s each on one Zen 4 core. Exit status 1 on any mismatch.
#include "fusedopt/compact.h"
#include <cstdint>
#include <cstdio>
#include <vector>

using namespace fusedopt;

// The first forms (main 96b5c38).
static inline unsigned short old_bf16(float x) {
    const unsigned u = fo_float_bits(x);
    const unsigned rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const unsigned nan = ((u >> 16) & 0x8000u) | 0x7fc0u;
    const bool is_nan = static_cast<int>(u & 0x7fffffffu) > 0x7f800000;
    return static_cast<unsigned short>(fo_select(is_nan, nan, rounded));
}
static inline unsigned short old_sr(float x, unsigned key, unsigned lo, unsigned hi) {
    const unsigned r = fo_fmix32(fo_fmix32(key ^ lo) ^ hi) >> 16;
    const unsigned u = fo_float_bits(x);
    const unsigned rounded = (u + r) >> 16;
    const unsigned nan = ((u >> 16) & 0x8000u) | 0x7fc0u;
    const bool is_nan = static_cast<int>(u & 0x7fffffffu) > 0x7f800000;
    return static_cast<unsigned short>(fo_select(is_nan, nan, rounded));
}
__attribute__((noinline)) void sr_new(const float* __restrict x, uint16_t* __restrict o, int n,
                                      unsigned key, unsigned lo) {
    for (int i = 0; i < n; ++i)
        o[i] = fo_float_to_bf16_sr(x[i], key, lo + static_cast<unsigned>(i), 7u);
}
__attribute__((noinline)) void sr_old(const float* __restrict x, uint16_t* __restrict o, int n,
                                      unsigned key, unsigned lo) {
    for (int i = 0; i < n; ++i) o[i] = old_sr(x[i], key, lo + static_cast<unsigned>(i), 7u);
}
__attribute__((noinline)) void conv_new(const float* __restrict x, uint16_t* __restrict o, int n) {
    for (int i = 0; i < n; ++i) o[i] = fo_float_to_bf16(x[i]);
}
__attribute__((noinline)) void conv_old(const float* __restrict x, uint16_t* __restrict o, int n) {
    for (int i = 0; i < n; ++i) o[i] = old_bf16(x[i]);
}
__attribute__((noinline)) void widen(const uint16_t* __restrict b, float* __restrict o, int n) {
    for (int i = 0; i < n; ++i) o[i] = fo_bf16_to_float(b[i]);
}
int main() {
    const int N = 1 << 24;
    std::vector<float> x(N);
    std::vector<uint16_t> a(N), b(N);
    unsigned long long bad = 0, nan_bad = 0, srbad = 0;
    for (unsigned long long base = 0; base < (1ull << 32); base += N) {
        for (int i = 0; i < N; ++i) x[i] = fo_bits_float(static_cast<unsigned>(base + i));
        for (unsigned key : {0x12345678u, 0x9abcdef1u}) {
            sr_new(x.data(), a.data(), N, key, static_cast<unsigned>(base));
            sr_old(x.data(), b.data(), N, key, static_cast<unsigned>(base));
            for (int i = 0; i < N; ++i) srbad += a[i] != b[i];
        }
        conv_new(x.data(), a.data(), N);
        conv_old(x.data(), b.data(), N);
        for (int i = 0; i < N; ++i) {
            bad += a[i] != b[i];
            if (x[i] != x[i])
                nan_bad += (a[i] & 0x7fffu) != 0x7fc0u || (a[i] >> 15) != ((base + i) >> 31);
        }
    }
    // widening: every bfloat16 pattern, exact (bits << 16)
    std::vector<uint16_t> h(65536);
    std::vector<float> w(65536);
    for (int i = 0; i < 65536; ++i) h[i] = static_cast<uint16_t>(i);
    widen(h.data(), w.data(), 65536);
    unsigned long long wbad = 0;
    for (int i = 0; i < 65536; ++i) wbad += fo_float_bits(w[i]) != (static_cast<unsigned>(i) << 16);
    std::printf("to nearest even: 2^32 patterns, %llu mismatches, %llu NaNs not sign|0x7fc0\n"
                "stochastic: 2 keys x 2^32 patterns, %llu mismatches\n"
                "widening: 2^16 patterns, %llu mismatches\n",
                bad, nan_bad, srbad, wbad);
    return bad || nan_bad || wbad || srbad;
}
