// csrc/cpu/lbfgs_compact_dispatch.cpp -- the compact-form direction's functions of lbfgs.h:
// the passes over the history (and L-BFGS-B's rows_dots_many) go to the copy of lbfgs_compact.cpp for the kernels' instruction
// set (see lbfgs_compact.h); the small 2m x 2m algebra between them (compact_coefficients) is
// compiled once, here.
#include <cstdint>
#include <cstring>
#include <vector>

#include "lbfgs.h"
#include "lbfgs_compact.h"

namespace fusedopt {
namespace cpu {
namespace lbfgs {
namespace {

const CompactDirectionTable& table() {
    const char* isa = active_isa();
    if (!std::strcmp(isa, "avx512")) return avx512::compact_direction_table();
    if (!std::strcmp(isa, "avx2")) return avx2::compact_direction_table();
    return generic::compact_direction_table();
}

template <typename T>
const CompactFns<T>& fns();
template <>
const CompactFns<float>& fns<float>() { return table().f32; }
template <>
const CompactFns<double>& fns<double>() { return table().f64; }

}  // namespace

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
void compact_dots(double* out, const Ring<T>& h, const T* g, int64_t gram_row, bool partials) {
    fns<T>().dots(out, h, g, gram_row, partials);
}

template <typename T>
void compact_combine(double* res, T* out, const T* g, const Ring<T>& h, const double* cs,
                     const double* cy, double gamma, bool partials) {
    fns<T>().combine(res, out, g, h, cs, cy, gamma, partials);
}

template <typename T>
double compact_direction(T* out, const T* g, const Ring<T>& h, double* sy, double* yy,
                         int64_t gram_row) {
    return fns<T>().direction(out, g, h, sy, yy, gram_row);
}

template <typename T>
void rows_dots_many(double* out, const T* s, const T* y, const T* const* vs, int64_t nv,
                    int64_t rows, int64_t n, const GramRow* gr) {
    fns<T>().rows_dots_many(out, s, y, vs, nv, rows, n, gr);
}

#define FUSEDOPT_COMPACT_INSTANTIATE(T)                                                    \
    template void compact_dots<T>(double*, const Ring<T>&, const T*, int64_t, bool);       \
    template void compact_combine<T>(double*, T*, const T*, const Ring<T>&, const double*, \
                                     const double*, double, bool);                         \
    template double compact_direction<T>(T*, const T*, const Ring<T>&, double*, double*,   \
                                         int64_t);                                         \
    template void rows_dots_many<T>(double*, const T*, const T*, const T* const*, int64_t, \
                                    int64_t, int64_t, const GramRow*);
FUSEDOPT_COMPACT_INSTANTIATE(float)
FUSEDOPT_COMPACT_INSTANTIATE(double)
#undef FUSEDOPT_COMPACT_INSTANTIATE

}  // namespace lbfgs
}  // namespace cpu
}  // namespace fusedopt
