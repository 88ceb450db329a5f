// csrc/cpu/lbfgs_bindings.cpp -- L-BFGS kernels of fusedopt._core: argument checks and the GIL
// release; the loops are in lbfgs.cpp.
//
// Every argument is checked before anything is written: a wrong type, dtype, shape, a
// non-contiguous, unaligned or read-only output, an output that shares memory with an input, or
// head/count out of range raise TypeError/ValueError naming the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "arrays.h"
#include "lbfgs.h"
#include "nogil.h"

namespace py = pybind11;
namespace lb = fusedopt::cpu::lbfgs;

namespace {

using fusedopt::cpu::Array;
using fusedopt::cpu::DType;

// A lone array argument (checks shared with the multi-tensor kernels: fusedopt::cpu::check_array).
Array array_arg(py::handle h, const char* name, bool written, const Array* like = nullptr) {
    return fusedopt::cpu::check_array(h.ptr(), name, -1, written, like);
}

void same_shape(const Array& x, const Array& ref) {
    if (!x.same_shape(ref))
        throw py::value_error(x.name() + ": shape " + x.shape() + " does not match " +
                              ref.name() + " " + ref.shape());
}

// `out` may be `in` itself only when `exact_ok` (elementwise in place); never a partial overlap.
void no_overlap(const Array& out, const Array& in, bool exact_ok = false) {
    if (out.size == 0 || in.size == 0) return;
    if (exact_ok && out.lo() == in.lo() && out.hi() == in.hi()) return;
    if (out.lo() < in.hi() && in.lo() < out.hi())
        throw py::value_error(out.name() + " shares memory with " + in.name() +
                              "; the output must not alias an input");
}

// One side of the L-BFGS-B box: an array like `like`, or None (no bound on that side anywhere:
// the kernel gets null and reads no array, with the bits of an array of infinities). For None,
// `stand_in`, an input that the size and overlap checks look at anyway, takes its place there.
Array side_arg(py::handle h, const char* name, const Array& like, const Array& stand_in) {
    return h.is_none() ? stand_in : fusedopt::cpu::check_array(h.ptr(), name, -1, false, &like);
}

// The kernel's pointer for a side from side_arg: null where it was None.
template <typename T>
const T* side_ptr(py::handle h, const Array& a) {
    return h.is_none() ? nullptr : static_cast<const T*>(a.data());
}

template <typename Fn>
auto by_dtype(const Array& a, Fn&& fn) {
    if (a.dtype == DType::kFloat32) return fn(float{});
    return fn(double{});
}

// head in [0, m) and count in [0, m] for a ring of m rows.
void ring_position(int64_t head, int64_t count, int64_t m) {
    if (head < 0 || head >= m)
        throw py::value_error("head must be in [0, " + std::to_string(m) + "), got " +
                              std::to_string(head));
    if (count < 0 || count > m)
        throw py::value_error("count must be in [0, " + std::to_string(m) + "], got " +
                              std::to_string(count));
}

double direction(py::handle out_h, py::handle grad_h, py::handle s_h, py::handle y_h,
                 py::handle rho_h, int64_t head, int64_t count) {
    const Array out = array_arg(out_h, "out", true);
    const Array grad = array_arg(grad_h, "grad", false, &out);
    same_shape(grad, out);
    const Array s = array_arg(s_h, "s", false, &out);
    const Array y = array_arg(y_h, "y", false, &out);
    if (s.ndim() != 2 || s.dim(1) != out.size || s.dim(0) < 1)
        throw py::value_error("s must have shape (m, " + std::to_string(out.size) +
                              ") with m >= 1 (n = out.size), got " + s.shape());
    same_shape(y, s);
    const int64_t m = s.dim(0);
    const Array rho = array_arg(rho_h, "rho", false);
    if (rho.dtype != DType::kFloat64)
        throw py::type_error("rho has dtype float32; expected float64");
    if (rho.ndim() != 1 || rho.dim(0) != m)
        throw py::value_error("rho must have shape (" + std::to_string(m) + ",) like s rows, got " +
                              rho.shape());
    ring_position(head, count, m);
    for (const Array* in : {&grad, &s, &y, &rho}) no_overlap(out, *in);
    return by_dtype(out, [&](auto zero) {
        using T = decltype(zero);
        const lb::Ring<T> ring{static_cast<const T*>(s.data()), static_cast<const T*>(y.data()),
                               static_cast<const double*>(rho.data()), m, out.size, head, count};
        fusedopt::NoGil nogil;
        return lb::direction(static_cast<T*>(out.data()), static_cast<const T*>(grad.data()),
                             ring);
    });
}

// The two arrays of a binary helper: any shapes of the same size and dtype.
void same_size(const Array& x, const Array& ref) {
    if (x.size != ref.size)
        throw py::value_error(x.name() + " has " + std::to_string(x.size) + " elements but " +
                              ref.name() + " has " + std::to_string(ref.size));
}

double dot(py::handle a_h, py::handle b_h) {
    const Array a = array_arg(a_h, "a", false);
    const Array b = array_arg(b_h, "b", false, &a);
    same_size(b, a);
    return by_dtype(a, [&](auto zero) {
        using T = decltype(zero);
        fusedopt::NoGil nogil;
        return lb::dot(static_cast<const T*>(a.data()), static_cast<const T*>(b.data()), a.size);
    });
}

void axpby(py::handle out_h, double a, py::handle x_h, double b, py::handle y_h) {
    const Array out = array_arg(out_h, "out", true);
    const Array x = array_arg(x_h, "x", false, &out);
    same_size(x, out);
    no_overlap(out, x, true);
    const bool has_y = !y_h.is_none();
    const Array y = has_y ? array_arg(y_h, "y", false, &out) : x;
    same_size(y, out);
    no_overlap(out, y, true);
    by_dtype(out, [&](auto zero) {
        using T = decltype(zero);
        fusedopt::NoGil nogil;
        lb::axpby(static_cast<T*>(out.data()), a, static_cast<const T*>(x.data()), b,
                  has_y ? static_cast<const T*>(y.data()) : nullptr, out.size);
    });
}

py::tuple pair_dots(py::handle xt_h, py::handle x_h, py::handle gt_h, py::handle g_h) {
    const Array xt = array_arg(xt_h, "xt", false);
    const Array x = array_arg(x_h, "x", false, &xt);
    const Array gt = array_arg(gt_h, "gt", false, &xt);
    const Array g = array_arg(g_h, "g", false, &xt);
    for (const Array* in : {&x, &gt, &g}) same_size(*in, xt);
    double dots[2];
    by_dtype(xt, [&](auto zero) {
        using T = decltype(zero);
        fusedopt::NoGil nogil;
        lb::pair_dots(static_cast<const T*>(xt.data()), static_cast<const T*>(x.data()),
                      static_cast<const T*>(gt.data()), static_cast<const T*>(g.data()), xt.size,
                      dots);
        return 0.0;
    });
    return py::make_tuple(dots[0], dots[1]);
}

py::tuple sub_dots(py::handle out_h, py::handle a_h, py::handle b_h, py::handle c_h) {
    const Array out = array_arg(out_h, "out", true);
    const Array a = array_arg(a_h, "a", false, &out);
    const Array b = array_arg(b_h, "b", false, &out);
    const Array c = array_arg(c_h, "c", false, &out);
    for (const Array* x : {&a, &b, &c}) same_size(*x, out);
    no_overlap(out, a, true);
    no_overlap(out, b, true);
    no_overlap(out, c);
    double dots[2] = {0.0, 0.0};
    by_dtype(out, [&](auto zero) {
        using T = decltype(zero);
        fusedopt::NoGil nogil;
        lb::sub_dots(static_cast<T*>(out.data()), static_cast<const T*>(a.data()),
                     static_cast<const T*>(b.data()), static_cast<const T*>(c.data()), out.size,
                     dots);
    });
    return py::make_tuple(dots[0], dots[1]);
}

double amax(py::handle a_h) {
    const Array a = array_arg(a_h, "a", false);
    return by_dtype(a, [&](auto zero) {
        using T = decltype(zero);
        fusedopt::NoGil nogil;
        return lb::amax(static_cast<const T*>(a.data()), a.size);
    });
}

// s and y of a compact form: (m, n) like each other, n = like.size; rows in [0, m].
int64_t history_rows(const Array& s, const Array& y, const Array& like, int64_t rows) {
    if (s.ndim() != 2 || s.dim(1) != like.size || s.dim(0) < 1)
        throw py::value_error("s must have shape (m, " + std::to_string(like.size) + ") with m >= 1 (n = " +
                              like.name() + ".size), got " + s.shape());
    same_shape(y, s);
    if (rows < 0 || rows > s.dim(0))
        throw py::value_error("rows must be in [0, " + std::to_string(s.dim(0)) + "], got " +
                              std::to_string(rows));
    return rows;
}

py::array_t<double> rows_dots(py::handle s_h, py::handle y_h, py::handle v_h, int64_t rows,
                              py::handle w_h) {
    const Array v = array_arg(v_h, "v", false);
    const Array s = array_arg(s_h, "s", false, &v);
    const Array y = array_arg(y_h, "y", false, &v);
    history_rows(s, y, v, rows);
    const bool has_w = !w_h.is_none();
    const Array w = has_w ? array_arg(w_h, "w", false, &v) : v;
    same_size(w, v);
    py::array_t<double> out((has_w ? 4 : 2) * rows);
    double* o = out.mutable_data();
    by_dtype(v, [&](auto zero) {
        using T = decltype(zero);
        fusedopt::NoGil nogil;
        lb::rows_dots(o, static_cast<const T*>(s.data()), static_cast<const T*>(y.data()),
                      static_cast<const T*>(v.data()),
                      has_w ? static_cast<const T*>(w.data()) : nullptr, rows, v.size);
    });
    return out;
}

// A float64 C-contiguous writable (rows, cols) array, checked by name.
double* f64_table(py::handle h, const char* name, int64_t rows, int64_t cols) {
    if (!py::isinstance<py::array>(h))
        throw py::type_error(std::string(name) + " must be a numpy.ndarray");
    py::array a = py::reinterpret_borrow<py::array>(h);
    if (!a.dtype().is(py::dtype::of<double>()))
        throw py::type_error(std::string(name) + " must have dtype float64");
    if (!(a.flags() & py::array::c_style) || !a.writeable())
        throw py::value_error(std::string(name) + " must be C-contiguous and writable");
    if (a.ndim() != 2 || a.shape(0) != rows || a.shape(1) != cols)
        throw py::value_error(std::string(name) + " must have shape (" + std::to_string(rows) +
                              ", " + std::to_string(cols) + ")");
    return static_cast<double*>(a.mutable_data());
}

// idx as a strictly increasing int64 index list into [0, n) (ValueError naming idx otherwise).
py::array_t<int64_t, py::array::c_style | py::array::forcecast> sorted_index(py::handle h,
                                                                             int64_t n) {
    auto idx = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(h);
    if (!idx) throw py::type_error("idx must be an array of integers");
    if (idx.ndim() != 1) throw py::value_error("idx must be 1-D");
    const int64_t* ix = idx.data();
    for (int64_t e = 0; e < idx.shape(0); ++e) {
        if (ix[e] < 0 || ix[e] >= n)
            throw py::value_error("idx: index " + std::to_string(ix[e]) + " out of [0, " +
                                  std::to_string(n) + ")");
        if (e && ix[e] <= ix[e - 1]) throw py::value_error("idx must be strictly increasing");
    }
    return idx;
}

py::array_t<double> rows_dots_many(py::handle s_h, py::handle y_h, py::sequence vs_h,
                                   int64_t rows, py::handle parts_h, py::handle idx_h,
                                   int64_t row) {
    const int64_t nv = static_cast<int64_t>(py::len(vs_h));
    if (nv < 1) throw py::value_error("vs must hold at least one vector");
    std::vector<Array> vs;
    vs.reserve(static_cast<size_t>(nv));
    for (int64_t q = 0; q < nv; ++q) {
        vs.push_back(fusedopt::cpu::check_array(vs_h[static_cast<size_t>(q)].ptr(), "vs", q,
                                                false, q ? &vs[0] : nullptr));
        same_size(vs.back(), vs[0]);
    }
    const Array s = array_arg(s_h, "s", false, &vs[0]);
    const Array y = array_arg(y_h, "y", false, &vs[0]);
    history_rows(s, y, vs[0], rows);
    const int64_t n = vs[0].size;
    lb::GramRow gr{};
    py::array_t<int64_t, py::array::c_style | py::array::forcecast> idx;
    const bool with_gram = !parts_h.is_none();
    if (with_gram) {
        if (idx_h.is_none()) throw py::value_error("idx is required with parts");
        if (row < 0 || row >= rows)
            throw py::value_error("row must be in [0, rows) with parts, got " +
                                  std::to_string(row));
        idx = sorted_index(idx_h, n);
        gr.m = s.dim(0);
        gr.parts = f64_table(parts_h, "parts", (n + fusedopt::cpu::kReduceBlock - 1) /
                                                   fusedopt::cpu::kReduceBlock, 3 * gr.m * gr.m);
        gr.idx = idx.data();
        gr.na = idx.shape(0);
        gr.row = row;
    }
    py::array_t<double> out(2 * nv * rows);
    double* o = out.mutable_data();
    by_dtype(vs[0], [&](auto zero) {
        using T = decltype(zero);
        std::vector<const T*> ptr;
        for (const Array& v : vs) ptr.push_back(static_cast<const T*>(v.data()));
        fusedopt::NoGil nogil;
        lb::rows_dots_many(o, static_cast<const T*>(s.data()), static_cast<const T*>(y.data()),
                           ptr.data(), nv, rows, n, with_gram ? &gr : nullptr);
    });
    return out;
}

// q of the Gram kernels: None (then s, unused) or len(idx) values of s's dtype.
Array gram_q(py::handle q_h, const Array& s, int64_t na) {
    if (q_h.is_none()) return s;
    const Array q = array_arg(q_h, "q", false, &s);
    if (q.ndim() != 1 || q.size != na)
        throw py::value_error("q must be 1-D with len(idx) = " + std::to_string(na) +
                              " elements, got " + q.shape());
    return q;
}

// The Gram kernels' result: (3, rows, rows), and with q a tuple (that, the 2 rows dots).
py::object gram_result(const std::vector<double>& o, int64_t rows, bool has_q) {
    py::array_t<double> gram({int64_t(3), rows, rows});
    std::copy(o.begin(), o.begin() + 3 * rows * rows, gram.mutable_data());
    if (!has_q) return std::move(gram);
    py::array_t<double> dots(2 * rows);
    std::copy(o.begin() + 3 * rows * rows, o.end(), dots.mutable_data());
    return py::make_tuple(gram, dots);
}

py::object rows_gram_at(py::handle s_h, py::handle y_h,
                        py::array_t<int64_t, py::array::c_style | py::array::forcecast> idx,
                        int64_t rows, py::handle q_h) {
    const Array s = array_arg(s_h, "s", false);
    const Array y = array_arg(y_h, "y", false, &s);
    if (s.ndim() != 2 || s.dim(0) < 1)
        throw py::value_error("s must have shape (m, n) with m >= 1, got " + s.shape());
    same_shape(y, s);
    if (rows < 0 || rows > s.dim(0))
        throw py::value_error("rows must be in [0, " + std::to_string(s.dim(0)) + "], got " +
                              std::to_string(rows));
    if (idx.ndim() != 1) throw py::value_error("idx must be 1-D");
    const int64_t n = s.dim(1), na = idx.shape(0);
    const int64_t* ix = idx.data();
    for (int64_t e = 0; e < na; ++e)
        if (ix[e] < 0 || ix[e] >= n)
            throw py::value_error("idx: index " + std::to_string(ix[e]) + " out of [0, " +
                                  std::to_string(n) + ")");
    const bool has_q = !q_h.is_none();
    const Array q = gram_q(q_h, s, na);
    std::vector<double> o(static_cast<size_t>(3 * rows * rows + (has_q ? 2 * rows : 0)));
    by_dtype(s, [&](auto zero) {
        using T = decltype(zero);
        fusedopt::NoGil nogil;
        lb::rows_gram_at(o.data(), static_cast<const T*>(s.data()),
                         static_cast<const T*>(y.data()), ix, na, rows, n,
                         has_q ? static_cast<const T*>(q.data()) : nullptr);
    });
    return gram_result(o, rows, has_q);
}

py::object gram_blocks(py::handle parts_h, py::handle qparts_h, py::handle s_h, py::handle y_h,
                       py::handle idx_h, int64_t rows, py::array_t<uint8_t, py::array::c_style | py::array::forcecast> redo,
                       int64_t row, py::handle q_h) {
    const Array s = array_arg(s_h, "s", false);
    const Array y = array_arg(y_h, "y", false, &s);
    if (s.ndim() != 2 || s.dim(0) < 1)
        throw py::value_error("s must have shape (m, n) with m >= 1, got " + s.shape());
    same_shape(y, s);
    const int64_t m = s.dim(0), n = s.dim(1), nb = (n + fusedopt::cpu::kReduceBlock - 1) /
                                                  fusedopt::cpu::kReduceBlock;
    if (rows < 0 || rows > m)
        throw py::value_error("rows must be in [0, " + std::to_string(m) + "], got " +
                              std::to_string(rows));
    if (row < -1 || row >= rows)
        throw py::value_error("row must be -1 or in [0, rows), got " + std::to_string(row));
    const auto idx = sorted_index(idx_h, n);
    const int64_t na = idx.shape(0);
    const int64_t* ix = idx.data();
    if (redo.ndim() != 1 || redo.shape(0) != nb)
        throw py::value_error("redo must be 1-D with one flag per block (" + std::to_string(nb) +
                              ")");
    double* parts = f64_table(parts_h, "parts", nb, 3 * m * m);
    const bool has_q = !q_h.is_none();
    double* qparts = has_q ? f64_table(qparts_h, "qparts", nb, 2 * m) : nullptr;
    const Array q = gram_q(q_h, s, na);
    std::vector<double> o(static_cast<size_t>(3 * rows * rows + (has_q ? 2 * rows : 0)));
    by_dtype(s, [&](auto zero) {
        using T = decltype(zero);
        fusedopt::NoGil nogil;
        lb::gram_blocks(o.data(), parts, qparts, static_cast<const T*>(s.data()),
                        static_cast<const T*>(y.data()), ix, na, m, rows, n, redo.data(), row,
                        has_q ? static_cast<const T*>(q.data()) : nullptr);
    });
    return gram_result(o, rows, has_q);
}

// The coefficient vectors of a combination of history rows: float64, 1-D, >= rows elements.
void coefficients(const Array& c, int64_t rows) {
    if (c.dtype != DType::kFloat64)
        throw py::type_error(c.name() + " has dtype float32; expected float64");
    if (c.ndim() != 1 || c.dim(0) < rows)
        throw py::value_error(c.name() + " must be 1-D with at least rows = " +
                              std::to_string(rows) + " elements, got " + c.shape());
}

void rows_axpy(py::handle out_h, py::handle s_h, py::handle y_h, py::handle a_h, py::handle b_h,
               int64_t rows) {
    const Array out = array_arg(out_h, "out", true);
    const Array s = array_arg(s_h, "s", false, &out);
    const Array y = array_arg(y_h, "y", false, &out);
    history_rows(s, y, out, rows);
    const Array a = array_arg(a_h, "a", false);
    const Array b = array_arg(b_h, "b", false);
    coefficients(a, rows);
    coefficients(b, rows);
    for (const Array* in : {&s, &y, &a, &b}) no_overlap(out, *in);
    by_dtype(out, [&](auto zero) {
        using T = decltype(zero);
        fusedopt::NoGil nogil;
        lb::rows_axpy(static_cast<T*>(out.data()), static_cast<const T*>(s.data()),
                      static_cast<const T*>(y.data()), static_cast<const double*>(a.data()),
                      static_cast<const double*>(b.data()), rows, out.size);
    });
}

// (d . d, projected-gradient norm, moving variables without a breakpoint): see lbfgs.h.
py::tuple cauchy_start_pg(py::handle d_h, py::handle t_h, py::handle x_h, py::handle g_h,
                          py::handle lo_h, py::handle hi_h) {
    const Array d = array_arg(d_h, "d", true);
    const Array t = array_arg(t_h, "t", true, &d);
    same_size(t, d);
    no_overlap(t, d);
    const Array x = array_arg(x_h, "x", false, &d);
    const Array g = array_arg(g_h, "g", false, &d);
    const Array lo = side_arg(lo_h, "lo", d, x);
    const Array hi = side_arg(hi_h, "hi", d, x);
    for (const Array* in : {&x, &g, &lo, &hi}) {
        same_size(*in, d);
        no_overlap(d, *in);
        no_overlap(t, *in);
    }
    double out[3];
    by_dtype(d, [&](auto zero) {
        using T = decltype(zero);
        fusedopt::NoGil nogil;
        lb::cauchy_start_pg(static_cast<T*>(d.data()), static_cast<T*>(t.data()),
                            static_cast<const T*>(x.data()), static_cast<const T*>(g.data()),
                            side_ptr<T>(lo_h, lo), side_ptr<T>(hi_h, hi), d.size, out);
        return 0.0;
    });
    return py::make_tuple(out[0], out[1], static_cast<int64_t>(out[2]));
}

double cauchy_start(py::handle d_h, py::handle t_h, py::handle x_h, py::handle g_h,
                    py::handle lo_h, py::handle hi_h) {
    return cauchy_start_pg(d_h, t_h, x_h, g_h, lo_h, hi_h)[0].cast<double>();
}

// Four read-only vectors of one size and dtype (x, g or d, lo, hi).
template <typename Fn>
double box_reduce(py::handle x_h, py::handle g_h, py::handle lo_h, py::handle hi_h,
                  const char* gname, Fn&& fn) {
    const Array x = array_arg(x_h, "x", false);
    const Array g = array_arg(g_h, gname, false, &x);
    const Array lo = side_arg(lo_h, "lo", x, x);
    const Array hi = side_arg(hi_h, "hi", x, x);
    for (const Array* in : {&g, &lo, &hi}) same_size(*in, x);
    return by_dtype(x, [&](auto zero) {
        using T = decltype(zero);
        fusedopt::NoGil nogil;
        return fn(static_cast<const T*>(x.data()), static_cast<const T*>(g.data()),
                  side_ptr<T>(lo_h, lo), side_ptr<T>(hi_h, hi), x.size);
    });
}

double projected_amax(py::handle x, py::handle g, py::handle lo, py::handle hi) {
    return box_reduce(x, g, lo, hi, "g", [](auto... a) { return lb::projected_amax(a...); });
}

double max_step(py::handle x, py::handle d, py::handle lo, py::handle hi) {
    return box_reduce(x, d, lo, hi, "d", [](auto... a) { return lb::max_step(a...); });
}

void step_in_box(py::handle out_h, py::handle x_h, double t, py::handle d_h, py::handle lo_h,
                 py::handle hi_h) {
    const Array out = array_arg(out_h, "out", true);
    const Array x = array_arg(x_h, "x", false, &out);
    const Array d = array_arg(d_h, "d", false, &out);
    const Array lo = side_arg(lo_h, "lo", out, d);
    const Array hi = side_arg(hi_h, "hi", out, d);
    for (const Array* in : {&x, &d, &lo, &hi}) same_size(*in, out);
    no_overlap(out, x, true);
    for (const Array* in : {&d, &lo, &hi}) no_overlap(out, *in);
    by_dtype(out, [&](auto zero) {
        using T = decltype(zero);
        fusedopt::NoGil nogil;
        lb::step_in_box(static_cast<T*>(out.data()), static_cast<const T*>(x.data()), t,
                        static_cast<const T*>(d.data()), side_ptr<T>(lo_h, lo),
                        side_ptr<T>(hi_h, hi), out.size);
    });
}

py::array_t<double> reduced_gradient(py::handle r_h, py::handle s_h, py::handle y_h,
                                     py::handle a_h, py::handle b_h, int64_t rows,
                                     py::handle xc_h, py::handle x_h, py::handle g_h,
                                     py::handle t_h, double theta) {
    const Array r = array_arg(r_h, "r", true);
    const Array s = array_arg(s_h, "s", false, &r);
    const Array y = array_arg(y_h, "y", false, &r);
    history_rows(s, y, r, rows);
    const Array a = array_arg(a_h, "a", false);
    const Array b = array_arg(b_h, "b", false);
    coefficients(a, rows);
    coefficients(b, rows);
    const Array xc = array_arg(xc_h, "xc", false, &r);
    const Array x = array_arg(x_h, "x", false, &r);
    const Array g = array_arg(g_h, "g", false, &r);
    const bool has_t = !t_h.is_none();
    const Array t = has_t ? array_arg(t_h, "t", false, &r) : x;
    for (const Array* in : {&xc, &x, &g, &t}) same_size(*in, r);
    for (const Array* in : {&s, &y, &a, &b, &xc, &x, &g, &t}) no_overlap(r, *in);
    py::array_t<double> out(2 * rows);
    double* o = out.mutable_data();
    by_dtype(r, [&](auto zero) {
        using T = decltype(zero);
        fusedopt::NoGil nogil;
        lb::reduced_gradient(o, static_cast<T*>(r.data()), static_cast<const T*>(s.data()),
                             static_cast<const T*>(y.data()), static_cast<const double*>(a.data()),
                             static_cast<const double*>(b.data()), rows,
                             static_cast<const T*>(xc.data()), static_cast<const T*>(x.data()),
                             static_cast<const T*>(g.data()),
                             has_t ? static_cast<const T*>(t.data()) : nullptr, theta, r.size);
    });
    return out;
}

// The checked arguments of subspace_point (with r) and subspace_direct (r = None).
struct SubspaceArgs {
    Array xbar, du, s, y, a, b, r, xc, x, g, t, lo, hi;
    bool has_r, has_t, has_lo, has_hi;   // lo, hi: None (no bound on that side) -> null

    template <typename T>
    const T* at(const Array& v, bool present = true) const {
        return present ? static_cast<const T*>(v.data()) : nullptr;
    }
};

SubspaceArgs subspace_args(py::handle xbar_h, py::handle du_h, py::handle s_h, py::handle y_h,
                           py::handle a_h, py::handle b_h, int64_t rows, py::handle r_h,
                           py::handle xc_h, py::handle x_h, py::handle g_h, py::handle t_h,
                           py::handle lo_h, py::handle hi_h, const char* xbar_name = "xbar") {
    const Array xbar = array_arg(xbar_h, xbar_name, true);
    const bool has_du = !du_h.is_none();         // None: subspace_direct_d without xbar, du
    const Array du = has_du ? array_arg(du_h, "du", true, &xbar) : xbar;
    const Array s = array_arg(s_h, "s", false, &xbar);
    const Array y = array_arg(y_h, "y", false, &xbar);
    history_rows(s, y, xbar, rows);
    const Array a = array_arg(a_h, "a", false);
    const Array b = array_arg(b_h, "b", false);
    coefficients(a, rows);
    coefficients(b, rows);
    const bool has_r = !r_h.is_none();
    const Array xc = array_arg(xc_h, "xc", false, &xbar);
    const Array r = has_r ? array_arg(r_h, "r", false, &xbar) : xc;
    const Array x = array_arg(x_h, "x", false, &xbar);
    const Array g = array_arg(g_h, "g", false, &xbar);
    const bool has_t = !t_h.is_none();
    const Array t = has_t ? array_arg(t_h, "t", false, &xbar) : x;
    const Array lo = side_arg(lo_h, "lo", xbar, g);
    const Array hi = side_arg(hi_h, "hi", xbar, g);
    same_size(du, xbar);
    for (const Array* in : {&r, &xc, &x, &g, &t, &lo, &hi}) same_size(*in, xbar);
    if (has_du) no_overlap(xbar, du);
    for (const Array* in : {&s, &y, &a, &b, &r, &xc, &x, &g, &t, &lo, &hi}) {
        no_overlap(xbar, *in);
        if (has_du) no_overlap(du, *in);
    }
    return SubspaceArgs{xbar, du, s,  y,  a,     b,     r,     xc, x, g, t, lo, hi, has_r, has_t,
                        !lo_h.is_none(), !hi_h.is_none()};
}

// The subspace step on A's dtype without the GIL: kernel(xbar, du, s, y, a, b, rows, r or null,
// xc, x, g, t or null, lo, hi) with typed pointers.
template <typename Kernel>
double subspace_run(const SubspaceArgs& A, int64_t rows, Kernel&& kernel) {
    return by_dtype(A.xbar, [&](auto zero) {
        using T = decltype(zero);
        fusedopt::NoGil nogil;
        return kernel(static_cast<T*>(A.xbar.data()), static_cast<T*>(A.du.data()),
                      A.at<T>(A.s), A.at<T>(A.y), static_cast<const double*>(A.a.data()),
                      static_cast<const double*>(A.b.data()), rows, A.at<T>(A.r, A.has_r),
                      A.at<T>(A.xc), A.at<T>(A.x), A.at<T>(A.g), A.at<T>(A.t, A.has_t),
                      A.at<T>(A.lo, A.has_lo), A.at<T>(A.hi, A.has_hi));
    });
}

double subspace_point(py::handle xbar_h, py::handle du_h, py::handle s_h, py::handle y_h,
                      py::handle a_h, py::handle b_h, int64_t rows, py::handle r_h,
                      py::handle xc_h, py::handle x_h, py::handle g_h, py::handle t_h,
                      py::handle lo_h, py::handle hi_h, double theta) {
    if (r_h.is_none()) throw py::type_error("r must be an array, got None");
    const SubspaceArgs A = subspace_args(xbar_h, du_h, s_h, y_h, a_h, b_h, rows, r_h, xc_h, x_h,
                                         g_h, t_h, lo_h, hi_h);
    return subspace_run(A, rows, [&](auto* xbar, auto* du, auto... in) {
        return lb::subspace_point(xbar, du, in..., theta, A.xbar.size);
    });
}

double subspace_direct(py::handle xbar_h, py::handle du_h, py::handle s_h, py::handle y_h,
                       py::handle a_h, py::handle b_h, int64_t rows, py::handle xc_h,
                       py::handle x_h, py::handle g_h, py::handle t_h, py::handle lo_h,
                       py::handle hi_h, double theta) {
    const SubspaceArgs A = subspace_args(xbar_h, du_h, s_h, y_h, a_h, b_h, rows, py::none(),
                                         xc_h, x_h, g_h, t_h, lo_h, hi_h);
    return subspace_run(A, rows, [&](auto* xbar, auto* du, auto s, auto y, auto a, auto b,
                                     int64_t k, auto, auto... rest) {
        return lb::subspace_direct(xbar, du, s, y, a, b, k, rest..., theta, A.xbar.size);
    });
}

// subspace_direct writing d = xbar - x too; returns (g . d, max_step(x, d, lo, hi)).
py::tuple subspace_direct_d(py::handle xbar_h, py::handle du_h, py::handle d_h, py::handle s_h,
                            py::handle y_h, py::handle a_h, py::handle b_h, int64_t rows,
                            py::handle xc_h, py::handle x_h, py::handle g_h, py::handle t_h,
                            py::handle lo_h, py::handle hi_h, double theta) {
    // xbar = du = None: only d written (then d stands in for them in the checks)
    const bool store = !xbar_h.is_none() || !du_h.is_none();
    if (store && (xbar_h.is_none() || du_h.is_none()))
        throw py::type_error("xbar and du must both be arrays or both None");
    const SubspaceArgs A = subspace_args(store ? xbar_h : d_h, store ? du_h : py::none(), s_h,
                                         y_h, a_h, b_h, rows, py::none(), xc_h, x_h, g_h, t_h,
                                         lo_h, hi_h, store ? "xbar" : "d");
    const Array d = store ? array_arg(d_h, "d", true, &A.xbar) : A.xbar;   // else checked
    same_size(d, A.xbar);
    if (store)
        for (const Array* in : {&A.xbar, &A.du, &A.s, &A.y, &A.xc, &A.x, &A.g, &A.t, &A.lo,
                                &A.hi})
            no_overlap(d, *in);
    double tmax = 0.0;
    const double gd = subspace_run(A, rows, [&](auto* xbar, auto* du, auto s, auto y, auto a,
                                                auto b, int64_t k, auto, auto... rest) {
        using T = std::remove_pointer_t<decltype(xbar)>;
        return lb::subspace_direct_d(store ? xbar : nullptr, store ? du : nullptr,
                                     static_cast<T*>(d.data()), &tmax, s, y, a, b, k, rest...,
                                     theta, A.xbar.size);
    });
    return py::make_tuple(gd, tmax);
}

double copy_dot(py::handle out_h, py::handle g_h, py::handle d_h) {
    const Array out = array_arg(out_h, "out", true);
    const Array g = array_arg(g_h, "g", false, &out);
    const Array d = array_arg(d_h, "d", false, &out);
    same_size(g, out);
    same_size(d, out);
    no_overlap(out, g);
    no_overlap(out, d);
    return by_dtype(out, [&](auto zero) {
        using T = decltype(zero);
        fusedopt::NoGil nogil;
        return lb::copy_dot(static_cast<T*>(out.data()), static_cast<const T*>(g.data()),
                            static_cast<const T*>(d.data()), out.size);
    });
}

// A writable C-contiguous int64 output of n entries named `name` (an index list or a heap's
// storage), checked against the float arrays it must not overlap; returns its data.
int64_t* int64_out(py::handle h, const char* name, int64_t n,
                   std::initializer_list<const Array*> inputs) {
    const std::string nm(name);
    if (!py::isinstance<py::array>(h)) throw py::type_error(nm + " must be a numpy.ndarray");
    py::array a = py::reinterpret_borrow<py::array>(h);
    if (!a.dtype().is(py::dtype::of<int64_t>()))
        throw py::type_error(nm + " must have dtype int64");
    if (!(a.flags() & py::array::c_style) || !a.writeable() || a.ndim() != 1 || a.shape(0) != n)
        throw py::value_error(nm + " must be a writable C-contiguous int64 array of shape (" +
                              std::to_string(n) + ",)");
    const auto lo = reinterpret_cast<uintptr_t>(a.data());
    const uintptr_t hi = lo + static_cast<uintptr_t>(n) * sizeof(int64_t);
    for (const Array* in : inputs)
        if (n && lo < in->hi() && in->lo() < hi)
            throw py::value_error(nm + " shares memory with " + in->name() +
                                  "; the output must not alias an input");
    return static_cast<int64_t*>(a.mutable_data());
}

// fixed_set: idx (int64, n entries) and q (n, t's dtype) written; returns the count.
int64_t fixed_set(py::handle idx_h, py::handle q_h, py::handle t_h, py::handle xc_h,
                  py::handle x_h, py::handle g_h, double theta, bool zero_held) {
    const Array q = array_arg(q_h, "q", true);
    const Array t = array_arg(t_h, "t", false, &q);
    const Array xc = array_arg(xc_h, "xc", false, &q);
    const Array x = array_arg(x_h, "x", false, &q);
    const Array g = array_arg(g_h, "g", false, &q);
    for (const Array* in : {&q, &xc, &x, &g}) same_size(*in, t);
    for (const Array* in : {&t, &xc, &x, &g}) no_overlap(q, *in);
    int64_t* ix = int64_out(idx_h, "idx", t.size, {&q, &t, &xc, &x, &g});
    return by_dtype(q, [&](auto zero) {
        using T = decltype(zero);
        fusedopt::NoGil nogil;
        return lb::fixed_set(ix, static_cast<T*>(q.data()), static_cast<const T*>(t.data()),
                             static_cast<const T*>(xc.data()), static_cast<const T*>(x.data()),
                             static_cast<const T*>(g.data()), theta, zero_held, t.size);
    });
}

// Returns (tsum, p, c): see lbfgs.h. xc, d, t written; s, y the (m, n) ring storage. With idx
// (then q and g too): the fixed set after the path from its last pass (lbfgs.h's FixedOut), and
// (tsum, p, c, count) returned; idx may be scratch itself.
py::tuple cauchy_path(py::handle xc_h, py::handle d_h, py::handle t_h, py::handle x_h,
                      py::handle lo_h, py::handle hi_h, py::handle s_h, py::handle y_h,
                      std::vector<int64_t> order, double theta,
                      py::array_t<double, py::array::c_style | py::array::forcecast> mid,
                      std::vector<double> p, std::vector<double> c, double f1, double f2,
                      bool bounded, py::handle scratch_h, py::handle idx_h, py::handle q_h,
                      py::handle g_h, bool zero_held) {
    const Array xc = array_arg(xc_h, "xc", true);
    const Array d = array_arg(d_h, "d", true, &xc);
    const Array t = array_arg(t_h, "t", true, &xc);
    const Array x = array_arg(x_h, "x", false, &xc);
    const Array lo = side_arg(lo_h, "lo", xc, x);
    const Array hi = side_arg(hi_h, "hi", xc, x);
    for (const Array* a : {&d, &t, &x, &lo, &hi}) same_size(*a, xc);
    const Array s = array_arg(s_h, "s", false, &xc);
    const Array y = array_arg(y_h, "y", false, &xc);
    const int64_t k = static_cast<int64_t>(order.size());
    history_rows(s, y, xc, k);
    for (int64_t r : order)
        if (r < 0 || r >= s.dim(0)) throw py::value_error("order: row out of range");
    if (mid.ndim() != 2 || mid.shape(0) != 2 * k || mid.shape(1) != 2 * k ||
        static_cast<int64_t>(p.size()) != 2 * k || static_cast<int64_t>(c.size()) != 2 * k)
        throw py::value_error("mid must be (2k, 2k) and p, c of length 2k, k = len(order)");
    const Array* outs[] = {&xc, &d, &t};
    for (const Array* o : outs)
        for (const Array* in : {&x, &lo, &hi, &s, &y}) no_overlap(*o, *in);
    no_overlap(xc, d);
    no_overlap(xc, t);
    no_overlap(d, t);
    int64_t* scratch = nullptr;         // the heap's storage (None: the kernel allocates it)
    if (!scratch_h.is_none())
        scratch = int64_out(scratch_h, "scratch", xc.size, {&xc, &d, &t, &x, &lo, &hi, &s, &y});
    const bool with_fixed = !idx_h.is_none();
    if (!with_fixed && !(q_h.is_none() && g_h.is_none()))
        throw py::type_error("q and g are given with idx only");
    if (with_fixed && (q_h.is_none() || g_h.is_none()))
        throw py::type_error("idx needs q and g (arrays like xc)");
    const Array q = with_fixed ? array_arg(q_h, "q", true, &xc) : xc;
    const Array g = with_fixed ? array_arg(g_h, "g", false, &xc) : x;
    int64_t* ix = nullptr;
    if (with_fixed) {
        same_size(q, xc);
        same_size(g, xc);
        for (const Array* o : outs) no_overlap(*o, g);
        for (const Array* in : {&xc, &d, &t, &x, &lo, &hi, &s, &y, &g}) no_overlap(q, *in);
        ix = int64_out(idx_h, "idx", xc.size, {&xc, &d, &t, &x, &lo, &hi, &s, &y, &q, &g});
    }
    int64_t count = 0;
    const double* m = mid.data();
    const double tsum = by_dtype(xc, [&](auto zero) {
        using T = decltype(zero);
        lb::FixedOut<T> fx{ix, static_cast<T*>(q.data()), static_cast<const T*>(g.data()),
                           zero_held, 0};
        fusedopt::NoGil nogil;
        const double ts = lb::cauchy_path(
            static_cast<T*>(xc.data()), static_cast<T*>(d.data()), static_cast<T*>(t.data()),
            static_cast<const T*>(x.data()), side_ptr<T>(lo_h, lo), side_ptr<T>(hi_h, hi),
            static_cast<const T*>(s.data()), static_cast<const T*>(y.data()), order.data(), k,
            theta, m, p.data(), c.data(), f1, f2, bounded, xc.size, scratch,
            with_fixed ? &fx : nullptr);
        count = fx.count;
        return ts;
    });
    if (with_fixed) return py::make_tuple(tsum, p, c, count);
    return py::make_tuple(tsum, p, c);
}

// --- the compact form of the unbounded direction (lbfgs_compact.cpp) -------------------------

// The ring (s, y, head, count) of a compact-form call over vectors like `like`.
struct RingArgs {
    Array s, y;
    int64_t m, head, count;
};

RingArgs ring_args(py::handle s_h, py::handle y_h, const Array& like, int64_t head,
                   int64_t count) {
    const Array s = array_arg(s_h, "s", false, &like);
    const Array y = array_arg(y_h, "y", false, &like);
    if (s.ndim() != 2 || s.dim(1) != like.size || s.dim(0) < 1)
        throw py::value_error("s must have shape (m, " + std::to_string(like.size) +
                              ") with m >= 1 (n = " + like.name() + ".size), got " + s.shape());
    same_shape(y, s);
    const int64_t m = s.dim(0);
    ring_position(head, count, m);
    return RingArgs{s, y, m, head, count};
}

// gram_row: -1, or a ring row holding one of the count valid pairs.
void check_gram_row(int64_t gram_row, const RingArgs& r) {
    if (gram_row == -1) return;
    if (gram_row < -1 || gram_row >= r.m || (gram_row - r.head + r.m) % r.m >= r.count)
        throw py::value_error("gram_row must be -1 or the ring row of a valid pair (head = " +
                              std::to_string(r.head) + ", count = " + std::to_string(r.count) +
                              ", m = " + std::to_string(r.m) + "), got " +
                              std::to_string(gram_row));
}

// A float64 (m, m) Gram matrix in ring indexing.
Array gram_arg(py::handle h, const char* name, bool written, int64_t m) {
    const Array a = array_arg(h, name, written);
    if (a.dtype != DType::kFloat64)
        throw py::type_error(std::string(name) + " has dtype float32; expected float64");
    if (a.ndim() != 2 || a.dim(0) != m || a.dim(1) != m)
        throw py::value_error(std::string(name) + " must have shape (" + std::to_string(m) + ", " +
                              std::to_string(m) + ") like the ring's m, got " + a.shape());
    return a;
}

template <typename T>
lb::Ring<T> ring_of(const RingArgs& r, int64_t n) {
    return lb::Ring<T>{static_cast<const T*>(r.s.data()), static_cast<const T*>(r.y.data()),
                       nullptr, r.m, n, r.head, r.count};
}

int64_t blocks_of(int64_t n) {
    return (n + fusedopt::cpu::kReduceBlock - 1) / fusedopt::cpu::kReduceBlock;
}

py::array_t<double> compact_dots(py::handle s_h, py::handle y_h, py::handle g_h, int64_t head,
                                 int64_t count, int64_t gram_row, bool partials) {
    const Array g = array_arg(g_h, "g", false);
    const RingArgs r = ring_args(s_h, y_h, g, head, count);
    check_gram_row(gram_row, r);
    const int64_t k = (gram_row >= 0 ? 4 : 2) * count;
    py::array_t<double> out = partials ? py::array_t<double>({blocks_of(g.size), k})
                                       : py::array_t<double>(k);
    double* o = out.mutable_data();
    by_dtype(g, [&](auto zero) {
        using T = decltype(zero);
        const lb::Ring<T> ring = ring_of<T>(r, g.size);
        fusedopt::NoGil nogil;
        lb::compact_dots(o, ring, static_cast<const T*>(g.data()), gram_row, partials);
    });
    return out;
}

py::tuple compact_coefficients(
    py::array_t<double, py::array::c_style | py::array::forcecast> dots, py::handle sy_h,
    py::handle yy_h, int64_t head, int64_t count) {
    const Array sq = array_arg(sy_h, "sy", false);
    if (sq.ndim() != 2 || sq.dim(0) != sq.dim(1) || sq.dim(0) < 1)
        throw py::value_error("sy must be a square (m, m) array with m >= 1, got " + sq.shape());
    const int64_t m = sq.dim(0);
    const Array sy = gram_arg(sy_h, "sy", false, m);
    const Array yy = gram_arg(yy_h, "yy", false, m);
    ring_position(head, count, m);
    if (dots.ndim() != 1 || dots.shape(0) < 2 * count)
        throw py::value_error("dots must be 1-D with at least 2 * count = " +
                              std::to_string(2 * count) + " elements");
    py::array_t<double> cs(count), cy(count);
    const double gamma = lb::compact_coefficients(
        dots.data(), static_cast<const double*>(sy.data()), static_cast<const double*>(yy.data()),
        m, head, count, cs.mutable_data(), cy.mutable_data());
    return py::make_tuple(cs, cy, gamma);
}

py::object compact_combine(py::handle out_h, py::handle g_h, py::handle s_h, py::handle y_h,
                           int64_t head, int64_t count, py::handle cs_h, py::handle cy_h,
                           double gamma, bool partials) {
    const Array out = array_arg(out_h, "out", true);
    const Array g = array_arg(g_h, "g", false, &out);
    same_shape(g, out);
    const RingArgs r = ring_args(s_h, y_h, out, head, count);
    const Array cs = array_arg(cs_h, "cs", false);
    const Array cy = array_arg(cy_h, "cy", false);
    coefficients(cs, count);
    coefficients(cy, count);
    for (const Array* in : {&g, &r.s, &r.y, &cs, &cy}) no_overlap(out, *in);
    py::array_t<double> part(partials ? blocks_of(out.size) : 1);
    double* res = part.mutable_data();
    by_dtype(out, [&](auto zero) {
        using T = decltype(zero);
        const lb::Ring<T> ring = ring_of<T>(r, out.size);
        fusedopt::NoGil nogil;
        lb::compact_combine(res, static_cast<T*>(out.data()), static_cast<const T*>(g.data()),
                            ring, static_cast<const double*>(cs.data()),
                            static_cast<const double*>(cy.data()), gamma, partials);
    });
    if (partials) return std::move(part);
    return py::float_(res[0]);
}

double compact_direction(py::handle out_h, py::handle grad_h, py::handle s_h, py::handle y_h,
                         py::handle sy_h, py::handle yy_h, int64_t head, int64_t count,
                         int64_t gram_row) {
    const Array out = array_arg(out_h, "out", true);
    const Array grad = array_arg(grad_h, "grad", false, &out);
    same_shape(grad, out);
    const RingArgs r = ring_args(s_h, y_h, out, head, count);
    check_gram_row(gram_row, r);
    const Array sy = gram_arg(sy_h, "sy", true, r.m);
    const Array yy = gram_arg(yy_h, "yy", true, r.m);
    no_overlap(sy, yy);
    for (const Array* in : {&grad, &r.s, &r.y, &sy, &yy}) no_overlap(out, *in);
    return by_dtype(out, [&](auto zero) {
        using T = decltype(zero);
        const lb::Ring<T> ring = ring_of<T>(r, out.size);
        fusedopt::NoGil nogil;
        return lb::compact_direction(static_cast<T*>(out.data()),
                                     static_cast<const T*>(grad.data()), ring,
                                     static_cast<double*>(sy.data()),
                                     static_cast<double*>(yy.data()), gram_row);
    });
}

}  // namespace

void register_lbfgs(py::module_& m) {
    m.def("lbfgs_direction", &direction, py::arg("out"), py::arg("grad"), py::arg("s"),
          py::arg("y"), py::arg("rho"), py::arg("head"), py::arg("count"),
          "out = -H grad by the L-BFGS two-loop recursion over the ring buffer (s, y, rho, head,"
          " count) of fusedopt.lbfgs.History; fused passes, same bits for any thread count."
          " Returns grad.out (float64).");
    m.def("lbfgs_pair_dots", &pair_dots, py::arg("xt"), py::arg("x"), py::arg("gt"),
          py::arg("g"),
          "(s . y, y . y) with s = xt - x and y = gt - g (in the arrays' dtype, stored nowhere), "
          "one pass: the bits of lbfgs_sub_dots(y, gt, g, s) after s = xt - x.");
    m.def("lbfgs_sub_dots", &sub_dots, py::arg("out"), py::arg("a"), py::arg("b"), py::arg("c"),
          "out = a - b (out may be a or b); returns (c.out, out.out) in float64.");
    m.def("lbfgs_dot", &dot, py::arg("a"), py::arg("b"),
          "sum(a * b) in float64, fixed blocks in a fixed order (same bits for any thread count).");
    m.def("lbfgs_axpby", &axpby, py::arg("out"), py::arg("a"), py::arg("x"),
          py::arg("b") = 0.0, py::arg("y") = py::none(),
          "out = a * x + b * y, or out = a * x without y (out may be x or y itself).");
    m.attr("lbfgs_parallel_min") = lb::parallel_min();
    m.def("lbfgsb_rows_dots", &rows_dots, py::arg("s"), py::arg("y"), py::arg("v"),
          py::arg("rows"), py::arg("w") = py::none(),
          "[s_j . v for j < rows] + [y_j . v for j < rows] (+ the same with w) over the first rows"
          " rows of the (m, n) arrays s, y, in one pass (float64 blocked sums: same bits for any"
          " thread count).");
    m.def("lbfgsb_rows_dots_many", &rows_dots_many, py::arg("s"), py::arg("y"), py::arg("vs"),
          py::arg("rows"), py::arg("parts") = py::none(), py::arg("idx") = py::none(),
          py::arg("row") = -1,
          "[s_j . v] + [y_j . v] for each v of the sequence vs in turn, over the first rows rows"
          " of s, y, in one pass (the bits of lbfgsb_rows_dots). With parts, idx and row: the "
          "same pass also updates lbfgsb_gram_blocks's partials over idx in row and column row "
          "(the bits of lbfgsb_gram_blocks(..., redo = 0, row)).");
    m.def("lbfgsb_rows_gram_at", &rows_gram_at, py::arg("s"), py::arg("y"), py::arg("idx"),
          py::arg("rows"), py::arg("q") = py::none(),
          "(S S^T, S Y^T, Y Y^T) of the first rows rows of the (m, n) arrays s, y over the columns"
          " idx, as a (3, rows, rows) float64 array, in one pass (blocked sums: same bits for any"
          " thread count). With q (len(idx) values of s's dtype): a tuple (that array, "
          "[s_j[idx] . q] + [y_j[idx] . q]), taken in the same pass.");
    m.def("lbfgsb_gram_blocks", &gram_blocks, py::arg("parts"), py::arg("qparts"), py::arg("s"),
          py::arg("y"), py::arg("idx"), py::arg("rows"), py::arg("redo"), py::arg("row") = -1,
          py::arg("q") = py::none(),
          "lbfgsb_rows_gram_at summed by the 16384-element blocks of x (idx strictly increasing)"
          ", the blocks' partials kept in parts (num_blocks x 3 m m, float64: S S^T, S Y^T, "
          "Y Y^T of the storage rows, row stride m): blocks with redo[b] != 0 are recomputed, "
          "the others only in row and column `row` (row >= 0), then the partials of the first "
          "rows rows are added in block order. With q: qparts (num_blocks x 2 m) gets the "
          "blocks' [S q | Y q] and the result is a tuple (gram, dots) as lbfgsb_rows_gram_at's.");
    m.def("lbfgsb_reduced_gradient", &reduced_gradient, py::arg("r"), py::arg("s"),
          py::arg("y"), py::arg("a"), py::arg("b"), py::arg("rows"), py::arg("xc"), py::arg("x"),
          py::arg("g"), py::arg("t"), py::arg("theta"),
          "L-BFGS-B: r = free ? g + theta (xc - x) - (sum a_j s_j + b_j y_j) : 0; returns "
          "[s_j . r] + [y_j . r] (one pass over the history).");
    m.def("lbfgsb_subspace_point", &subspace_point, py::arg("xbar"), py::arg("du"),
          py::arg("s"), py::arg("y"), py::arg("a"), py::arg("b"), py::arg("rows"), py::arg("r"),
          py::arg("xc"), py::arg("x"), py::arg("g"), py::arg("t"), py::arg("lo"), py::arg("hi"),
          py::arg("theta"),
          "L-BFGS-B: du = free ? -r/theta - (sum a_j s_j + b_j y_j)/theta^2 : 0, xbar = clip(xc +"
          " du); returns g . (xbar - x) (one pass over the history).");
    m.def("lbfgsb_subspace_direct", &subspace_direct, py::arg("xbar"), py::arg("du"),
          py::arg("s"), py::arg("y"), py::arg("a"), py::arg("b"), py::arg("rows"), py::arg("xc"),
          py::arg("x"), py::arg("g"), py::arg("t"), py::arg("lo"), py::arg("hi"),
          py::arg("theta"),
          "L-BFGS-B: du = free ? (sum a_j s_j + b_j y_j) - (g/theta + (xc - x)) : 0, xbar = "
          "clip(xc + du); returns g . (xbar - x) (one pass over the history).");
    m.def("lbfgsb_subspace_direct_d", &subspace_direct_d, py::arg("xbar"), py::arg("du"),
          py::arg("d"), py::arg("s"), py::arg("y"), py::arg("a"), py::arg("b"), py::arg("rows"),
          py::arg("xc"), py::arg("x"), py::arg("g"), py::arg("t"), py::arg("lo"), py::arg("hi"),
          py::arg("theta"),
          "lbfgsb_subspace_direct, also writing d = xbar - x; returns (g . d, the largest t >= 0 "
          "with lo <= x + t d <= hi) from the same pass (the bits of lbfgsb_max_step). xbar = du "
          "= None: only d is written.");
    m.def("lbfgs_copy_dot", &copy_dot, py::arg("out"), py::arg("g"), py::arg("d"),
          "out = g (an exact copy); returns g . d with lbfgs_dot's bits, from the same pass.");
    m.def("lbfgsb_fixed_set", &fixed_set, py::arg("idx"), py::arg("q"), py::arg("t"),
          py::arg("xc"), py::arg("x"), py::arg("g"), py::arg("theta"), py::arg("zero_held"),
          "L-BFGS-B's fixed variables at the Cauchy point: idx[:k] = numpy.flatnonzero(t < 0), "
          "q[:k] = g + theta * (xc - x) there (0 where zero_held and xc == x), in NumPy's bits; "
          "returns k. idx int64 and q hold len(t) entries.");
    m.def("lbfgsb_rows_axpy", &rows_axpy, py::arg("out"), py::arg("s"), py::arg("y"),
          py::arg("a"), py::arg("b"), py::arg("rows"),
          "out = sum_j (a[j] s_j + b[j] y_j) over the first rows rows, in one pass (a, b float64,"
          " accumulated in out's dtype in the order j = 0, 1, ...).");
    m.def("lbfgsb_cauchy_start", &cauchy_start, py::arg("d"), py::arg("t"), py::arg("x"),
          py::arg("g"), py::arg("lo"), py::arg("hi"),
          "L-BFGS-B's Cauchy point start: d = -g or 0 where held at a bound, t = breakpoints "
          "(inf: none, -1: held); returns d.d (float64).");
    m.def("lbfgsb_cauchy_start_pg", &cauchy_start_pg, py::arg("d"), py::arg("t"), py::arg("x"),
          py::arg("g"), py::arg("lo"), py::arg("hi"),
          "lbfgsb_cauchy_start and, from the same pass, lbfgsb_projected_amax(x, g, lo, hi) and "
          "the number of moving variables without a breakpoint: (d.d, pg norm, count).");
    m.def("lbfgsb_projected_amax", &projected_amax, py::arg("x"), py::arg("g"), py::arg("lo"),
          py::arg("hi"), "L-BFGS-B's projected-gradient norm (SciPy's projgr) in one pass.");
    m.def("lbfgsb_step_in_box", &step_in_box, py::arg("out"), py::arg("x"), py::arg("t"),
          py::arg("d"), py::arg("lo"), py::arg("hi"),
          "out = numpy.clip(x + t d, lo, hi) in one pass, bit for bit (t cast to x's dtype); "
          "out may be x itself.");
    m.def("lbfgsb_max_step", &max_step, py::arg("x"), py::arg("d"), py::arg("lo"), py::arg("hi"),
          "The largest t >= 0 with lo <= x + t d <= hi (inf if unlimited), in one pass. In "
          "every lbfgsb_ kernel with lo and hi, either may be None: no bound on that side (the "
          "bits of an array of -inf / +inf, which is then not read).");
    m.def("lbfgsb_cauchy_path", &cauchy_path, py::arg("xc"), py::arg("d"), py::arg("t"),
          py::arg("x"), py::arg("lo"), py::arg("hi"), py::arg("s"), py::arg("y"),
          py::arg("order"), py::arg("theta"), py::arg("mid"), py::arg("p"), py::arg("c"),
          py::arg("f1"), py::arg("f2"), py::arg("bounded"), py::arg("scratch") = py::none(),
          py::arg("idx") = py::none(), py::arg("q") = py::none(), py::arg("g") = py::none(),
          py::arg("zero_held") = false,
          "L-BFGS-B: the generalized Cauchy point's path, breakpoints from a heap; returns "
          "(tsum, p, c). scratch: an int64 array of len(xc) for the heap (else allocated). With "
          "idx (int64, may be scratch), q and g: also lbfgsb_fixed_set(idx, q, t, xc, x, g, "
          "theta, zero_held) after the path, from the path's last pass; returns (tsum, p, c, k).");
    m.def("lbfgs_compact_dots", &compact_dots, py::arg("s"), py::arg("y"), py::arg("g"),
          py::arg("head"), py::arg("count"), py::arg("gram_row") = -1,
          py::arg("partials") = false,
          "The first pass of the compact-form direction over the ring (s, y, head, count): "
          "[s_k . g] + [y_k . g] (k oldest first), and with gram_row = r >= 0 also [s_k . y_r] + "
          "[y_k . y_r], float64 blocked sums; partials=True: the (nblocks, K) block sums.");
    m.def("lbfgs_compact_coefficients", &compact_coefficients, py::arg("dots"), py::arg("sy"),
          py::arg("yy"), py::arg("head"), py::arg("count"),
          "The 2m x 2m algebra of the compact form: (cs, cy, gamma) with -H g = -gamma g + S cs"
          " + Y cy, from dots = [S^T g, Y^T g] and the Gram matrices sy, yy (ring indexing).");
    m.def("lbfgs_compact_combine", &compact_combine, py::arg("out"), py::arg("g"), py::arg("s"),
          py::arg("y"), py::arg("head"), py::arg("count"), py::arg("cs"), py::arg("cy"),
          py::arg("gamma"), py::arg("partials") = false,
          "out = -gamma g + sum_k (cs[k] s_k + cy[k] y_k) in one pass; returns g . out (float64),"
          " or with partials=True its block sums.");
    m.def("lbfgs_compact_direction", &compact_direction, py::arg("out"), py::arg("grad"),
          py::arg("s"), py::arg("y"), py::arg("sy"), py::arg("yy"), py::arg("head"),
          py::arg("count"), py::arg("gram_row") = -1,
          "out = -H grad through the compact form (two passes over the history; with gram_row"
          " the new Gram column is computed in the first and written into sy, yy). Returns "
          "grad . out.");
    m.def("lbfgs_amax", &amax, py::arg("a"), "max |a| as a float (NaN if any element is NaN).");
}
