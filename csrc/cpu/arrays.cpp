// csrc/cpu/arrays.cpp -- argument checks of the multi-tensor kernels (see arrays.h).
#include "arrays.h"

#include "tensors.h"

#include <algorithm>
#include <sstream>

namespace fusedopt {
namespace cpu {
namespace {

constexpr int kNpyFloat = 11;    // NPY_FLOAT
constexpr int kNpyDouble = 12;   // NPY_DOUBLE
constexpr int kNpyHalf = 23;     // NPY_HALF
constexpr int kNpyUserDef = 256; // NPY_USERDEF: ml_dtypes' bfloat16 gets a number from here on
constexpr int kCContiguous = 0x0001;
constexpr int kAligned = 0x0100;
constexpr int kWriteable = 0x0400;

[[noreturn]] void type_error(const std::string& msg) { throw py::type_error(msg); }
[[noreturn]] void value_error(const std::string& msg) { throw py::value_error(msg); }

std::string item_name(const char* list, size_t i) {
    return std::string(list) + "[" + std::to_string(i) + "]";
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

// The type number of ml_dtypes' bfloat16, once ml_dtypes is imported (-1 before). An array of
// that dtype cannot exist before, so the module is looked up, never imported, here.
int bfloat16_num() {
    static int num = -1;
    if (num < 0) {
        PyObject* mods = PyImport_GetModuleDict();
        PyObject* ml = PyDict_GetItemString(mods, "ml_dtypes");  // borrowed
        if (ml) num = py::dtype::from_args(py::handle(ml).attr("bfloat16")).num();
    }
    return num;
}

// The DType of a NumPy type number, or -1.
int dtype_of(int type_num) {
    switch (type_num) {
        case kNpyFloat: return static_cast<int>(DType::kFloat32);
        case kNpyDouble: return static_cast<int>(DType::kFloat64);
        case kNpyHalf: return static_cast<int>(DType::kFloat16);
        default:
            if (type_num >= kNpyUserDef && type_num == bfloat16_num())
                return static_cast<int>(DType::kBFloat16);
            return -1;
    }
}

}  // namespace

const char* dtype_name(DType d) {
    switch (d) {
        case DType::kFloat32: return "float32";
        case DType::kFloat64: return "float64";
        case DType::kFloat16: return "float16";
        case DType::kBFloat16: return "bfloat16";
    }
    return "?";
}

std::string Array::shape() const {
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

std::string Array::name() const {
    return index < 0 ? std::string(list) : item_name(list, static_cast<size_t>(index));
}

bool Array::same_shape(const Array& o) const {
    bool same = a->nd == o.a->nd;
    for (int d = 0; same && d < a->nd; ++d) same = a->dimensions[d] == o.a->dimensions[d];
    return same;
}

Array check_array(PyObject* o, const char* list, int64_t index, bool written,
                  const Array* like, bool half_ok) {
    Array arr{list, index, nullptr, DType::kFloat32, 0};
    if (!py::detail::npy_api::get().PyArray_Check_(o))
        type_error(arr.name() + " must be a numpy.ndarray, got " + type_name(o));
    arr.a = py::detail::array_proxy(o);
    const auto* descr = py::detail::array_descriptor_proxy(arr.a->descr);
    const int d = descr->byteorder == '>' ? -1 : dtype_of(descr->type_num);
    arr.dtype = static_cast<DType>(d < 0 ? 0 : d);
    const bool ok = d >= 0 && (half_ok || like || !is_16bit(arr.dtype));
    if (!ok || (like && arr.dtype != like->dtype)) {
        const std::string got = py::str(py::handle(arr.a->descr));
        if (like) {
            const int of = dtype_of(py::detail::array_descriptor_proxy(like->a->descr)->type_num);
            if (of != static_cast<int>(like->dtype))  // a state (or master) of a 16-bit param
                type_error(arr.name() + " has dtype " + got + "; expected " +
                           dtype_name(like->dtype) + ", the math type of " +
                           dtype_name(static_cast<DType>(of)) + " " + like->name());
            type_error(arr.name() + " has dtype " + got + "; expected " + dtype_name(like->dtype) +
                       " like " + like->name());
        }
        type_error(arr.name() + " has dtype " + got + "; expected float32 or float64" +
                   (half_ok ? ", float16 or bfloat16" : "") + " (native byte order)");
    }
    if (!(arr.a->flags & kCContiguous)) value_error(arr.name() + " must be C-contiguous");
    if (!(arr.a->flags & kAligned)) value_error(arr.name() + " must be aligned to its dtype");
    if (written && !(arr.a->flags & kWriteable))
        value_error(arr.name() + " is read-only; it is updated in place");
    arr.size = 1;
    for (int d = 0; d < arr.a->nd; ++d) arr.size *= arr.a->dimensions[d];
    return arr;
}

namespace {

struct Span {
    uintptr_t lo, hi;
    bool written;
    int list;
    size_t index;
};

}  // namespace

void collect(const ListArgs& lists, Batches& out, bool half_ok) {
    if (collect_plan(lists, out)) return;  // a TensorPlan in place of the lists (tensors.h)
    const ListArg* args = lists.arg;
    const size_t nargs = static_cast<size_t>(lists.n);
    for (auto& v : out.segs) v.clear();
    out.release();
    out.master = false;
    const auto& api = py::detail::npy_api::get();

    PyObject** items[kMaxLists];
    Py_ssize_t n = 0;
    for (size_t k = 0; k < nargs; ++k) {
        Py_ssize_t nk = 0;
        items[k] = items_of(args[k], nk);
        out.hold(args[k].list.ptr());
        if (args[k].slot == kMaster) out.master = true;
        if (k == 0) {
            n = nk;
        } else if (nk != n) {
            value_error(std::string(args[k].name) + " has " + std::to_string(nk) +
                        " arrays but " + args[0].name + " has " + std::to_string(n));
        }
    }

    thread_local std::vector<Span> spans;
    spans.clear();
    int64_t offset[kDTypes] = {0, 0, 0, 0};
    for (Py_ssize_t i = 0; i < n; ++i) {
        Array first{};
        Array math{};  // what a state must be: float32 for 16-bit params, else like the param
        Segment seg{nullptr, nullptr, {nullptr, nullptr, nullptr}, nullptr, 0, 0};
        for (size_t k = 0; k < nargs; ++k) {
            const ListArg& a = args[k];
            PyObject* o = items[k][i];
            if (k == 0 && !api.PyArray_Check_(o)) {
                type_error(item_name(a.name, i) + " must be a numpy.ndarray, got " + type_name(o) +
                           " (CuPy arrays need every argument on the GPU)");
            }
            if (a.slot == kMaster && !is_16bit(first.dtype))
                type_error(std::string(a.name) + ": float32 master weights belong to float16 or "
                           "bfloat16 params; " + first.name() + " has dtype " +
                           dtype_name(first.dtype));
            const bool state = a.slot >= kState0;  // states and master weights
            const Array arr = check_array(o, a.name, i, a.written,
                                          k == 0 ? nullptr : state ? &math : &first, half_ok);
            out.hold(o);
            if (k == 0) {
                first = arr;
                math = arr;
                if (is_16bit(arr.dtype)) math.dtype = DType::kFloat32;
            } else if (!arr.same_shape(first)) {
                value_error(arr.name() + ": shape " + arr.shape() + " does not match " +
                            first.name() + " " + first.shape());
            }
            const int64_t size = arr.size;
            if (size > 0) {
                spans.push_back({arr.lo(), arr.hi(), a.written, static_cast<int>(k),
                                 static_cast<size_t>(i)});
            }
            seg.set(a.slot, arr.data());
            if (a.slot == kParam) seg.size = size;
        }
        const int dtype = static_cast<int>(first.dtype);
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

namespace {
// One Batches per nesting depth of this thread: a call made while another call of this thread is
// collecting (a callback from check_array's __array__-free checks cannot happen, but a kernel
// call from a destructor run by Py_DECREF could) gets a fresh one instead of clobbering it.
thread_local Batches t_batches;
thread_local bool t_busy = false;
}  // namespace

CallBatches::CallBatches() : b_(t_busy ? new Batches() : &t_batches), outer_(!t_busy) {
    t_busy = true;
}

CallBatches::~CallBatches() {
    b_->release();
    if (outer_) {
        t_busy = false;
    } else {
        delete b_;
    }
}

}  // namespace cpu
}  // namespace fusedopt
