// csrc/cpu/lbfgs_bindings.cpp -- L-BFGS kernels of fusedopt._core: argument checks and the GIL
// release; the loops are in lbfgs.cpp.
//
// Every argument is checked before anything is written: a wrong type, dtype, shape, a
// non-contiguous, unaligned or read-only output, an output that shares memory with an input, or
// head/count out of range raise TypeError/ValueError naming the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

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

template <typename Fn>
auto by_dtype(const Array& a, Fn&& fn) {
    if (a.dtype == DType::kFloat32) return fn(float{});
    return fn(double{});
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
    if (head < 0 || head >= m)
        throw py::value_error("head must be in [0, " + std::to_string(m) + "), got " +
                              std::to_string(head));
    if (count < 0 || count > m)
        throw py::value_error("count must be in [0, " + std::to_string(m) + "], got " +
                              std::to_string(count));
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

}  // namespace

void register_lbfgs(py::module_& m) {
    m.def("lbfgs_direction", &direction, py::arg("out"), py::arg("grad"), py::arg("s"),
          py::arg("y"), py::arg("rho"), py::arg("head"), py::arg("count"),
          "out = -H grad by the L-BFGS two-loop recursion over the ring buffer (s, y, rho, head,"
          " count) of fusedopt.lbfgs.History; fused passes, same bits for any thread count."
          " Returns grad.out (float64).");
    m.def("lbfgs_sub_dots", &sub_dots, py::arg("out"), py::arg("a"), py::arg("b"), py::arg("c"),
          "out = a - b (out may be a or b); returns (c.out, out.out) in float64.");
    m.def("lbfgs_dot", &dot, py::arg("a"), py::arg("b"),
          "sum(a * b) in float64, fixed blocks in a fixed order (same bits for any thread count).");
    m.def("lbfgs_axpby", &axpby, py::arg("out"), py::arg("a"), py::arg("x"),
          py::arg("b") = 0.0, py::arg("y") = py::none(),
          "out = a * x + b * y, or out = a * x without y (out may be x or y itself).");
    m.attr("lbfgs_parallel_min") = lb::parallel_min();
    m.def("lbfgs_amax", &amax, py::arg("a"), "max |a| as a float (NaN if any element is NaN).");
}
