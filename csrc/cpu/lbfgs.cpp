// csrc/cpu/lbfgs.cpp -- the L-BFGS loops (see lbfgs.h).
//
// The two-loop recursion is 2 * count + 1 passes over the vector. Each pass runs the blocks of
// the vector as chunks of the worker pool (parallel.h): it updates out = (out + a * x) * scale
// and, in the same sweep, takes the float64 dot of the updated out with the next history row;
// the calling thread then adds the block sums in block order and computes the next scalar. Every
// dot is the blocked sum of fusedopt/blocked_sum.h over blocks fixed by n alone, so any thread
// count and any schedule give the same bits.
#include "lbfgs.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <functional>
#include <utility>
#include <vector>

#include "flags.h"
#include "fusedopt/blocked_sum.h"
#include "kernels.h"
#include "lbfgs_blocks.h"
#include "parallel.h"

namespace fusedopt {
namespace cpu {
namespace lbfgs {
using namespace blocks;  // NOLINT: the block helpers of lbfgs_blocks.h
namespace {

// q[i] = (q[i] + a * x[i]) * scale over [lo, hi); returns sum w[i] * q[i] (new q) when Dot.
template <typename T, bool Dot>
double update_block(T* __restrict q, const T a, const T* __restrict x, const T scale,
                    const T* __restrict w, int64_t lo, int64_t hi) {
    if (!Dot) {
        for (int64_t i = lo; i < hi; ++i) q[i] = (q[i] + a * x[i]) * scale;
        return 0.0;
    }
    return block_sum(lo, hi, [&](int64_t i) {
        const T v = (q[i] + a * x[i]) * scale;
        q[i] = v;
        return static_cast<double>(w[i]) * static_cast<double>(v);
    });
}

// The first pass: out = grad, and the dots s.grad, s.y, y.y of the newest pair.
template <typename T>
void first_block(T* __restrict out, const T* __restrict g, const T* __restrict s,
                 const T* __restrict y, int64_t lo, int64_t hi, double* sums) {
    for (int64_t i = lo; i < hi; ++i) out[i] = g[i];
    sums[0] = dot_block(s, g, lo, hi);
    sums[1] = dot_block(s, y, lo, hi);
    sums[2] = dot_block(y, y, lo, hi);
}

}  // namespace

template <typename T>
double direction(T* out, const T* grad, const Ring<T>& h) {
    const int64_t n = h.n, nb = num_blocks(n), count = h.count;
    const int nt = lbfgs_threads(n);
    auto row = [&](const T* base, int64_t k) { return base + ((h.head + k) % h.m) * n; };
    auto rho = [&](int64_t k) { return h.rho[(h.head + k) % h.m]; };
    auto lo_of = [&](int64_t b) { return b * kReduceBlock; };
    auto hi_of = [&](int64_t b) { return std::min(n, (b + 1) * kReduceBlock); };
    // Block sums: 3 per block for the first pass, one per block for the others.
    thread_local std::vector<double> part_store;
    part_store.assign(static_cast<size_t>(3 * nb), 0.0);
    double* const part = part_store.data();

    if (count == 0) {
        // out = (0 + 0 * grad) * -1 would not give -grad for a non-finite grad.
        parallel_chunks(nb, nt, [&](int64_t b) {
            for (int64_t i = lo_of(b); i < hi_of(b); ++i) out[i] = -grad[i];
            part[b] = dot_block(grad, out, lo_of(b), hi_of(b));
        });
        return sum_in_order(part, nb, 1);
    }
    // One pass: out = (out + a * x) * scale, and returns w.out (new out) when w is given.
    auto pass = [&](T a, const T* x, T scale, const T* w) -> double {
        parallel_chunks(nb, nt, [&](int64_t b) {
            if (w)
                part[b] = update_block<T, true>(out, a, x, scale, w, lo_of(b), hi_of(b));
            else
                update_block<T, false>(out, a, x, scale, nullptr, lo_of(b), hi_of(b));
        });
        return w ? sum_in_order(part, nb, 1) : 0.0;
    };
    std::vector<double> alpha(static_cast<size_t>(count)), beta(alpha.size());
    const T* s_new = row(h.s, count - 1);
    const T* y_new = row(h.y, count - 1);
    parallel_chunks(nb, nt, [&](int64_t b) {
        first_block(out, grad, s_new, y_new, lo_of(b), hi_of(b), part + 3 * b);
    });
    alpha[count - 1] = rho(count - 1) * sum_in_order(part, nb, 3);
    const double gamma = sum_in_order(part + 1, nb, 3) / sum_in_order(part + 2, nb, 3);
    // First loop, newest to oldest: q -= alpha_k y_k, then the dot for step k - 1 (s_{k-1}.q),
    // or at k = 0 the scaling r = gamma q and the dot y_0.r.
    for (int64_t k = count - 1; k > 0; --k)
        alpha[k - 1] =
            rho(k - 1) * pass(static_cast<T>(-alpha[k]), row(h.y, k), T(1), row(h.s, k - 1));
    beta[0] = rho(0) * pass(static_cast<T>(-alpha[0]), row(h.y, 0), static_cast<T>(gamma),
                            row(h.y, 0));
    // Second loop, oldest to newest: r += (alpha_k - beta_k) s_k, then the dot for step k + 1
    // (y_{k+1}.r); the last pass writes -r instead, and takes grad.(-r).
    for (int64_t k = 0; k + 1 < count; ++k)
        beta[k + 1] = rho(k + 1) * pass(static_cast<T>(alpha[k] - beta[k]), row(h.s, k), T(1),
                                        row(h.y, k + 1));
    return pass(static_cast<T>(alpha[count - 1] - beta[count - 1]), row(h.s, count - 1), T(-1),
                grad);
}

template <typename T>
double dot(const T* a, const T* c, int64_t n) {
    const double* part = block_results<1>(n, [&](int64_t lo, int64_t hi, double* r) {
        r[0] = dot_block(a, c, lo, hi);
    });
    return sum_in_order(part, num_blocks(n), 1);
}

template <typename T>
double copy_dot(T* out, const T* g, const T* d, int64_t n) {
    const double* part = block_results<1>(n, [&](int64_t lo, int64_t hi, double* r) {
        r[0] = block_sum(lo, hi, [&](int64_t i) {          // dot_block(g, d)'s terms
            const T gi = g[i];
            out[i] = gi;
            return static_cast<double>(gi) * static_cast<double>(d[i]);
        });
    });
    return sum_in_order(part, num_blocks(n), 1);
}

template <typename T>
void sub_dots(T* out, const T* a, const T* b, const T* c, int64_t n, double* dots) {
    const double* part = block_results<2>(n, [&](int64_t lo, int64_t hi, double* r) {
        for (int64_t i = lo; i < hi; ++i) out[i] = a[i] - b[i];
        r[0] = dot_block(c, out, lo, hi);
        r[1] = dot_block(out, out, lo, hi);
    });
    dots[0] = sum_in_order(part, num_blocks(n), 2);
    dots[1] = sum_in_order(part + 1, num_blocks(n), 2);
}

template <typename T>
void pair_dots(const T* xt, const T* x, const T* gt, const T* g, int64_t n, double* dots) {
    const double* part = block_results<2>(n, [&](int64_t lo, int64_t hi, double* r) {
        // block_sum's lanes, for two sums in one loop: the bits of dot_block(s, y), (y, y)
        double sy[kSumLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
        double yy[kSumLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
        auto add = [&](int64_t i, int j) {
            const T si = xt[i] - x[i], yi = gt[i] - g[i];
            const double ds = static_cast<double>(si), dy = static_cast<double>(yi);
            sy[j] = sy[j] + ds * dy;
            yy[j] = yy[j] + dy * dy;
        };
        int64_t i = lo;
        for (; i + kSumLanes <= hi; i += kSumLanes)
            for (int j = 0; j < kSumLanes; ++j) add(i + j, j);
        for (int j = 0; i < hi; ++i, ++j) add(i, j);
        r[0] = combine_lanes(sy);
        r[1] = combine_lanes(yy);
    });
    dots[0] = sum_in_order(part, num_blocks(n), 2);
    dots[1] = sum_in_order(part + 1, num_blocks(n), 2);
}

template <typename T>
void axpby(T* out, double a, const T* x, double b, const T* y, int64_t n) {
    const T ta = static_cast<T>(a), tb = static_cast<T>(b);
    // out may be x or y itself (each element is read before it is written), so no __restrict.
    // Without y: out = a * x (with a = 1 or -1 an exact copy or negation, inf and NaN kept).
    parallel_chunks(num_blocks(n), lbfgs_threads(n), [&](int64_t blk) {
        const int64_t lo = blk * kReduceBlock, hi = std::min(n, lo + kReduceBlock);
        if (y)
            for (int64_t i = lo; i < hi; ++i) out[i] = ta * x[i] + tb * y[i];
        else
            for (int64_t i = lo; i < hi; ++i) out[i] = ta * x[i];
    });
}

namespace {
// One side of the box inside a loop: the array's entry (Side), or, where the caller passed null
// for that side (no bound on it anywhere), the constant -inf or +inf (NoSide) read from no
// memory. The loop computes with the very value the array of infinities would give: the same
// bits, without streaming n bounds.
template <typename T>
struct Side {
    const T* p;
    T operator[](int64_t i) const { return p[i]; }
};
template <typename T>
struct NoSide {
    T v;
    T operator[](int64_t) const { return v; }
};

// fn(lo, hi) with each side a Side or a NoSide (lo null: -inf, hi null: +inf); four copies of
// the loop, each with its reads fixed at compile time.
template <typename T, typename Fn>
auto with_box(const T* lo, const T* hi, Fn&& fn) {
    const T inf = static_cast<T>(HUGE_VAL);
    if (lo && hi) return fn(Side<T>{lo}, Side<T>{hi});
    if (lo) return fn(Side<T>{lo}, NoSide<T>{inf});
    if (hi) return fn(NoSide<T>{-inf}, Side<T>{hi});
    return fn(NoSide<T>{-inf}, NoSide<T>{inf});
}
}  // namespace

template <typename T>
void step_in_box(T* out, const T* x, double t, const T* d, const T* lo, const T* hi, int64_t n) {
    const T tt = static_cast<T>(t);
    with_box(lo, hi, [&](auto L, auto H) {
        parallel_chunks(num_blocks(n), lbfgs_threads(n), [&](int64_t blk) {
            const int64_t b0 = blk * kReduceBlock, b1 = std::min(n, b0 + kReduceBlock);
            for (int64_t i = b0; i < b1; ++i) {
                // NumPy's clip: NaN kept, max before min, ties (0.0 and -0.0) to the bound
                T v = x[i] + tt * d[i];
                v = (v != v || v > L[i]) ? v : L[i];
                out[i] = (v != v || v < H[i]) ? v : H[i];
            }
        });
    });
}

template <typename T>
int64_t fixed_set(int64_t* idx, T* q, const T* t, const T* xc, const T* x, const T* g,
                  double theta, bool zero_held, int64_t n) {
    const T th = static_cast<T>(theta);
    const int64_t nb = num_blocks(n);
    const int threads = lbfgs_threads(n);
    std::vector<int64_t> start(static_cast<size_t>(nb) + 1, 0);
    parallel_chunks(nb, threads, [&](int64_t blk) {      // each block's count
        const int64_t b0 = blk * kReduceBlock, b1 = std::min(n, b0 + kReduceBlock);
        int64_t c = 0;
        for (int64_t i = b0; i < b1; ++i) c += t[i] < T(0) ? 1 : 0;
        start[static_cast<size_t>(blk) + 1] = c;
    });
    for (int64_t blk = 0; blk < nb; ++blk) start[blk + 1] += start[blk];
    parallel_chunks(nb, threads, [&](int64_t blk) {      // then its entries, in order
        const int64_t b0 = blk * kReduceBlock, b1 = std::min(n, b0 + kReduceBlock);
        int64_t e = start[static_cast<size_t>(blk)];
        for (int64_t i = b0; i < b1; ++i) {
            if (!(t[i] < T(0))) continue;
            const T step = xc[i] - x[i];
            idx[e] = i;
            q[e] = (zero_held && step == T(0)) ? T(0) : g[i] + th * step;
            ++e;
        }
    });
    return start[static_cast<size_t>(nb)];
}

namespace {
// max_step's term: the t >= 0 where x + t d meets the bound d points at (inf: none), float64.
// Branch-free, so that the loops calling it vectorize: both sides' conditions as masks and one
// division whose operands are selected (inf / 1 where no side applies; where one does, the same
// operation on the same operands as a branch would do). The operands are selected rather than
// the quotient, as the compiler does not execute a division that the source makes conditional
// (it may trap) in a vectorized loop.
template <typename T>
inline double box_step_term(T xi, T di, T l, T h) {
    const double inf = HUGE_VAL;
    const bool down = (di < T(0)) & (l > static_cast<T>(-inf));
    const bool up = (di > T(0)) & (h < static_cast<T>(inf));
    const bool meets = down | up;
    const T bound = di < T(0) ? l : h;
    const double num = meets ? static_cast<double>(bound - xi) : inf;
    const double den = meets ? static_cast<double>(di) : 1.0;
    return num / den;
}

// The minimum of max_step's terms of a block, kept per lane (lanes_each): NaN never enters
// (ti < m is false), so the lanes' minimum equals the in-order one up to the sign of a zero,
// which max_step's join (t > 0 ? t : 0) erases.
// Its callers start the lanes from an initializer list of kSumLanes infinities: a lane left
// out would start at 0 and become the minimum.
static_assert(kSumLanes == 8, "max_step's lane minima list 8 infinities");
inline double lanes_min(const double* m) {
    double t = m[0];
    for (int j = 1; j < kSumLanes; ++j) t = m[j] < t ? m[j] : t;
    return t;
}

// projected_amax's term (SciPy's projgr): max(x - hi, g) for g < 0, else min(x - lo, g).
template <typename T>
inline T projected_term(T xi, T gi, T l, T h) {
    if (gi < T(0)) {
        const T e = xi - h;
        return e > gi ? e : gi;
    }
    const T e = xi - l;
    return e < gi ? e : gi;
}
}  // namespace

namespace {
// max |val(i)| over [0, n) as float64, NaN if any is NaN: blocks in parallel, then in order.
template <typename T, typename Val>
double abs_max(int64_t n, Val&& val) {
    const double* part = block_results<1>(n, [&](int64_t lo, int64_t hi, double* r) {
        T m = T(0);
        bool nan = false;
        for (int64_t i = lo; i < hi; ++i) {
            const T v = std::fabs(val(i));
            m = v > m ? v : m;
            nan = nan || (v != v);
        }
        r[0] = nan ? std::nan("") : static_cast<double>(m);
    });
    double m = 0.0;
    for (int64_t b = 0; b < num_blocks(n); ++b) {
        if (std::isnan(part[b])) return part[b];
        m = part[b] > m ? part[b] : m;
    }
    return m;
}
}  // namespace

template <typename T>
double amax(const T* a, int64_t n) {
    return abs_max<T>(n, [&](int64_t i) { return a[i]; });
}

template <typename T>
void rows_dots(double* out, const T* s, const T* y, const T* v, const T* w, int64_t rows,
               int64_t n) {
    const T* vs[2] = {v, w};
    rows_dots_many(out, s, y, vs, w ? 2 : 1, rows, n);
}

namespace {
// The first rows rows of s, then of y, at the columns at[0, len), gathered into a thread-local
// buffer (rows x len each; valid until the next call on this thread).
template <typename T>
T* gather_at(const T* s, const T* y, const int64_t* at, int64_t len, int64_t rows, int64_t n) {
    thread_local std::vector<T> buf;
    buf.resize(static_cast<size_t>(2 * rows * len));
    T* bs = buf.data();
    T* by = bs + rows * len;
    for (int64_t j = 0; j < rows; ++j)
        for (int64_t e = 0; e < len; ++e) {
            bs[j * len + e] = s[j * n + at[e]];
            by[j * len + e] = y[j * n + at[e]];
        }
    return bs;
}
}  // namespace

template <typename T>
void rows_gram_at(double* out, const T* s, const T* y, const int64_t* idx, int64_t na,
                  int64_t rows, int64_t n, const T* q) {
    const int64_t kk = rows * rows, k = 3 * kk + (q ? 2 * rows : 0);
    if (rows == 0) return;
    const double* part = block_results_k(na, k, [&](int64_t lo, int64_t hi, double* pb) {
        const int64_t len = hi - lo;
        T* bs = gather_at(s, y, idx + lo, len, rows, n);   // rows x len: s at idx[lo, hi)
        T* by = bs + rows * len;                              // then y
        // S S^T and Y Y^T are symmetric: the upper triangle, mirrored (a . b and b . a have
        // the same terms, so the same bits).
        for (int64_t i = 0; i < rows; ++i)
            for (int64_t j = 0; j < rows; ++j) {
                if (j >= i) {
                    pb[i * rows + j] = dot_block(bs + i * len, bs + j * len, int64_t(0), len);
                    pb[2 * kk + i * rows + j] =
                        dot_block(by + i * len, by + j * len, int64_t(0), len);
                } else {
                    pb[i * rows + j] = pb[j * rows + i];
                    pb[2 * kk + i * rows + j] = pb[2 * kk + j * rows + i];
                }
                pb[kk + i * rows + j] = dot_block(bs + i * len, by + j * len, int64_t(0), len);
            }
        if (q)
            for (int64_t j = 0; j < rows; ++j) {
                pb[3 * kk + j] = dot_block(bs + j * len, q + lo, int64_t(0), len);
                pb[3 * kk + rows + j] = dot_block(by + j * len, q + lo, int64_t(0), len);
            }
    });
    sums_in_order(out, part, num_blocks(na), k);
}

template <typename T>
void gram_blocks(double* out, double* parts, double* qparts, const T* s, const T* y,
                 const int64_t* idx, int64_t na, int64_t m, int64_t rows, int64_t n,
                 const uint8_t* redo, int64_t row, const T* q) {
    if (rows == 0) return;
    const int64_t mm = m * m, nb = num_blocks(n);
    parallel_chunks(nb, lbfgs_threads(na), [&](int64_t b) {
        const int64_t lo = std::lower_bound(idx, idx + na, b * kReduceBlock) - idx;
        const int64_t hi = std::lower_bound(idx + lo, idx + na, (b + 1) * kReduceBlock) - idx;
        const bool all = redo[b] != 0;
        if (!all && row < 0 && !q) return;
        const int64_t len = hi - lo;
        if (!all && row < 0) {
            // Only [S q | Y q]: the entries with q != 0, read in place, each in the lane of
            // its position (the entries skipped add zeros: the history is finite).
            thread_local std::vector<double> lanes;
            lanes.assign(static_cast<size_t>(2 * rows * kSumLanes), 0.0);
            for (int64_t e = lo; e < hi; ++e) {
                if (q[e] == T(0)) continue;
                const int64_t i = idx[e];
                const int lane = static_cast<int>((e - lo) % kSumLanes);
                const double qe = static_cast<double>(q[e]);
                for (int64_t j = 0; j < rows; ++j) {
                    double* l = lanes.data() + j * kSumLanes + lane;
                    l[0] = l[0] + static_cast<double>(s[j * n + i]) * qe;
                    l[rows * kSumLanes] = l[rows * kSumLanes] + static_cast<double>(y[j * n + i]) * qe;
                }
            }
            for (int64_t j = 0; j < 2 * rows; ++j)
                qparts[2 * m * b + (j < rows ? j : m + j - rows)] =
                    combine_lanes_at(lanes.data() + j * kSumLanes);
            return;
        }
        T* bs = gather_at(s, y, idx + lo, len, rows, n);   // rows x len: s at idx[lo, hi)
        T* by = bs + rows * len;                              // then y
        double* ss = parts + 3 * mm * b;
        double* sy = ss + mm;
        double* yy = sy + mm;
        // One entry of each Gram matrix: (i, j) and, S S^T and Y Y^T being symmetric, (j, i)
        // (a . b and b . a have the same terms, so the same bits).
        auto entry = [&](int64_t i, int64_t j) {
            ss[i * m + j] = ss[j * m + i] = dot_block(bs + i * len, bs + j * len, int64_t(0), len);
            yy[i * m + j] = yy[j * m + i] = dot_block(by + i * len, by + j * len, int64_t(0), len);
            sy[i * m + j] = dot_block(bs + i * len, by + j * len, int64_t(0), len);
            if (i != j) sy[j * m + i] = dot_block(bs + j * len, by + i * len, int64_t(0), len);
        };
        if (all) {
            for (int64_t i = 0; i < rows; ++i)
                for (int64_t j = i; j < rows; ++j) entry(i, j);
        } else if (row >= 0) {
            for (int64_t j = 0; j < rows; ++j) entry(row, j);
        }
        if (q)
            for (int64_t j = 0; j < rows; ++j) {
                qparts[2 * m * b + j] = dot_block(bs + j * len, q + lo, int64_t(0), len);
                qparts[2 * m * b + m + j] = dot_block(by + j * len, q + lo, int64_t(0), len);
            }
    });
    // The blocks' partials added in block order from 0.0.
    for (int64_t c = 0; c < 3; ++c)
        for (int64_t i = 0; i < rows; ++i)
            for (int64_t j = 0; j < rows; ++j)
                out[(c * rows + i) * rows + j] = sum_in_order(parts + c * mm + i * m + j, nb, 3 * mm);
    if (q)
        for (int64_t j = 0; j < rows; ++j) {
            out[3 * rows * rows + j] = sum_in_order(qparts + j, nb, 2 * m);
            out[3 * rows * rows + rows + j] = sum_in_order(qparts + m + j, nb, 2 * m);
        }
}

namespace {
// o[i - off] = sum_j (ta[j] s_j[i] + tb[j] y_j[i]) for i in [lo, hi), accumulated from 0 in T,
// j = 0, 1, ... (off = 0: o indexed like the vector; off = lo: o a scratch of hi - lo).
template <typename T>
void combine_block(T* __restrict o, const T* s, const T* y, const T* ta, const T* tb,
                   int64_t rows, int64_t n, int64_t lo, int64_t hi, int64_t off = 0) {
    // Two rows per sweep over the whole range (elementwise: the same bits; the same additions in
    // the same order, row j then j + 1, half the loads and stores of o), o's range in cache:
    // each row is read in one sequential stretch (see kRunBlocks).
    const int64_t len = hi - lo;
    T* __restrict op = o + (lo - off);
    for (int64_t i = 0; i < len; ++i) op[i] = T(0);
    int64_t j = 0;
    for (; j + 1 < rows; j += 2) {
        const T* __restrict s0 = s + j * n + lo;
        const T* __restrict y0 = y + j * n + lo;
        const T* __restrict s1 = s0 + n;
        const T* __restrict y1 = y0 + n;
        const T a0 = ta[j], b0 = tb[j], a1 = ta[j + 1], b1 = tb[j + 1];
        for (int64_t i = 0; i < len; ++i)
            op[i] = (((op[i] + a0 * s0[i]) + b0 * y0[i]) + a1 * s1[i]) + b1 * y1[i];
    }
    for (; j < rows; ++j) {
        const T* __restrict sj = s + j * n + lo;
        const T* __restrict yj = y + j * n + lo;
        const T aj = ta[j], bj = tb[j];
        for (int64_t i = 0; i < len; ++i) op[i] = (op[i] + aj * sj[i]) + bj * yj[i];
    }
}

template <typename T>
std::vector<T> cast_all(const double* a, int64_t k) {
    std::vector<T> out(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) out[j] = static_cast<T>(a[j]);
    return out;
}
}  // namespace

template <typename T>
void rows_axpy(T* out, const T* s, const T* y, const double* a, const double* b, int64_t rows,
               int64_t n) {
    const std::vector<T> ta = cast_all<T>(a, rows), tb = cast_all<T>(b, rows);
    parallel_chunks(num_blocks(n), lbfgs_threads(n), [&](int64_t blk) {
        const int64_t lo = blk * kReduceBlock, hi = std::min(n, lo + kReduceBlock);
        combine_block(out, s, y, ta.data(), tb.data(), rows, n, lo, hi);
    });
}

template <typename T>
void reduced_gradient(double* out, T* r, const T* s, const T* y, const double* a,
                      const double* b, int64_t rows, const T* xc, const T* x, const T* g,
                      const T* t, double theta, int64_t n) {
    const std::vector<T> ta = cast_all<T>(a, rows), tb = cast_all<T>(b, rows);
    const T th = static_cast<T>(theta);
    const int64_t k = 2 * rows;
    const double* part = block_results_k(n, k, [&](int64_t lo, int64_t hi, double* pb) {
        combine_block(r, s, y, ta.data(), tb.data(), rows, n, lo, hi);
        for (int64_t i = lo; i < hi; ++i) {
            const bool free = !t || t[i] >= T(0);
            r[i] = free ? (g[i] + th * (xc[i] - x[i])) - r[i] : T(0);
        }
        for (int64_t j = 0; j < rows; ++j) {
            pb[j] = dot_block(s + j * n, r, lo, hi);
            pb[rows + j] = dot_block(y + j * n, r, lo, hi);
        }
    });
    sums_in_order(out, part, num_blocks(n), k);
}

namespace {
// One pass of the subspace step: du = W a (combine_block), then du[i] = free ? step(i, du[i]) :
// 0, xbar = min(max(xc + du, lo), hi); returns g . (xbar - x). WithD: dout = xbar - x and
// *tmax = max_step(x, dout, lo, hi) from the same pass; then xbar and du may be null together
// (not stored: W a goes to a run-sized scratch of the thread). The elementwise sweep has no
// branch: which arrays it stores and reads (du and xbar, t) are template flags, the step is
// computed for every element and selected, pieces of kSweep elements are computed into the
// stack and then stored, summed (lanes_add: block_sum's lanes) and max_step's minimum taken
// per lane (lanes_min).
constexpr int64_t kSweep = 512;   // elements per piece of the sweep, a multiple of kSumLanes

template <bool WithD, typename T, typename Step>
double subspace_pass(T* xbar, T* du, const T* s, const T* y, const double* a, const double* b,
                     int64_t rows, const T* xc, const T* x, const T* g, const T* t, const T* lo,
                     const T* hi, int64_t n, Step&& step, T* dout = nullptr,
                     double* tmax = nullptr) {
    const double inf = HUGE_VAL;
    const std::vector<T> ta = cast_all<T>(a, rows), tb = cast_all<T>(b, rows);
    const double* part = with_box(lo, hi, [&](auto L, auto H) {
     return with_bool(du != nullptr, [&](auto store_flag) {
      return with_bool(t != nullptr, [&](auto t_flag) {
      constexpr bool store = decltype(store_flag)::value, has_t = decltype(t_flag)::value;
      // A run of blocks (kRunBlocks): W a over the whole run, then block by block.
      return run_results_k(n, 2, kRunBlocks, [&](int64_t r0, int64_t r1, double* res) {
        thread_local std::vector<T> scratch;
        if (!store && scratch.size() < static_cast<size_t>(kRunBlocks * kReduceBlock))
            scratch.resize(static_cast<size_t>(kRunBlocks * kReduceBlock));
        T* w = store ? du : scratch.data();          // W a at w[i - off]
        const int64_t off = store ? 0 : r0 * kReduceBlock;
        combine_block(w, s, y, ta.data(), tb.data(), rows, n, r0 * kReduceBlock,
                      std::min(n, r1 * kReduceBlock), off);
        for (int64_t blk = r0; blk < r1; ++blk) {
          const int64_t b0 = blk * kReduceBlock, b1 = std::min(n, b0 + kReduceBlock);
          double acc[kSumLanes] = {0, 0, 0, 0, 0, 0, 0, 0};   // block_sum's lanes of g . d
          double tm[kSumLanes] = {inf, inf, inf, inf, inf, inf, inf, inf};
          for (int64_t p = b0; p < b1; p += kSweep) {
              const int64_t len = std::min(kSweep, b1 - p);
              // The elementwise part into the thread's stack (no store that may alias a read:
              // the loop vectorizes without run-time checks), then stored and summed.
              T uq[kSweep], vq[kSweep], dq[kSweep];
              double tq[kSweep];
              for (int64_t k = 0; k < len; ++k) {
                  const int64_t i = p + k;
                  const T stepped = step(i, w[i - off]);
                  const T u = (!has_t || t[i] >= T(0)) ? stepped : T(0);
                  T v = xc[i] + u;
                  v = v < L[i] ? L[i] : v;
                  v = v > H[i] ? H[i] : v;
                  uq[k] = u;
                  vq[k] = v;
                  dq[k] = v - x[i];
                  if constexpr (WithD)                 // max_step's term, d = xbar - x
                      tq[k] = box_step_term(x[i], dq[k], L[i], H[i]);
              }
              if constexpr (store) {                   // du first: du may be xbar itself
                  std::copy(uq, uq + len, du + p);
                  std::copy(vq, vq + len, xbar + p);
              }
              if constexpr (WithD) {
                  std::copy(dq, dq + len, dout + p);
                  lanes_each(0, len, [&](int64_t k, int j) {
                      tm[j] = tq[k] < tm[j] ? tq[k] : tm[j];
                  });
              }
              lanes_add(acc, p, p + len, [&](int64_t i) {
                  return static_cast<double>(g[i]) * static_cast<double>(dq[i - p]);
              });
          }
          res[2 * (blk - r0)] = combine_lanes(acc);
          res[2 * (blk - r0) + 1] = lanes_min(tm);
        }
      });
      });
     });
    });
    const int64_t nb = num_blocks(n);
    if (tmax) {                                      // max_step's join
        double tt = inf;
        for (int64_t blk = 0; blk < nb; ++blk) tt = part[2 * blk + 1] < tt ? part[2 * blk + 1] : tt;
        *tmax = tt > 0.0 ? tt : 0.0;
    }
    return sum_in_order(part, nb, 2);
}
}  // namespace

template <typename T>
double subspace_point(T* xbar, T* du, const T* s, const T* y, const double* a, const double* b,
                      int64_t rows, const T* r, const T* xc, const T* x, const T* g, const T* t,
                      const T* lo, const T* hi, double theta, int64_t n) {
    const T c1 = static_cast<T>(-1.0 / theta), c2 = static_cast<T>(-1.0 / (theta * theta));
    return subspace_pass<false>(xbar, du, s, y, a, b, rows, xc, x, g, t, lo, hi, n,
                         [&](int64_t i, T wa) { return c1 * r[i] + c2 * wa; });
}

template <typename T>
double subspace_direct(T* xbar, T* du, const T* s, const T* y, const double* a, const double* b,
                       int64_t rows, const T* xc, const T* x, const T* g, const T* t,
                       const T* lo, const T* hi, double theta, int64_t n) {
    const T ith = static_cast<T>(1.0 / theta);
    return subspace_pass<false>(xbar, du, s, y, a, b, rows, xc, x, g, t, lo, hi, n,
                         [&](int64_t i, T wa) { return wa - (g[i] * ith + (xc[i] - x[i])); });
}

template <typename T>
double subspace_direct_d(T* xbar, T* du, T* d, double* tmax, const T* s, const T* y,
                         const double* a, const double* b, int64_t rows, const T* xc, const T* x,
                         const T* g, const T* t, const T* lo, const T* hi, double theta,
                         int64_t n) {
    const T ith = static_cast<T>(1.0 / theta);
    return subspace_pass<true>(
        xbar, du, s, y, a, b, rows, xc, x, g, t, lo, hi, n,
        [&](int64_t i, T wa) { return wa - (g[i] * ith + (xc[i] - x[i])); }, d, tmax);
}

template <typename T>
void cauchy_start_pg(T* d, T* t, const T* x, const T* g, const T* lo, const T* hi, int64_t n,
                     double* out) {
    const double inf = HUGE_VAL;
    const double* part = with_box(lo, hi, [&](auto L, auto H) {
      return block_results<3>(n, [&](int64_t b0, int64_t b1, double* r) {
        T m = T(0);          // projected_amax's block maximum, its NaN flag
        bool nan = false;
        int64_t open = 0;    // moving variables without a breakpoint
        r[0] = block_sum(b0, b1, [&](int64_t i) {
            const T xi = x[i], gi = g[i], l = L[i], h = H[i];
            const bool held = (xi <= l && gi >= T(0)) || (xi >= h && gi <= T(0)) || l == h;
            T di = held ? T(0) : -gi;
            T ti = held ? T(-1) : static_cast<T>(inf);
            if (!held && gi > T(0) && l > static_cast<T>(-inf)) ti = (xi - l) / gi;
            if (!held && gi < T(0) && h < static_cast<T>(inf)) ti = (xi - h) / gi;
            d[i] = di;
            t[i] = ti;
            open += (ti == static_cast<T>(inf) && di != T(0)) ? 1 : 0;
            const T v = std::fabs(projected_term(xi, gi, l, h));   // projected_amax's
            m = v > m ? v : m;
            nan = nan || (v != v);
            return static_cast<double>(di) * static_cast<double>(di);
        });
        r[1] = nan ? std::nan("") : static_cast<double>(m);
        r[2] = static_cast<double>(open);
      });
    });
    const int64_t nb = num_blocks(n);
    out[0] = sum_in_order(part, nb, 3);
    double pm = 0.0, cnt = 0.0;
    bool nan = false;
    for (int64_t b = 0; b < nb; ++b) {            // abs_max's join
        const double v = part[3 * b + 1];
        if (std::isnan(v)) {
            nan = true;
            pm = v;
        }
        if (!nan) pm = v > pm ? v : pm;
        cnt = cnt + part[3 * b + 2];
    }
    out[1] = pm;
    out[2] = cnt;
}

template <typename T>
double cauchy_start(T* d, T* t, const T* x, const T* g, const T* lo, const T* hi, int64_t n) {
    double out[3];
    cauchy_start_pg(d, t, x, g, lo, hi, n, out);
    return out[0];
}

template <typename T>
double cauchy_path(T* xc, T* d, T* t, const T* x, const T* lo, const T* hi, const T* s,
                   const T* y, const int64_t* order, int64_t k, double theta, const double* mid,
                   double* p, double* c, double f1, double f2, bool bounded, int64_t n,
                   int64_t* scratch, FixedOut<T>* fixed) {
    const int64_t k2 = 2 * k;
    // The candidates (t_i, i) are taken smallest first, ties by the smaller index: a strict
    // order, so any priority queue over them pops the same sequence. One parallel pass counts
    // each block's candidates and finds its smallest; a heap over the blocks (by their
    // smallest) gives the next breakpoint. A block's own heap of its candidates (their indices
    // in its range of `scratch`, n entries, the caller's: no fresh pages per iteration; or of a
    // vector of the candidates' number) is built only when its first breakpoint is passed:
    // most iterations pass few breakpoints or none, and then no heap of all the candidates is
    // built or written.
    const int64_t nb = num_blocks(n);
    const int threads = lbfgs_threads(n);
    const T inf = static_cast<T>(HUGE_VAL);
    auto candidate = [&](int64_t i) {      // & not &&: no branch per element
        return (t[i] >= T(0)) & (t[i] < inf) & (d[i] != T(0));
    };
    std::vector<int64_t> start(static_cast<size_t>(nb) + 1, 0), front(static_cast<size_t>(nb), -1);
    // with fixed: each block's count of t < 0 before the path (the same read of t)
    std::vector<int64_t> fstart(fixed ? static_cast<size_t>(nb) + 1 : 0, 0);
    parallel_chunks(nb, threads, [&](int64_t blk) {
        const int64_t b0 = blk * kReduceBlock, b1 = std::min(n, b0 + kReduceBlock);
        int64_t cnt = 0, held = 0, best = -1;
        T tbest = inf;                            // a candidate's t is finite
        for (int64_t i = b0; i < b1; ++i) {
            const bool cand = candidate(i);
            if (cand & (t[i] < tbest)) {          // rare; strict: the first index of a tie
                best = i;
                tbest = t[i];
            }
            cnt += cand ? 1 : 0;
            held += t[i] < T(0) ? 1 : 0;
        }
        start[static_cast<size_t>(blk) + 1] = cnt;
        front[static_cast<size_t>(blk)] = best;
        if (fixed) fstart[static_cast<size_t>(blk) + 1] = held;
    });
    for (int64_t blk = 0; blk < nb; ++blk) start[blk + 1] += start[blk];
    const int64_t total = start[static_cast<size_t>(nb)];
    std::vector<int64_t> own;
    if (!scratch && total) own.resize(static_cast<size_t>(total));
    int64_t* heap = scratch ? scratch : own.data();
    // (t_a, a) after (t_b, b): a heap's front is the smallest t, ties by the smaller index
    auto later = [&](int64_t a, int64_t b) { return t[a] > t[b] || (t[a] == t[b] && a > b); };
    // the blocks with a candidate left, by their smallest (front); bsize: a built block's heap
    auto block_later = [&](int64_t a, int64_t b) { return later(front[a], front[b]); };
    std::vector<int64_t> top, bsize(static_cast<size_t>(nb), -1);
    for (int64_t blk = 0; blk < nb; ++blk)
        if (front[blk] >= 0) top.push_back(blk);
    std::make_heap(top.begin(), top.end(), block_later);
    int64_t size = total;
    std::vector<double> wb(static_cast<size_t>(k2)), v(wb.size());
    std::vector<std::pair<int64_t, T>> hits;
    const double f2_org = f2;
    double dtm = -f1 / f2, t_old = 0.0;
    while (size > 0) {
        const int64_t blk = top.front();
        const int64_t b = front[blk];
        const double tj = static_cast<double>(t[b]);
        const double dt = tj - t_old;
        if (dtm < dt) break;
        std::pop_heap(top.begin(), top.end(), block_later);
        top.pop_back();
        int64_t* const bh = heap + start[blk];
        if (bsize[blk] < 0) {                       // the block's first: build its heap
            const int64_t b0 = blk * kReduceBlock, b1 = std::min(n, b0 + kReduceBlock);
            int64_t e = 0;
            for (int64_t i = b0; i < b1; ++i)
                if (candidate(i)) bh[e++] = i;
            std::make_heap(bh, bh + e, later);
            bsize[blk] = e;
        }
        std::pop_heap(bh, bh + bsize[blk], later);  // b, the block's smallest
        --bsize[blk];
        --size;
        const double db = static_cast<double>(d[b]);
        // a null side: its infinity (with_box's)
        const T at = db > 0.0 ? (hi ? hi[b] : inf) : (lo ? lo[b] : -inf);
        const double zb = static_cast<double>(at) - static_cast<double>(x[b]);
        hits.emplace_back(b, at);
        d[b] = T(0);
        t[b] = T(-1);
        f1 = f1 + dt * f2 + db * db - theta * db * zb;
        f2 = f2 - theta * db * db;
        if (k2) {
            for (int64_t j = 0; j < k; ++j) {
                wb[j] = static_cast<double>(y[order[j] * n + b]);
                wb[k + j] = theta * static_cast<double>(s[order[j] * n + b]);
            }
            double wmc = 0.0, wmp = 0.0, wmw = 0.0;
            for (int64_t r = 0; r < k2; ++r) {
                c[r] = c[r] + dt * p[r];
                double vr = 0.0;
                for (int64_t q = 0; q < k2; ++q) vr = vr + mid[r * k2 + q] * wb[q];
                v[r] = vr;
            }
            for (int64_t r = 0; r < k2; ++r) {
                wmc = wmc + c[r] * v[r];
                wmp = wmp + p[r] * v[r];
                wmw = wmw + wb[r] * v[r];
            }
            for (int64_t r = 0; r < k2; ++r) p[r] = p[r] - db * wb[r];
            f1 = f1 + db * wmc;
            f2 = f2 + 2.0 * db * wmp - db * db * wmw;
        }
        f2 = std::max(DBL_EPSILON * f2_org, f2);
        if (bsize[blk] > 0) {                       // the block's next smallest, back in line
            front[blk] = bh[0];
            top.push_back(blk);
            std::push_heap(top.begin(), top.end(), block_later);
        }
        t_old = tj;
        dtm = (size == 0 && bounded) ? 0.0 : -f1 / f2;
    }
    dtm = std::max(dtm, 0.0);
    const double tsum = t_old + dtm;
    const T ts = static_cast<T>(tsum);
    // The variables passed, by index: each block sets its own after its x^c (t < 0 there now).
    std::sort(hits.begin(), hits.end(),
              [](const std::pair<int64_t, T>& a, const std::pair<int64_t, T>& b) {
                  return a.first < b.first;
              });
    auto hits_from = [&](int64_t i) {
        return std::lower_bound(hits.begin(), hits.end(), i,
                                [](const std::pair<int64_t, T>& h, int64_t v) {
                                    return h.first < v;
                                }) - hits.begin();
    };
    if (fixed) {                                   // t < 0 per block: before, plus the passed
        for (int64_t blk = 0; blk < nb; ++blk)
            fstart[blk + 1] += hits_from((blk + 1) * kReduceBlock) - hits_from(blk * kReduceBlock);
        for (int64_t blk = 0; blk < nb; ++blk) fstart[blk + 1] += fstart[blk];
        fixed->count = fstart[static_cast<size_t>(nb)];
    }
    const T th = static_cast<T>(theta);
    with_box(lo, hi, [&](auto L, auto H) {
        parallel_chunks(nb, threads, [&](int64_t blk) {
            const int64_t b0 = blk * kReduceBlock, b1 = std::min(n, b0 + kReduceBlock);
            for (int64_t i = b0; i < b1; ++i) {
                T v = x[i] + ts * d[i];
                v = v < L[i] ? L[i] : v;
                xc[i] = v > H[i] ? H[i] : v;
            }
            const int64_t h1 = hits_from(b1);
            for (int64_t h = hits_from(b0); h < h1; ++h)   // passed: at the bound reached
                xc[hits[h].first] = hits[h].second;
            if (!fixed) return;
            // fixed_set's loop over the block while it is in cache: the same entries and bits
            int64_t e = fstart[static_cast<size_t>(blk)];
            const T* g = fixed->g;
            for (int64_t i = b0; i < b1; ++i) {
                if (!(t[i] < T(0))) continue;
                const T step = xc[i] - x[i];
                fixed->idx[e] = i;
                fixed->q[e] = (fixed->zero_held && step == T(0)) ? T(0) : g[i] + th * step;
                ++e;
            }
        });
    });
    for (int64_t r = 0; r < k2; ++r) c[r] = c[r] + dtm * p[r];
    return tsum;
}

template <typename T>
double projected_amax(const T* x, const T* g, const T* lo, const T* hi, int64_t n) {
    return with_box(lo, hi, [&](auto L, auto H) {
        return abs_max<T>(n, [&](int64_t i) { return projected_term(x[i], g[i], L[i], H[i]); });
    });
}

template <typename T>
double max_step(const T* x, const T* d, const T* lo, const T* hi, int64_t n) {
    const double inf = HUGE_VAL;
    const double* part = with_box(lo, hi, [&](auto L, auto H) {
        return block_results<1>(n, [&](int64_t b0, int64_t b1, double* r) {
            double m[kSumLanes] = {inf, inf, inf, inf, inf, inf, inf, inf};
            lanes_each(b0, b1, [&](int64_t i, int j) {
                const double ti = box_step_term(x[i], d[i], L[i], H[i]);
                m[j] = ti < m[j] ? ti : m[j];
            });
            r[0] = lanes_min(m);
        });
    });
    double t = inf;
    for (int64_t b = 0; b < num_blocks(n); ++b) t = part[b] < t ? part[b] : t;
    return t > 0.0 ? t : 0.0;
}

int64_t parallel_min() { return kParallelMin; }

#define FUSEDOPT_LBFGS_INSTANTIATE(T)                                                   \
    template double direction<T>(T*, const T*, const Ring<T>&);                         \
    template void pair_dots<T>(const T*, const T*, const T*, const T*, int64_t, double*); \
    template void sub_dots<T>(T*, const T*, const T*, const T*, int64_t, double*);      \
    template double dot<T>(const T*, const T*, int64_t);                                \
    template double copy_dot<T>(T*, const T*, const T*, int64_t);                       \
    template int64_t fixed_set<T>(int64_t*, T*, const T*, const T*, const T*, const T*, double, \
                                  bool, int64_t);                                        \
    template void axpby<T>(T*, double, const T*, double, const T*, int64_t);            \
    template double amax<T>(const T*, int64_t);                                          \
    template void step_in_box<T>(T*, const T*, double, const T*, const T*, const T*, int64_t); \
    template void rows_dots<T>(double*, const T*, const T*, const T*, const T*, int64_t,   \
                               int64_t);                                                  \
    template void reduced_gradient<T>(double*, T*, const T*, const T*, const double*,       \
                                      const double*, int64_t, const T*, const T*, const T*, \
                                      const T*, double, int64_t);                           \
    template double subspace_point<T>(T*, T*, const T*, const T*, const double*,            \
                                      const double*, int64_t, const T*, const T*, const T*, \
                                      const T*, const T*, const T*, const T*, double,       \
                                      int64_t);                                             \
    template void rows_gram_at<T>(double*, const T*, const T*, const int64_t*, int64_t,    \
                                  int64_t, int64_t, const T*);                             \
    template void gram_blocks<T>(double*, double*, double*, const T*, const T*,              \
                                 const int64_t*, int64_t, int64_t, int64_t, int64_t,         \
                                 const uint8_t*, int64_t, const T*);                         \
    template double subspace_direct<T>(T*, T*, const T*, const T*, const double*,           \
                                       const double*, int64_t, const T*, const T*, const T*, \
                                       const T*, const T*, const T*, double, int64_t);       \
    template void rows_axpy<T>(T*, const T*, const T*, const double*, const double*,      \
                               int64_t, int64_t);                                         \
    template double cauchy_start<T>(T*, T*, const T*, const T*, const T*, const T*, int64_t); \
    template void cauchy_start_pg<T>(T*, T*, const T*, const T*, const T*, const T*, int64_t,  \
                                     double*);                                                \
    template double subspace_direct_d<T>(T*, T*, T*, double*, const T*, const T*,             \
                                         const double*, const double*, int64_t, const T*,     \
                                         const T*, const T*, const T*, const T*, const T*,    \
                                         double, int64_t);                                    \
    template double projected_amax<T>(const T*, const T*, const T*, const T*, int64_t);      \
    template double max_step<T>(const T*, const T*, const T*, const T*, int64_t);          \
    template double cauchy_path<T>(T*, T*, T*, const T*, const T*, const T*, const T*,        \
                                   const T*, const int64_t*, int64_t, double, const double*,  \
                                   double*, double*, double, double, bool, int64_t,       \
                                   int64_t*, FixedOut<T>*);
FUSEDOPT_LBFGS_INSTANTIATE(float)
FUSEDOPT_LBFGS_INSTANTIATE(double)
#undef FUSEDOPT_LBFGS_INSTANTIATE

}  // namespace lbfgs
}  // namespace cpu
}  // namespace fusedopt
