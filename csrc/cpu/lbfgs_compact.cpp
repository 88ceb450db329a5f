// csrc/cpu/lbfgs_compact.cpp -- the two passes of the L-BFGS direction through the compact form
// (see lbfgs.h), compiled once per instruction set (FUSEDOPT_ISA, like kernels.cpp; the table of
// lbfgs_compact.h, chosen at run time by lbfgs_compact_dispatch.cpp). Every copy has the same
// bits: each sum is the float64 blocked sum of blocked_sum.h, products and sums in the array's
// dtype in one fixed order, no FMA contraction (-ffp-contract=off).
//
// Pass 1 (dots_pass: lbfgs.h's compact_dots) streams every history row once against g (and
// the newest y, for the new Gram column). The calling thread adds the block sums in block order
// and solves the small triangular systems (compact_coefficients, compiled once). Pass 2
// (combine_pass: compact_combine) streams the rows once more and writes out, taking g . out in
// the sweep of the last pair. So a direction reads 4 count + 2 vectors and writes one, against
// the two-loop's (2 count + 1) x 3. Both passes, and L-BFGS-B's rows_dots_many (rows_dots_pass),
// give each thread runs of kRunBlocks blocks (lbfgs_blocks.h) and sweep a run row by row (pass
// 2: two pairs per sweep), so that each row is read in one long sequential stretch while the
// run of g (pass 1) or of the sum being built (pass 2, a buffer of the thread) stays in L2.
// Pass 2 writes each finished piece of a large out with non-temporal stores (out's lines are not
// read before they are written; a store moves bits, it rounds nothing).
#include <emmintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fusedopt/blocked_sum.h"
#include "lbfgs.h"
#include "lbfgs_blocks.h"
#include "lbfgs_compact.h"
#include "parallel.h"

#ifndef FUSEDOPT_ISA
#error "FUSEDOPT_ISA must name the instruction set of this copy (generic, avx2, avx512)"
#endif

namespace fusedopt {
namespace cpu {
namespace FUSEDOPT_ISA {
namespace {
using lbfgs::Ring;
using namespace lbfgs::blocks;  // NOLINT: the block helpers of lbfgs_blocks.h

// Elements per piece (a multiple of 8, so that every piece but a block's last starts a multiple
// of 8 elements after the block's start, as lanes_add requires).
constexpr int64_t kCompactPiece = 512;
static_assert(kReduceBlock % kCompactPiece == 0 && kCompactPiece % kSumLanes == 0, "pieces");

// Bytes of out from which pass 2 writes with non-temporal stores: beyond the caches' reach (a
// smaller out is written through the cache, where the line search reads it next).
constexpr int64_t kStreamBytes = int64_t(32) << 20;

// dst[0, len) = src[0, len); with `stream`, the 16-byte aligned part by non-temporal stores.
template <typename T>
inline void store_piece(T* __restrict dst, const T* __restrict src, int64_t len, bool stream) {
    int64_t i = 0;
    if (stream) {
        for (; i < len && (reinterpret_cast<uintptr_t>(dst + i) & 15) != 0; ++i) dst[i] = src[i];
        if constexpr (sizeof(T) == 8) {
            for (; i + 2 <= len; i += 2)
                _mm_stream_pd(reinterpret_cast<double*>(dst + i),
                              _mm_loadu_pd(reinterpret_cast<const double*>(src + i)));
        } else {
            for (; i + 4 <= len; i += 4)
                _mm_stream_ps(reinterpret_cast<float*>(dst + i),
                              _mm_loadu_ps(reinterpret_cast<const float*>(src + i)));
        }
    }
    for (; i < len; ++i) dst[i] = src[i];
}

// Eight float64 lanes as one vector (GCC's vector extension: one zmm register in the AVX-512
// copy, two ymm in the AVX2 copy, four xmm in the generic one); every operation on it is the
// IEEE operation lane by lane, as on the scalars.
typedef double Lanes __attribute__((vector_size(kSumLanes * sizeof(double))));
typedef float Lanes32 __attribute__((vector_size(kSumLanes * sizeof(float))));

// Elements i .. i + 7 of p, as float64 (exact).
template <typename T>
__attribute__((always_inline)) inline Lanes load_lanes(const T* p) {
    if constexpr (sizeof(T) == sizeof(double)) {
        Lanes v;
        std::memcpy(&v, p, sizeof(v));
        return v;
    } else {
        Lanes32 f;
        std::memcpy(&f, p, sizeof(f));
        return __builtin_convertvector(f, Lanes);
    }
}

// Sums per sweep of the first pass: 4 in the AVX-512 copy (a Lanes is one zmm register: four
// chains of additions overlap), else 1 (lanes_add per sum; the generic and AVX2 copies ran
// slower with the vector type, whose 8 lanes take 4 xmm or 2 ymm registers there).
#if defined(__AVX512F__)
constexpr int kGroup = 4;
#else
constexpr int kGroup = 1;
#endif

// The lanes of K blocked sums over one piece [lo, hi) of a block, in one sweep: sum q adds
// a[q][i] * b[q][i] (in float64) to its lanes acc[q][0..8), each lane in the order of
// lanes_add (lbfgs_blocks.h) -- the K sums advance together, so that their K chains of
// additions overlap instead of each sum's one chain setting the pace alone.
template <int K, typename T>
__attribute__((always_inline)) inline void lanes_dots(double* const (&acc)[K], int64_t lo,
                                                      int64_t hi, const T* const (&a)[K],
                                                      const T* const (&b)[K]) {
    Lanes l[K];
    for (int q = 0; q < K; ++q) std::memcpy(&l[q], acc[q], sizeof(Lanes));
    int64_t i = lo;
    for (; i + kSumLanes <= hi; i += kSumLanes)
        for (int q = 0; q < K; ++q) l[q] = l[q] + load_lanes(a[q] + i) * load_lanes(b[q] + i);
    for (int q = 0; q < K; ++q) std::memcpy(acc[q], &l[q], sizeof(Lanes));
    for (int j = 0; i < hi; ++i, ++j)     // a block's last piece: the tail, lane by lane
        for (int q = 0; q < K; ++q)
            acc[q][j] = acc[q][j] + static_cast<double>(a[q][i]) * static_cast<double>(b[q][i]);
}

template <typename T>
void dots_pass(double* out, const Ring<T>& h, const T* g, int64_t gram_row, bool partials) {
    const int64_t n = h.n, c = h.count, nb = num_blocks(n);
    const bool gram = gram_row >= 0;
    const int64_t k = (gram ? 4 : 2) * c;
    if (k == 0) return;
    const T* yr = gram ? h.y + gram_row * n : nullptr;
    // A run of blocks [b0, b1) pair by pair (kRunBlocks): each pair's rows stream through the
    // run while g's run (and y_r's) stays in L2; within a block, piece by piece.
    auto run = [&](int64_t b0, int64_t b1, double* pb) {
        // The lanes of the k sums of each block of the run, carried from piece to piece.
        thread_local std::vector<double> lanes;
        lanes.assign(static_cast<size_t>((b1 - b0) * k * kSumLanes), 0.0);
        auto by = [](const T* __restrict a, const T* __restrict b) {
            return [a, b](int64_t i) {
                return static_cast<double>(a[i]) * static_cast<double>(b[i]);
            };
        };
        (void)by;  // not used by the AVX-512 copy
        for (int64_t j = 0; j < c; ++j) {
            const int64_t row = (h.head + j) % h.m;
            const T* sj = h.s + row * n;
            const T* yj = h.y + row * n;
            for (int64_t b = b0; b < b1; ++b) {
                double* const acc = lanes.data() + (b - b0) * k * kSumLanes;
                double* const sg = acc + j * kSumLanes;
                double* const ygl = acc + (c + j) * kSumLanes;
                double* const sgr = acc + (2 * c + j) * kSumLanes;
                double* const ygr = acc + (3 * c + j) * kSumLanes;
                const int64_t hi = std::min(n, (b + 1) * kReduceBlock);
                for (int64_t u = b * kReduceBlock; u < hi; u += kCompactPiece) {
                    const int64_t v = std::min(hi, u + kCompactPiece);
                    if (gram) {
                        if constexpr (kGroup >= 4) {
                            lanes_dots<4, T>({sg, ygl, sgr, ygr}, u, v, {sj, yj, sj, yj},
                                             {g, g, yr, yr});
                        } else {
                            lanes_add(sg, u, v, by(sj, g));
                            lanes_add(ygl, u, v, by(yj, g));
                            lanes_add(sgr, u, v, by(sj, yr));
                            lanes_add(ygr, u, v, by(yj, yr));
                        }
                    } else if constexpr (kGroup >= 4) {
                        lanes_dots<2, T>({sg, ygl}, u, v, {sj, yj}, {g, g});
                    } else {
                        lanes_add(sg, u, v, by(sj, g));
                        lanes_add(ygl, u, v, by(yj, g));
                    }
                }
            }
        }
        for (int64_t q = 0; q < (b1 - b0) * k; ++q)
            pb[q] = combine_lanes_at(lanes.data() + q * kSumLanes);
    };
    const double* part = run_results_k(n, k, kRunBlocks, run);
    if (partials) {
        std::memcpy(out, part, static_cast<size_t>(nb * k) * sizeof(double));
        return;
    }
    sums_in_order(out, part, nb, k);
}

template <typename T>
void combine_pass(double* res, T* out, const T* g, const Ring<T>& h, const double* cs,
                     const double* cy, double gamma, bool partials) {
    const int64_t n = h.n, c = h.count, nb = num_blocks(n);
    std::vector<T> ta(static_cast<size_t>(c)), tb(ta.size());
    for (int64_t k = 0; k < c; ++k) {
        ta[k] = static_cast<T>(cs[k]);
        tb[k] = static_cast<T>(cy[k]);
    }
    const T ng = static_cast<T>(-gamma);
    const bool stream = n * static_cast<int64_t>(sizeof(T)) >= kStreamBytes;
    // A run of blocks [b0, b1) (kRunBlocks): the sum being built for the whole run lives in a
    // buffer of the thread (in L2) while the pairs stream through it, two pairs per sweep (the
    // same additions in the same order, pair q then q + 1: half the buffer's traffic); the sweep
    // of the newest pair also takes g . out and stores each finished piece into out.
    auto run = [&](int64_t b0, int64_t b1, double* res) {
        const int64_t lo = b0 * kReduceBlock, hi = std::min(n, b1 * kReduceBlock);
        if (c == 0) {
            // -g exactly (ng * g would turn an infinite g into NaN only through gamma's cast;
            // with no pair the direction is the steepest descent itself).
            T* __restrict o = out;
            for (int64_t b = b0; b < b1; ++b)
                res[b - b0] = block_sum(b * kReduceBlock, std::min(n, (b + 1) * kReduceBlock),
                                        [&](int64_t i) {
                                            const T v = -g[i];
                                            o[i] = v;
                                            return static_cast<double>(g[i]) *
                                                   static_cast<double>(v);
                                        });
            return;
        }
        thread_local std::vector<T> buf_store;
        buf_store.resize(static_cast<size_t>(kRunBlocks * kReduceBlock));
        T* __restrict o = buf_store.data() - lo;  // o[i] is the buffer's element i - lo
        for (int64_t i = lo; i < hi; ++i) o[i] = ng * g[i];
        int64_t q = 0;
        for (; q + 2 < c; q += 2) {
            const int64_t r0 = (h.head + q) % h.m, r1 = (h.head + q + 1) % h.m;
            const T* __restrict s0 = h.s + r0 * n;
            const T* __restrict y0 = h.y + r0 * n;
            const T* __restrict s1 = h.s + r1 * n;
            const T* __restrict y1 = h.y + r1 * n;
            const T a0 = ta[q], b0c = tb[q], a1 = ta[q + 1], b1c = tb[q + 1];
            for (int64_t i = lo; i < hi; ++i)
                o[i] = (((o[i] + a0 * s0[i]) + b0c * y0[i]) + a1 * s1[i]) + b1c * y1[i];
        }
        for (; q + 1 < c; ++q) {
            const int64_t row = (h.head + q) % h.m;
            const T* __restrict sk = h.s + row * n;
            const T* __restrict yk = h.y + row * n;
            const T a = ta[q], b = tb[q];
            for (int64_t i = lo; i < hi; ++i) o[i] = (o[i] + a * sk[i]) + b * yk[i];
        }
        // The newest pair, and g . out in the same sweep, block by block, piece by piece.
        const int64_t last = (h.head + c - 1) % h.m;
        const T* __restrict sl = h.s + last * n;
        const T* __restrict yl = h.y + last * n;
        const T al = ta[c - 1], bl = tb[c - 1];
        for (int64_t b = b0; b < b1; ++b) {
            double acc[kSumLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
            const int64_t bhi = std::min(n, (b + 1) * kReduceBlock);
            for (int64_t u = b * kReduceBlock; u < bhi; u += kCompactPiece) {
                const int64_t v = std::min(bhi, u + kCompactPiece);
                lanes_add(acc, u, v, [&](int64_t i) {
                    const T w = (o[i] + al * sl[i]) + bl * yl[i];
                    o[i] = w;
                    return static_cast<double>(g[i]) * static_cast<double>(w);
                });
                store_piece(out + u, o + u, v - u, stream);
            }
            res[b - b0] = combine_lanes(acc);
        }
        // This thread's non-temporal stores reach memory before the run is handed back.
        if (stream) _mm_sfence();
    };
    const double* part = run_results_k(n, 1, kRunBlocks, run);
    if (partials)
        std::memcpy(res, part, static_cast<size_t>(nb) * sizeof(double));
    else
        res[0] = sum_in_order(part, nb, 1);
}

template <typename T>
double direction(T* out, const T* g, const Ring<T>& h, double* sy, double* yy,
                         int64_t gram_row) {
    const int64_t c = h.count, m = h.m;
    std::vector<double> dots(static_cast<size_t>(4 * c)), cs(static_cast<size_t>(c)),
        cy(cs.size());
    dots_pass(dots.data(), h, g, gram_row, false);
    if (gram_row >= 0)
        for (int64_t k = 0; k < c; ++k) {
            const int64_t row = (h.head + k) % m;
            sy[row * m + gram_row] = dots[2 * c + k];
            yy[row * m + gram_row] = dots[3 * c + k];
            yy[gram_row * m + row] = dots[3 * c + k];
        }
    const double gamma = lbfgs::compact_coefficients(dots.data(), sy, yy, m, h.head, c,
                                                     cs.data(), cy.data());
    double res = 0.0;
    combine_pass(&res, out, g, h, cs.data(), cy.data(), gamma, false);
    return res;
}

// L-BFGS-B's [S v | Y v] for the vectors vs[0, nv) (lbfgs.h's rows_dots_many), and with gr the
// Gram partials' row and column gr->row over the list gr->idx, in one pass: a run of blocks
// (kRunBlocks) row by row, within a block piece by piece; the vs' runs stay in L2. Each sum's
// lanes are dot_block's (lanes_add's order); the Gram sums over the list's entries in a block go
// entry e of the block's sub-list to lane e % 8, in increasing e (gram_blocks's bits).
template <typename T>
void rows_dots_pass(double* out, const T* s, const T* y, const T* const* vs, int64_t nv,
                    int64_t rows, int64_t n, const lbfgs::GramRow* gr) {
    const int64_t k = 2 * nv * rows;
    if (k == 0) return;
    const int64_t kg = 4 * rows * kSumLanes;  // the Gram lanes of a block
    auto run = [&](int64_t b0, int64_t b1, double* pb) {
        thread_local std::vector<double> lanes, glanes;
        lanes.assign(static_cast<size_t>((b1 - b0) * k * kSumLanes), 0.0);
        if (gr) glanes.assign(static_cast<size_t>((b1 - b0) * kg), 0.0);
        auto by = [](const T* __restrict a, const T* __restrict b) {
            return [a, b](int64_t i) {
                return static_cast<double>(a[i]) * static_cast<double>(b[i]);
            };
        };
        (void)by;  // not used by the AVX-512 copy
        for (int64_t j = 0; j < rows; ++j) {
            const T* __restrict sj = s + j * n;
            const T* __restrict yj = y + j * n;
            for (int64_t b = b0; b < b1; ++b) {
                const int64_t lo = b * kReduceBlock, hi = std::min(n, lo + kReduceBlock);
                double* const acc = lanes.data() + (b - b0) * k * kSumLanes;
                auto at = [&](int64_t q, int64_t yrow) {  // the lanes of s_j . vs[q] (y_j's)
                    return acc + (2 * rows * q + yrow * rows + j) * kSumLanes;
                };
                int64_t e0 = 0, ep = 0, e1 = 0;
                if (gr) {
                    e0 = ep = std::lower_bound(gr->idx, gr->idx + gr->na, lo) - gr->idx;
                    e1 = std::lower_bound(gr->idx + e0, gr->idx + gr->na, hi) - gr->idx;
                }
                for (int64_t u = lo; u < hi; u += kCompactPiece) {
                    const int64_t v = std::min(hi, u + kCompactPiece);
                    int64_t q = 0;
                    if constexpr (kGroup >= 4) {
                        for (; q + 1 < nv; q += 2)
                            lanes_dots<4, T>({at(q, 0), at(q, 1), at(q + 1, 0), at(q + 1, 1)}, u,
                                             v, {sj, yj, sj, yj},
                                             {vs[q], vs[q], vs[q + 1], vs[q + 1]});
                        for (; q < nv; ++q)
                            lanes_dots<2, T>({at(q, 0), at(q, 1)}, u, v, {sj, yj}, {vs[q], vs[q]});
                    } else {
                        for (; q < nv; ++q) {
                            lanes_add(at(q, 0), u, v, by(sj, vs[q]));
                            lanes_add(at(q, 1), u, v, by(yj, vs[q]));
                        }
                    }
                    if (!gr) continue;
                    // The Gram row's 4 dots with row j over the list's entries in the piece.
                    const T* __restrict sr = s + gr->row * n;
                    const T* __restrict yr = y + gr->row * n;
                    double* const gj = glanes.data() + (b - b0) * kg + j * kSumLanes;
                    const int64_t r8 = rows * kSumLanes;
                    for (; ep < e1 && gr->idx[ep] < v; ++ep) {
                        const int64_t i = gr->idx[ep];
                        double* const l = gj + (ep - e0) % kSumLanes;
                        const double a = static_cast<double>(sr[i]), c = static_cast<double>(yr[i]);
                        const double sv = static_cast<double>(sj[i]);
                        const double yv = static_cast<double>(yj[i]);
                        l[0] = l[0] + a * sv;                       // s_row . s_j
                        l[r8] = l[r8] + a * yv;                     // s_row . y_j
                        l[2 * r8] = l[2 * r8] + sv * c;             // s_j . y_row
                        l[3 * r8] = l[3 * r8] + c * yv;             // y_row . y_j
                    }
                }
            }
        }
        for (int64_t q = 0; q < (b1 - b0) * k; ++q)
            pb[q] = combine_lanes_at(lanes.data() + q * kSumLanes);
        if (!gr) return;
        const int64_t m = gr->m, mm = m * m, w = gr->row;
        for (int64_t b = b0; b < b1; ++b) {
            double* ss = gr->parts + 3 * mm * b;
            double* sy = ss + mm;
            double* yy = sy + mm;
            const double* ga = glanes.data() + (b - b0) * kg;
            auto sum = [&](int64_t c, int64_t j) {
                return combine_lanes_at(ga + (c * rows + j) * kSumLanes);
            };
            for (int64_t j = 0; j < rows; ++j) {
                ss[w * m + j] = ss[j * m + w] = sum(0, j);
                sy[w * m + j] = sum(1, j);
                sy[j * m + w] = sum(2, j);
                yy[w * m + j] = yy[j * m + w] = sum(3, j);
            }
        }
    };
    sums_in_order(out, run_results_k(n, k, kRunBlocks, run), num_blocks(n), k);
}

template <typename T>
constexpr lbfgs::CompactFns<T> fns_of() {
    return {&dots_pass<T>, &combine_pass<T>, &direction<T>, &rows_dots_pass<T>};
}

}  // namespace

#define FUSEDOPT_STR2(x) #x
#define FUSEDOPT_STR(x) FUSEDOPT_STR2(x)
const lbfgs::CompactDirectionTable& compact_direction_table() {
    static const lbfgs::CompactDirectionTable t{FUSEDOPT_STR(FUSEDOPT_ISA), fns_of<float>(),
                                                fns_of<double>()};
    return t;
}

}  // namespace FUSEDOPT_ISA
}  // namespace cpu
}  // namespace fusedopt
