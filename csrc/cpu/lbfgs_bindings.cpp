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

#include "lbfgs.h"

namespace py = pybind11;
namespace lb = fusedopt::cpu::lbfgs;

namespace {

using npy = py::detail::npy_api;
constexpr int kNpyFloat = npy::NPY_FLOAT_;
constexpr int kNpyDouble = npy::NPY_DOUBLE_;

// A checked array argument.
struct Arg {
    const char* name;
    const py::detail::PyArray_Proxy* a;
    int type_num;  // kNpyFloat or kNpyDouble
    int64_t size;

    int ndim() const { return a->nd; }
    int64_t dim(int d) const { return static_cast<int64_t>(a->dimensions[d]); }
    void* data() const { return a->data; }
    uintptr_t lo() const { return reinterpret_cast<uintptr_t>(a->data); }
    uintptr_t hi() const {
        return lo() + static_cast<uintptr_t>(size) * (type_num == kNpyFloat ? 4 : 8);
    }
    std::string shape() const {
        std::string s = "(";
        for (int d = 0; d < a->nd; ++d)
            s += std::to_string(dim(d)) + (a->nd == 1 ? "," : (d + 1 < a->nd ? ", " : ""));
        return s + ")";
    }
};

const char* dtype_name(int type_num) { return type_num == kNpyFloat ? "float32" : "float64"; }

// A float32/float64 C-contiguous aligned ndarray (writeable when `written`); `want` >= 0 asks for
// that dtype, as the dtype of `like` names it.
Arg array_arg(py::handle h, const char* name, bool written, int want = -1, const char* like = "") {
    const auto& api = npy::get();
    if (!api.PyArray_Check_(h.ptr()))
        throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " +
                             Py_TYPE(h.ptr())->tp_name);
    const auto* a = py::detail::array_proxy(h.ptr());
    const auto* d = py::detail::array_descriptor_proxy(a->descr);
    const int t = d->type_num;
    if ((t != kNpyFloat && t != kNpyDouble) || d->byteorder == '>' ||
        (want >= 0 && t != want)) {
        const std::string got = py::str(py::handle(a->descr));
        if (want >= 0)
            throw py::type_error(std::string(name) + " has dtype " + got + "; expected " +
                                 dtype_name(want) + (*like ? std::string(" like ") + like : ""));
        throw py::type_error(std::string(name) + " has dtype " + got +
                             "; expected float32 or float64 (native byte order)");
    }
    if (!(a->flags & npy::NPY_ARRAY_C_CONTIGUOUS_))
        throw py::value_error(std::string(name) + " must be C-contiguous");
    if (!(a->flags & npy::NPY_ARRAY_ALIGNED_))
        throw py::value_error(std::string(name) + " must be aligned to its dtype");
    if (written && !(a->flags & npy::NPY_ARRAY_WRITEABLE_))
        throw py::value_error(std::string(name) + " is read-only; it is written in place");
    int64_t size = 1;
    for (int k = 0; k < a->nd; ++k) size *= static_cast<int64_t>(a->dimensions[k]);
    return Arg{name, a, t, size};
}

void same_shape(const Arg& x, const Arg& ref) {
    bool same = x.ndim() == ref.ndim();
    for (int d = 0; same && d < x.ndim(); ++d) same = x.dim(d) == ref.dim(d);
    if (!same)
        throw py::value_error(std::string(x.name) + ": shape " + x.shape() + " does not match " +
                              ref.name + " " + ref.shape());
}

// `out` may be `in` itself only when `exact_ok` (elementwise in place); never a partial overlap.
void no_overlap(const Arg& out, const Arg& in, bool exact_ok = false) {
    if (out.size == 0 || in.size == 0) return;
    if (exact_ok && out.lo() == in.lo() && out.hi() == in.hi()) return;
    if (out.lo() < in.hi() && in.lo() < out.hi())
        throw py::value_error(std::string(out.name) + " shares memory with " + in.name +
                              "; the output must not alias an input");
}

template <typename Fn>
auto by_dtype(const Arg& a, Fn&& fn) {
    if (a.type_num == kNpyFloat) return fn(float{});
    return fn(double{});
}

double direction(py::handle out_h, py::handle grad_h, py::handle s_h, py::handle y_h,
                 py::handle rho_h, int64_t head, int64_t count) {
    const Arg out = array_arg(out_h, "out", true);
    const Arg grad = array_arg(grad_h, "grad", false, out.type_num, "out");
    same_shape(grad, out);
    const Arg s = array_arg(s_h, "s", false, out.type_num, "out");
    const Arg y = array_arg(y_h, "y", false, out.type_num, "out");
    if (s.ndim() != 2 || s.dim(1) != out.size || s.dim(0) < 1)
        throw py::value_error("s must have shape (m, " + std::to_string(out.size) +
                              ") with m >= 1 (n = out.size), got " + s.shape());
    same_shape(y, s);
    const int64_t m = s.dim(0);
    const Arg rho = array_arg(rho_h, "rho", false, kNpyDouble);
    if (rho.ndim() != 1 || rho.dim(0) != m)
        throw py::value_error("rho must have shape (" + std::to_string(m) + ",) like s rows, got " +
                              rho.shape());
    if (head < 0 || head >= m)
        throw py::value_error("head must be in [0, " + std::to_string(m) + "), got " +
                              std::to_string(head));
    if (count < 0 || count > m)
        throw py::value_error("count must be in [0, " + std::to_string(m) + "], got " +
                              std::to_string(count));
    for (const Arg* in : {&grad, &s, &y, &rho}) no_overlap(out, *in);
    return by_dtype(out, [&](auto zero) {
        using T = decltype(zero);
        const lb::Ring<T> ring{static_cast<const T*>(s.data()), static_cast<const T*>(y.data()),
                               static_cast<const double*>(rho.data()), m, out.size, head, count};
        py::gil_scoped_release nogil;
        return lb::direction(static_cast<T*>(out.data()), static_cast<const T*>(grad.data()),
                             ring);
    });
}

// The two arrays of a binary helper: any shapes of the same size and dtype.
void same_size(const Arg& x, const Arg& ref) {
    if (x.size != ref.size)
        throw py::value_error(std::string(x.name) + " has " + std::to_string(x.size) +
                              " elements but " + ref.name + " has " + std::to_string(ref.size));
}

double dot(py::handle a_h, py::handle b_h) {
    const Arg a = array_arg(a_h, "a", false);
    const Arg b = array_arg(b_h, "b", false, a.type_num, "a");
    same_size(b, a);
    return by_dtype(a, [&](auto zero) {
        using T = decltype(zero);
        py::gil_scoped_release nogil;
        return lb::dot(static_cast<const T*>(a.data()), static_cast<const T*>(b.data()), a.size);
    });
}

void axpby(py::handle out_h, double a, py::handle x_h, double b, py::handle y_h) {
    const Arg out = array_arg(out_h, "out", true);
    const Arg x = array_arg(x_h, "x", false, out.type_num, "out");
    same_size(x, out);
    no_overlap(out, x, true);
    const bool has_y = !y_h.is_none();
    const Arg y = has_y ? array_arg(y_h, "y", false, out.type_num, "out") : x;
    same_size(y, out);
    no_overlap(out, y, true);
    by_dtype(out, [&](auto zero) {
        using T = decltype(zero);
        py::gil_scoped_release nogil;
        lb::axpby(static_cast<T*>(out.data()), a, static_cast<const T*>(x.data()), b,
                  has_y ? static_cast<const T*>(y.data()) : nullptr, out.size);
    });
}

py::tuple sub_dots(py::handle out_h, py::handle a_h, py::handle b_h, py::handle c_h) {
    const Arg out = array_arg(out_h, "out", true);
    const Arg a = array_arg(a_h, "a", false, out.type_num, "out");
    const Arg b = array_arg(b_h, "b", false, out.type_num, "out");
    const Arg c = array_arg(c_h, "c", false, out.type_num, "out");
    for (const Arg* x : {&a, &b, &c}) same_size(*x, out);
    no_overlap(out, a, true);
    no_overlap(out, b, true);
    no_overlap(out, c);
    double dots[2] = {0.0, 0.0};
    by_dtype(out, [&](auto zero) {
        using T = decltype(zero);
        py::gil_scoped_release nogil;
        lb::sub_dots(static_cast<T*>(out.data()), static_cast<const T*>(a.data()),
                     static_cast<const T*>(b.data()), static_cast<const T*>(c.data()), out.size,
                     dots);
    });
    return py::make_tuple(dots[0], dots[1]);
}

double amax(py::handle a_h) {
    const Arg a = array_arg(a_h, "a", false);
    return by_dtype(a, [&](auto zero) {
        using T = decltype(zero);
        py::gil_scoped_release nogil;
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
