// csrc/cpu/arrays.cpp -- argument checks of the multi-tensor kernels (see arrays.h).
#include "arrays.h"

#include <algorithm>
#include <sstream>

namespace fusedopt {
namespace cpu {
namespace {

constexpr int kNpyFloat = 11;   // NPY_FLOAT
constexpr int kNpyDouble = 12;  // NPY_DOUBLE
constexpr int kCContiguous = 0x0001;
constexpr int kAligned = 0x0100;
constexpr int kWriteable = 0x0400;

[[noreturn]] void type_error(const std::string& msg) { throw py::type_error(msg); }
[[noreturn]] void value_error(const std::string& msg) { throw py::value_error(msg); }

std::string item_name(const char* list, size_t i) {
    return std::string(list) + "[" + std::to_string(i) + "]";
}

std::string shape_str(const py::detail::PyArray_Proxy* a) {
    std::ostringstream os;
    os << "(";
    for (int d = 0; d < a->nd; ++d) {
        os << a->dimensions[d];
        if (a->nd == 1 || d + 1 < a->nd) os << ",";
        if (d + 1 < a->nd) os << " ";
    }
    os << ")";
    return os.str();
}

std::string type_name(py::handle h) {
    return std::string(Py_TYPE(h.ptr())->tp_name);
}

// Items of a list or tuple without copying.
PyObject** items_of(const ListArg& a, Py_ssize_t& n) {
    PyObject* o = a.list.ptr();
    if (PyList_Check(o)) {
        n = PyList_GET_SIZE(o);
        return reinterpret_cast<PyListObject*>(o)->ob_item;
    }
    if (PyTuple_Check(o)) {
        n = PyTuple_GET_SIZE(o);
        return reinterpret_cast<PyTupleObject*>(o)->ob_item;
    }
    type_error(std::string(a.name) + " must be a list or tuple of numpy arrays, got " +
               type_name(a.list));
}

struct Span {
    uintptr_t lo, hi;
    bool written;
    int list;
    size_t index;
};

}  // namespace

void collect(const ListArgs& lists, Batches& out) {
    const ListArg* args = lists.arg;
    const size_t nargs = static_cast<size_t>(lists.n);
    out.segs[0].clear();
    out.segs[1].clear();
    const auto& api = py::detail::npy_api::get();

    PyObject** items[kMaxLists];
    Py_ssize_t n = 0;
    for (size_t k = 0; k < nargs; ++k) {
        Py_ssize_t nk = 0;
        items[k] = items_of(args[k], nk);
        if (k == 0) {
            n = nk;
        } else if (nk != n) {
            value_error(std::string(args[k].name) + " has " + std::to_string(nk) +
                        " arrays but " + args[0].name + " has " + std::to_string(n));
        }
    }

    thread_local std::vector<Span> spans;
    spans.clear();
    int64_t offset[2] = {0, 0};
    for (Py_ssize_t i = 0; i < n; ++i) {
        const py::detail::PyArray_Proxy* p0 = nullptr;
        int dtype = 0;
        Segment seg{nullptr, nullptr, {nullptr, nullptr, nullptr}, 0, 0};
        for (size_t k = 0; k < nargs; ++k) {
            PyObject* o = items[k][i];
            const ListArg& a = args[k];
            if (!api.PyArray_Check_(o)) {
                type_error(item_name(a.name, i) + " must be a numpy.ndarray, got " +
                           type_name(o) + (k ? "" : " (CuPy arrays need every argument on the GPU)"));
            }
            const auto* arr = py::detail::array_proxy(o);
            const auto* descr = py::detail::array_descriptor_proxy(arr->descr);
            if (k == 0) {
                if ((descr->type_num != kNpyFloat && descr->type_num != kNpyDouble) ||
                    descr->byteorder == '>') {
                    type_error(item_name(a.name, i) + " has dtype " +
                               std::string(py::str(py::handle(arr->descr))) +
                               "; expected float32 or float64 (native byte order)");
                }
                p0 = arr;
                dtype = descr->type_num == kNpyFloat ? 0 : 1;
            } else {
                if (descr->type_num != (dtype == 0 ? kNpyFloat : kNpyDouble) ||
                    descr->byteorder == '>') {
                    type_error(item_name(a.name, i) + " has dtype " +
                               std::string(py::str(py::handle(arr->descr))) + " but " +
                               item_name(args[0].name, i) + " has dtype " +
                               (dtype == 0 ? "float32" : "float64"));
                }
                bool same = arr->nd == p0->nd;
                for (int d = 0; same && d < arr->nd; ++d)
                    same = arr->dimensions[d] == p0->dimensions[d];
                if (!same) {
                    value_error(item_name(a.name, i) + ": shape " + shape_str(arr) +
                                " does not match " + item_name(args[0].name, i) + " " +
                                shape_str(p0));
                }
            }
            if (!(arr->flags & kCContiguous)) {
                value_error(item_name(a.name, i) + " must be C-contiguous");
            }
            if (!(arr->flags & kAligned)) {
                value_error(item_name(a.name, i) + " must be aligned to its dtype");
            }
            if (a.written && !(arr->flags & kWriteable)) {
                value_error(item_name(a.name, i) + " is read-only; it is updated in place");
            }
            int64_t size = 1;
            for (int d = 0; d < arr->nd; ++d) size *= arr->dimensions[d];
            if (size > 0) {
                const uintptr_t lo = reinterpret_cast<uintptr_t>(arr->data);
                const uintptr_t hi = lo + static_cast<uintptr_t>(size) * (dtype == 0 ? 4u : 8u);
                spans.push_back({lo, hi, a.written, static_cast<int>(k), static_cast<size_t>(i)});
            }
            if (a.slot == -1) {
                seg.param = arr->data;
                seg.size = size;
            } else if (a.slot == -2) {
                seg.grad = arr->data;
            } else {
                seg.state[a.slot] = arr->data;
            }
        }
        seg.offset = offset[dtype];
        offset[dtype] += seg.size;
        if (seg.size > 0) out.segs[dtype].push_back(seg);
    }

    // No array that is written may overlap any other array of the call.
    std::sort(spans.begin(), spans.end(),
              [](const Span& x, const Span& y) { return x.lo < y.lo; });
    for (size_t s = 0; s < spans.size(); ++s) {
        for (size_t t = s + 1; t < spans.size() && spans[t].lo < spans[s].hi; ++t) {
            if (spans[s].written || spans[t].written) {
                const Span& w = spans[s].written ? spans[s] : spans[t];
                const Span& o = spans[s].written ? spans[t] : spans[s];
                value_error(item_name(args[w.list].name, w.index) + " shares memory with " +
                            item_name(args[o.list].name, o.index) +
                            "; arrays that are updated in place must not alias");
            }
        }
    }
}

}  // namespace cpu
}  // namespace fusedopt
