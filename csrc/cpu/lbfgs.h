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

// out[i] = a[i] - b[i] (out may be a or b itself); dots = {c.out, out.out} in float64.
template <typename T>
void sub_dots(T* out, const T* a, const T* b, const T* c, int64_t n, double* dots);

// out[i] = a * x[i] + b * y[i], with a and b cast to T once; out[i] = a * x[i] when y is null.
template <typename T>
void axpby(T* out, double a, const T* x, double b, const T* y, int64_t n);

// max |a[i]| as float64; NaN if any element is NaN.
template <typename T>
double amax(const T* a, int64_t n);

}  // namespace lbfgs
}  // namespace cpu
}  // namespace fusedopt
