// csrc/cpu/lbfgs_compact.cpp -- the L-BFGS direction through the compact form (see lbfgs.h).
//
// Pass 1 (compact_dots) streams every history row once against g (and the newest y, for the new
// Gram column), block by block on the worker pool: g's block (and y_r's) stays in cache while the
// 2 count rows stream from memory. The calling thread adds the block sums in block order and
// solves the small triangular systems (compact_coefficients). Pass 2 (compact_combine) streams
// the rows once more and writes out, taking g . out in the sweep of the last pair. So a
// direction reads 4 count + 2 vectors and writes one, against the two-loop's (2 count + 1) x 3.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "fusedopt/blocked_sum.h"
#include "lbfgs.h"
#include "lbfgs_blocks.h"
#include "parallel.h"

namespace fusedopt {
namespace cpu {
namespace lbfgs {
using namespace blocks;  // NOLINT: the block helpers of lbfgs_blocks.h

template <typename T>
void compact_dots(double* out, const Ring<T>& h, const T* g, int64_t gram_row, bool partials) {
    const int64_t n = h.n, c = h.count, nb = num_blocks(n);
    const bool gram = gram_row >= 0;
    const int64_t k = (gram ? 4 : 2) * c;
    if (k == 0) return;
    const T* yr = gram ? h.y + gram_row * n : nullptr;
    auto block = [&](int64_t lo, int64_t hi, double* pb) {
        // The lanes of the k sums, carried from piece to piece (lanes_add).
        thread_local std::vector<double> lanes;
        lanes.assign(static_cast<size_t>(k * kSumLanes), 0.0);
        double* acc = lanes.data();
        for (int64_t u = lo; u < hi; u += kPiece) {
            const int64_t v = std::min(hi, u + kPiece);
            for (int64_t j = 0; j < c; ++j) {
                const int64_t row = (h.head + j) % h.m;
                const T* __restrict sj = h.s + row * n;
                const T* __restrict yj = h.y + row * n;
                auto by = [&](const T* __restrict a, const T* __restrict b) {
                    return [a, b](int64_t i) {
                        return static_cast<double>(a[i]) * static_cast<double>(b[i]);
                    };
                };
                lanes_add(acc + j * kSumLanes, u, v, by(sj, g));
                lanes_add(acc + (c + j) * kSumLanes, u, v, by(yj, g));
                if (gram) {
                    lanes_add(acc + (2 * c + j) * kSumLanes, u, v, by(sj, yr));
                    lanes_add(acc + (3 * c + j) * kSumLanes, u, v, by(yj, yr));
                }
            }
        }
        for (int64_t q = 0; q < k; ++q) {
            double l[kSumLanes];
            for (int j = 0; j < kSumLanes; ++j) l[j] = acc[q * kSumLanes + j];
            pb[q] = combine_lanes(l);
        }
    };
    if (partials) {
        // Straight into the caller's (nb, k) array.
        parallel_chunks(nb, lbfgs_threads(n), [&](int64_t b) {
            block(b * kReduceBlock, std::min(n, (b + 1) * kReduceBlock), out + k * b);
        });
        return;
    }
    sums_in_order(out, block_results_k(n, k, block), nb, k);
}

double compact_coefficients(const double* dots, const double* sy, const double* yy, int64_t m,
                            int64_t head, int64_t count, double* cs, double* cy) {
    const int64_t c = count;
    if (c == 0) return 1.0;
    std::vector<int64_t> o(static_cast<size_t>(c));
    for (int64_t k = 0; k < c; ++k) o[k] = (head + k) % m;
    auto R = [&](int64_t i, int64_t j) { return sy[o[i] * m + o[j]]; };   // i <= j
    auto YY = [&](int64_t i, int64_t j) { return yy[o[i] * m + o[j]]; };
    const double* u = dots;          // S^T g
    const double* w = dots + c;      // Y^T g
    const double gamma = R(c - 1, c - 1) / YY(c - 1, c - 1);
    std::vector<double> p(static_cast<size_t>(c)), a(p.size());
    // p = R^{-1} u, back substitution (newest first), each sum j = i + 1 .. c - 1 in order.
    for (int64_t i = c - 1; i >= 0; --i) {
        double t = u[i];
        for (int64_t j = i + 1; j < c; ++j) t = t - R(i, j) * p[j];
        p[i] = t / R(i, i);
    }
    // z = D p + gamma (Y^T Y p - Y^T g); a = R^{-T} z, forward substitution (oldest first).
    for (int64_t i = 0; i < c; ++i) {
        double q = 0.0;
        for (int64_t j = 0; j < c; ++j) q = q + YY(i, j) * p[j];
        double t = R(i, i) * p[i] + gamma * (q - w[i]);
        for (int64_t j = 0; j < i; ++j) t = t - R(j, i) * a[j];
        a[i] = t / R(i, i);
    }
    for (int64_t i = 0; i < c; ++i) {
        cs[i] = -a[i];
        cy[i] = gamma * p[i];
    }
    return gamma;
}

template <typename T>
void compact_combine(double* res, T* out, const T* g, const Ring<T>& h, const double* cs,
                     const double* cy, double gamma, bool partials) {
    const int64_t n = h.n, c = h.count, nb = num_blocks(n);
    std::vector<T> ta(static_cast<size_t>(c)), tb(ta.size());
    for (int64_t k = 0; k < c; ++k) {
        ta[k] = static_cast<T>(cs[k]);
        tb[k] = static_cast<T>(cy[k]);
    }
    const T ng = static_cast<T>(-gamma);
    auto block = [&](int64_t lo, int64_t hi) -> double {
        T* __restrict o = out;
        if (c == 0) {
            // -g exactly (ng * g would turn an infinite g into NaN only through gamma's cast;
            // with no pair the direction is the steepest descent itself).
            return block_sum(lo, hi, [&](int64_t i) {
                const T v = -g[i];
                o[i] = v;
                return static_cast<double>(g[i]) * static_cast<double>(v);
            });
        }
        // Piece by piece: out's piece stays in L1 while every row's piece streams in.
        double acc[kSumLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
        const int64_t last = (h.head + c - 1) % h.m;
        const T* __restrict sl = h.s + last * n;
        const T* __restrict yl = h.y + last * n;
        const T al = ta[c - 1], bl = tb[c - 1];
        for (int64_t u = lo; u < hi; u += kPiece) {
            const int64_t v = std::min(hi, u + kPiece);
            for (int64_t i = u; i < v; ++i) o[i] = ng * g[i];
            for (int64_t q = 0; q + 1 < c; ++q) {
                const int64_t row = (h.head + q) % h.m;
                const T* __restrict sk = h.s + row * n;
                const T* __restrict yk = h.y + row * n;
                const T a = ta[q], b = tb[q];
                for (int64_t i = u; i < v; ++i) o[i] = (o[i] + a * sk[i]) + b * yk[i];
            }
            // The newest pair, and g . out in the same sweep.
            lanes_add(acc, u, v, [&](int64_t i) {
                const T w = (o[i] + al * sl[i]) + bl * yl[i];
                o[i] = w;
                return static_cast<double>(g[i]) * static_cast<double>(w);
            });
        }
        return combine_lanes(acc);
    };
    if (partials) {
        parallel_chunks(nb, lbfgs_threads(n), [&](int64_t b) {
            res[b] = block(b * kReduceBlock, std::min(n, (b + 1) * kReduceBlock));
        });
        return;
    }
    const double* part = block_results<1>(
        n, [&](int64_t lo, int64_t hi, double* r) { r[0] = block(lo, hi); });
    res[0] = sum_in_order(part, nb, 1);
}

template <typename T>
double compact_direction(T* out, const T* g, const Ring<T>& h, double* sy, double* yy,
                         int64_t gram_row) {
    const int64_t c = h.count, m = h.m;
    std::vector<double> dots(static_cast<size_t>(4 * c)), cs(static_cast<size_t>(c)),
        cy(cs.size());
    compact_dots(dots.data(), h, g, gram_row, false);
    if (gram_row >= 0)
        for (int64_t k = 0; k < c; ++k) {
            const int64_t row = (h.head + k) % m;
            sy[row * m + gram_row] = dots[2 * c + k];
            yy[row * m + gram_row] = dots[3 * c + k];
            yy[gram_row * m + row] = dots[3 * c + k];
        }
    const double gamma = compact_coefficients(dots.data(), sy, yy, m, h.head, c, cs.data(),
                                              cy.data());
    double res = 0.0;
    compact_combine(&res, out, g, h, cs.data(), cy.data(), gamma, false);
    return res;
}

#define FUSEDOPT_COMPACT_INSTANTIATE(T)                                                    \
    template void compact_dots<T>(double*, const Ring<T>&, const T*, int64_t, bool);       \
    template void compact_combine<T>(double*, T*, const T*, const Ring<T>&, const double*, \
                                     const double*, double, bool);                         \
    template double compact_direction<T>(T*, const T*, const Ring<T>&, double*, double*,   \
                                         int64_t);
FUSEDOPT_COMPACT_INSTANTIATE(float)
FUSEDOPT_COMPACT_INSTANTIATE(double)
#undef FUSEDOPT_COMPACT_INSTANTIATE

}  // namespace lbfgs
}  // namespace cpu
}  // namespace fusedopt
