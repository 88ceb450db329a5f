// csrc/cpu/lbfgs.h -- the L-BFGS loops: the fused two-loop recursion and the few vector helpers
// the minimizer needs (dot, axpby, max-abs), without BLAS.
//
// Every reduction cuts the vector into blocks of kReduceBlock elements (a partition fixed by n
// alone), sums each block in one fixed order in float64 and adds the block sums in block order,
// so the results have the same bits for any number of threads and any schedule.
#pragma once
#include <cstdint>

namespace fusedopt {
namespace cpu {
namespace lbfgs {

// Vectors shorter than this run on one thread (see lbfgs.cpp).
int64_t parallel_min();

// The history as fusedopt.lbfgs.History lays it out: rows of the C-contiguous m x n arrays s and
// y; the pairs oldest to newest are rows (head + k) % m for k in [0, count); rho[row] = 1 / s.y.
template <typename T>
struct Ring {
    const T* s;
    const T* y;
    const double* rho;
    int64_t m, n, head, count;
};

// out = -H grad by Nocedal & Wright, Algorithm 7.4, with H0 = gamma I, gamma = s.y / y.y of the
// newest pair (out = -grad when count == 0). 2 * count + 1 passes over out; each pass streams
// one history row for the axpy of step i and the next for the dot of step i + 1; the last one
// also takes grad.out, which is returned (float64; the line search needs it).
template <typename T>
double direction(T* out, const T* grad, const Ring<T>& h);

// sum a[i] * b[i] in float64.
template <typename T>
double dot(const T* a, const T* b, int64_t n);

// copy_dot: out = g (an exact copy) and, from the same pass, returns dot(g, d)'s bits.
template <typename T>
double copy_dot(T* out, const T* g, const T* d, int64_t n);

// out[i] = a[i] - b[i] (out may be a or b itself); dots = {c.out, out.out} in float64.
template <typename T>
void sub_dots(T* out, const T* a, const T* b, const T* c, int64_t n, double* dots);

// pair_dots: with s = xt - x and y = gt - g (each rounded to T, written nowhere), dots[0] = s . y
// and dots[1] = y . y, one pass: the bits of sub_dots(y, gt, g, s) after s = xt - x.
template <typename T>
void pair_dots(const T* xt, const T* x, const T* gt, const T* g, int64_t n, double* dots);

// out[i] = a * x[i] + b * y[i], with a and b cast to T once; out[i] = a * x[i] when y is null.
template <typename T>
void axpby(T* out, double a, const T* x, double b, const T* y, int64_t n);

// The unbounded direction through the compact form (Byrd, Nocedal & Schnabel 1994, eq. 2.6;
// Nocedal & Wright eq. 7.24), in lbfgs_compact.cpp: two passes over the history instead of the
// two-loop's 2 count + 1, the 2m x 2m algebra in float64 between them. The ring is h (rho
// unused), pairs k = 0 .. count - 1 oldest first at rows (head + k) % m. Every dot is the blocked
// sum of blocked_sum.h over the blocks of kReduceBlock elements of the vector passed; with
// `partials` the per-block sums are returned (block-major) instead of their sum in block order,
// so that the slices of a vector cut at block boundaries can be summed elsewhere with the bits
// of the whole vector.
//
// compact_dots: out = [s_k . g] + [y_k . g] (k chronological), and with gram_row = r >= 0 also
// [s_k . y_r] + [y_k . y_r] in the same pass (the new column of S^T Y and Y^T Y): K = 2 count or
// 4 count results; partials: nb x K, row b the sums of block b.
template <typename T>
void compact_dots(double* out, const Ring<T>& h, const T* g, int64_t gram_row, bool partials);

// compact_coefficients: from dots = [S^T g, Y^T g] (chronological) and the Gram matrices sy, yy
// (m x m, ring indexing, sy[i * m + j] = s_i . y_j for i not newer than j, yy symmetric):
// gamma = s.y / y.y of the newest pair, R the upper triangle of S^T Y, D its diagonal,
//   p = R^{-1} S^T g,   a = R^{-T} (D p + gamma (Y^T Y p - Y^T g)),
//   cs = -a,   cy = gamma p    (so -H g = -gamma g + S cs + Y cy).
// Loops in a fixed order (fusedopt.reference.lbfgs_compact_coefficients has the same bits).
// Returns gamma (1 with no pair).
double compact_coefficients(const double* dots, const double* sy, const double* yy, int64_t m,
                            int64_t head, int64_t count, double* cs, double* cy);

// compact_combine: out = (-gamma) g, then out = (out + cs[k] s_k) + cy[k] y_k for k = 0 ..
// count - 1 (coefficients cast to T once, accumulated in T); res = g . out (float64), or its
// nb block sums with partials.
template <typename T>
void compact_combine(double* res, T* out, const T* g, const Ring<T>& h, const double* cs,
                     const double* cy, double gamma, bool partials);

// compact_direction: out = -H g by the three above over the whole vector; with gram_row >= 0
// the new Gram column is written into sy and yy first (sy[k * m + r], yy[k * m + r] and
// yy[r * m + k] for every valid row k). Returns g . out. count == 0: out = -g.
template <typename T>
double compact_direction(T* out, const T* g, const Ring<T>& h, double* sy, double* yy,
                         int64_t gram_row);

// The products of the compact form of L-BFGS-B over the first `rows` rows of the C-contiguous
// (m x n) arrays s and y (the ring buffer's storage order), each one pass over the history:
//
// rows_dots: out[j] = s_j . v and out[rows + j] = y_j . v for j < rows, float64, every dot the
// blocked sum of blocked_sum.h (2 * rows dots while v's block is in cache).
// With w (not null), out[2 rows + j] = s_j . w and out[3 rows + j] = y_j . w in the same pass.
template <typename T>
void rows_dots(double* out, const T* s, const T* y, const T* v, const T* w, int64_t rows,
               int64_t n);

// rows_dots_many: the same for nv vectors vs[q], one pass: out[2 rows q + j] = s_j . vs[q],
// out[2 rows q + rows + j] = y_j . vs[q] (rows_dots is the case {v, w}).
// With gr (not null), the same pass also brings the Gram partials of gram_blocks up to date
// in row and column gr->row (a new pair), over the list gr->idx (strictly increasing): per block
// of x, the bits of gram_blocks(..., redo = 0, row) -- the gather happens while each row's
// piece is in cache, so the update costs no pass of its own. Compiled per instruction set
// (lbfgs_compact.h).
struct GramRow {
    double* parts;        // num_blocks(n) x 3 m m, as gram_blocks
    int64_t m;            // rows of the storage (the row stride of parts)
    const int64_t* idx;   // the list, na entries
    int64_t na;
    int64_t row;          // 0 <= row < rows
};
template <typename T>
void rows_dots_many(double* out, const T* s, const T* y, const T* const* vs, int64_t nv,
                    int64_t rows, int64_t n, const GramRow* gr = nullptr);

// rows_gram_at: the Gram matrices of the first `rows` rows over the columns idx[0..na) of s and
// y (the history at some variables), out = [S S^T, S Y^T, Y Y^T] as three row-major rows x rows
// blocks (out[(b * rows + i) * rows + j]); float64 blocked sums over the positions 0..na (each
// block of idx gathered into a buffer first), one pass. With q (na values, q[e] belonging to
// column idx[e]), also out[3 rows^2 + j] = sum_e s_j[idx[e]] q[e] and out[3 rows^2 + rows + j]
// the same with y_j, in the same pass.
template <typename T>
void rows_gram_at(double* out, const T* s, const T* y, const int64_t* idx, int64_t na,
                  int64_t rows, int64_t n, const T* q = nullptr);

// The box lo <= x <= hi of the L-BFGS-B kernels below (step_in_box, cauchy_start, cauchy_start_pg,
// cauchy_path, subspace_point, subspace_direct, subspace_direct_d, projected_amax, max_step):
// either side may be null, meaning no bound on that side anywhere; the results are then the
// bits of an array of -inf (lo) or +inf (hi), and that array is not streamed.
//
// step_in_box: out = clip(x + t d, lo, hi), NumPy's np.clip of axpby's x + t d bit for bit (t
// cast to T; NaN kept; a tie with a bound, 0.0 against -0.0, gives the bound); out may be x.
template <typename T>
void step_in_box(T* out, const T* x, double t, const T* d, const T* lo, const T* hi, int64_t n);

// fixed_set: the variables fixed at the Cauchy point and the subspace step's q over them, in
// one pass (two over t): idx = the i with t[i] < 0, increasing (numpy.flatnonzero(t < 0)), and
// q[e] = g[i] + T(theta) * (xc[i] - x[i]) at i = idx[e] (NumPy's bits: the subtraction, the
// product, the sum, each rounded to T), or 0 where zero_held and xc[i] - x[i] == 0. idx and q
// hold n entries; returns the count. Blocks counted in parallel, then filled in parallel.
template <typename T>
int64_t fixed_set(int64_t* idx, T* q, const T* t, const T* xc, const T* x, const T* g,
                  double theta, bool zero_held, int64_t n);

// gram_blocks: rows_gram_at summed by the blocks of x (the kReduceBlock blocks of [0, n)), not
// of the list idx, each block's partials kept between calls, so that an L-BFGS-B iteration
// recomputes only what changed (the "formk" update of Byrd, Lu, Nocedal & Zhu) and a sharded run
// (whose shards are whole blocks of x) gets the one-process bits. idx is strictly increasing.
// parts (num_blocks(n) x 3 m m, float64) holds per block b the Gram matrices of the storage rows
// (i, j < rows, row stride m) over the idx entries in b: [S S^T | S Y^T | Y Y^T], each entry the
// blocked sum over the block's gathered entries in increasing order (blocked_sum.h's lanes by
// position in that sub-list). A block with redo[b] != 0 is recomputed whole; otherwise only the
// row and column `row` of its three matrices (row >= 0), or nothing (row < 0): the other entries
// must hold the partials of the same idx entries and rows from an earlier call. With q (na
// values, q[e] belonging to idx[e]), qparts (num_blocks(n) x 2 m) gets per block [S q | Y q] over
// the block's entries (where nothing else is recomputed, only the entries with q != 0 are read:
// the others add zeros to their lanes, the history being finite). out = the blocks' partials of the rows x rows matrices added in block
// order from 0.0, three row-major rows x rows blocks as rows_gram_at; with q, then 2 rows dots.
template <typename T>
void gram_blocks(double* out, double* parts, double* qparts, const T* s, const T* y,
                 const int64_t* idx, int64_t na, int64_t m, int64_t rows, int64_t n,
                 const uint8_t* redo, int64_t row, const T* q = nullptr);

// rows_axpy: out[i] = sum_j (a[j] s_j[i] + b[j] y_j[i]), accumulated in T from 0 in the order
// j = 0 .. rows - 1, s term before y term (a and b cast to T once).
template <typename T>
void rows_axpy(T* out, const T* s, const T* y, const double* a, const double* b, int64_t rows,
               int64_t n);

// The start of the generalized Cauchy point of L-BFGS-B (Byrd, Lu, Nocedal & Zhu 1995,
// Algorithm CP) in one pass: d[i] = 0 where x[i] is held at a bound by the gradient (at lo with
// g >= 0, at hi with g <= 0, or lo == hi), else -g[i]; t[i] = the breakpoint where x[i] - t g[i]
// reaches its bound (inf if none), -1 where held. Returns d . d (float64, blocked sum).
template <typename T>
double cauchy_start(T* d, T* t, const T* x, const T* g, const T* lo, const T* hi, int64_t n);

// cauchy_start with, from the same pass, out[0] = d . d (its bits), out[1] = projected_amax(x,
// g, lo, hi) (its bits) and out[2] = the number of moving variables without a breakpoint
// (t[i] = inf and d[i] != 0: the path is bounded when it is 0; SciPy's bnded).
template <typename T>
void cauchy_start_pg(T* d, T* t, const T* x, const T* g, const T* lo, const T* hi, int64_t n,
                     double* out);

// The path of the generalized Cauchy point (Byrd, Lu, Nocedal & Zhu 1995, Algorithm CP; SciPy's
// cauchy) after cauchy_start: the breakpoints t[i] >= 0 (finite) are taken in increasing order
// (ties by index) from binary heaps, one per block of kReduceBlock elements, built only when the
// block's first breakpoint is passed, under a heap of the blocks by their smallest breakpoint
// (found in the one parallel pass that counts them): no sort of all n up front, and no heap at
// all where no breakpoint is passed; each pop O(log n), while the
// minimizer of the model on the current segment lies beyond the next breakpoint; each one fixes
// its variable at the bound (d[b] = 0, t[b] = -1) and updates the slope f1, the curvature f2
// and the 2k-vectors p = W^T d and c = W^T (x(t) - x) in O(k^2), with W = [Y, theta S] taken
// from the rows order[0..k) of s and y (oldest first) and mid = M (2k x 2k, row-major). Then
// xc = x + tsum d, with the variables passed at their bounds. bounded: every moving variable
// has a breakpoint. Returns tsum; p and c are updated in place (c += dtm p at the end).
// scratch (n entries, may be null: then a vector of the candidates' number) holds the blocks'
// heaps of candidate indices, ordered by (t_i, i).
// fixed (may be null): the fixed set of the variables with t < 0 after the path, and q over it,
// written from the same last pass (x^c's), with the bits of fixed_set(idx, q, t, xc, x, g,
// theta, zero_held) called after the path; idx may be scratch itself (the heap is done by then).
template <typename T>
struct FixedOut {
    int64_t* idx;        // n entries; idx[0..count) written
    T* q;                // n entries
    const T* g;
    bool zero_held;
    int64_t count;       // set by cauchy_path
};
template <typename T>
double cauchy_path(T* xc, T* d, T* t, const T* x, const T* lo, const T* hi, const T* s,
                   const T* y, const int64_t* order, int64_t k, double theta, const double* mid,
                   double* p, double* c, double f1, double f2, bool bounded, int64_t n,
                   int64_t* scratch = nullptr, FixedOut<T>* fixed = nullptr);

// The subspace minimization of L-BFGS-B (Byrd et al. 1995, section 5.1), two fused passes over
// the history; free[i]: t == null or t[i] >= 0 (t as left by cauchy_path).
//
// reduced_gradient: r[i] = free ? (g[i] + theta (xc[i] - x[i])) - (W a)[i] : 0 with
// (W a)[i] = sum_j (a[j] s_j[i] + b[j] y_j[i]) accumulated as in rows_axpy; out = the 2 rows
// dots [s_j . r] + [y_j . r] (float64, blocked).
template <typename T>
void reduced_gradient(double* out, T* r, const T* s, const T* y, const double* a,
                      const double* b, int64_t rows, const T* xc, const T* x, const T* g,
                      const T* t, double theta, int64_t n);

// subspace_point: du[i] = free ? -(r[i] / theta) - (W v)[i] / theta^2 : 0 (W v as above, a and
// b the coefficients), xbar = min(max(xc + du, lo), hi); returns g . (xbar - x) (float64).
template <typename T>
double subspace_point(T* xbar, T* du, const T* s, const T* y, const double* a, const double* b,
                      int64_t rows, const T* r, const T* xc, const T* x, const T* g, const T* t,
                      const T* lo, const T* hi, double theta, int64_t n);

// subspace_direct: the same point without r, one pass: du[i] = free ? (W a)[i] - (g[i] / theta
// + (xc[i] - x[i])) : 0 (1 / theta cast to T once; W a as in rows_axpy), xbar = min(max(xc +
// du, lo), hi); returns g . (xbar - x). With a = M c / theta - v / theta^2 this is
// subspace_point's du, -r / theta - W v / theta^2, r expanded: the reduced gradient's pass over
// the history is not needed (W^T r is assembled from W^T g, c and the fixed variables' part).
template <typename T>
double subspace_direct(T* xbar, T* du, const T* s, const T* y, const double* a, const double* b,
                       int64_t rows, const T* xc, const T* x, const T* g, const T* t,
                       const T* lo, const T* hi, double theta, int64_t n);

// subspace_direct_d: subspace_direct that also writes d = xbar - x (the bits of a subtraction)
// and *tmax = max_step(x, d, lo, hi) (its bits) from the same pass; returns g . d. xbar and du
// may be null (both): then only d is written (the same d, g . d and tmax).
template <typename T>
double subspace_direct_d(T* xbar, T* du, T* d, double* tmax, const T* s, const T* y,
                         const double* a, const double* b, int64_t rows, const T* xc, const T* x,
                         const T* g, const T* t, const T* lo, const T* hi, double theta,
                         int64_t n);

// L-BFGS-B's projected-gradient norm (SciPy's projgr): max |p_i| with p_i = max(x - hi, g) for
// g < 0 and min(x - lo, g) otherwise, as float64; NaN if any p_i is NaN.
template <typename T>
double projected_amax(const T* x, const T* g, const T* lo, const T* hi, int64_t n);

// The largest t >= 0 with lo <= x + t d <= hi (inf if no bound limits d), as float64.
template <typename T>
double max_step(const T* x, const T* d, const T* lo, const T* hi, int64_t n);

// max |a[i]| as float64; NaN if any element is NaN.
template <typename T>
double amax(const T* a, int64_t n);

}  // namespace lbfgs
}  // namespace cpu
}  // namespace fusedopt
