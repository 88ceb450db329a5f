// csrc/cpu/tensor_bindings.cpp -- fusedopt._core.TensorPlan: a multi-tensor call whose params,
// states and master weights are checked once, from the arrays themselves (see tensors.h).
#include <dlfcn.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "parallel.h"
#include "tensors.h"

namespace py = pybind11;

namespace {
std::string type_name(py::handle h) { return std::string(Py_TYPE(h.ptr())->tp_name); }
}  // namespace

namespace fusedopt {
namespace cpu {
namespace {

const char* const kSlotNames[kSlots] = {"params", "grads", "state0", "state1", "state2",
                                        "master_params"};

std::string item(int slot, size_t i) {
    return std::string(kSlotNames[slot]) + "[" + std::to_string(i) + "]";
}


// The bytes of one element of `slot` for a tensor of dtype d: params and grads the dtype's,
// states and master weights its math type's (float32 for 16-bit params).
int64_t slot_itemsize(int slot, DType d) {
    if (slot == kParam || slot == kGrad) return itemsize(d);
    return is_16bit(d) ? 4 : itemsize(d);
}

struct Span {
    uintptr_t lo, hi;
    int slot;
    size_t index;
};

// What set_grads needs of torch, looked up in sys.modules when the first torch tensor is seen
// (a grad can only be a torch tensor once torch is imported; nothing here imports it): the
// exact types accepted, torch.strided, and the dtype objects in DType order. Held for the life
// of the process (never released: torch outlives every plan).
struct Torch {
    PyObject* tensor = nullptr;     // torch.Tensor
    PyObject* parameter = nullptr;  // torch.nn.Parameter
    PyObject* strided = nullptr;
    PyObject* dtypes[kDTypes] = {nullptr, nullptr, nullptr, nullptr};
    PyObject *s_layout, *s_is_cpu, *s_dtype, *s_shape, *s_is_contiguous, *s_data_ptr;
    PyObject *s_untyped_storage, *s_nbytes, *s_storage_offset;
    const struct Shim* shim = nullptr;  // torch's C shim, where this torch has one (else null)
};

// torch's stable C shim (torch/csrc/inductor/aoti_torch/c/shim.h: extern "C" functions of
// libtorch_cpu, declared here by hand, nothing included from torch) and the Python function that
// hands out one new at::Tensor handle per tensor of a list (torch._C._aoti). With them set_grads
// reads each grad's layout, device, dtype, sizes, contiguity, pointer and storage in C, instead of
// nine Python attribute look-ups and method calls per grad; the handles are deleted before
// set_grads returns. Any of them missing (another torch, another platform): the look-ups.
struct Shim {
    using Handle = void*;
    int32_t (*get_data_ptr)(Handle, void**);
    int32_t (*get_storage_size)(Handle, int64_t*);  // bytes
    int32_t (*get_dim)(Handle, int64_t*);
    int32_t (*get_sizes)(Handle, int64_t**);
    int32_t (*get_dtype)(Handle, int32_t*);
    int32_t (*get_device_type)(Handle, int32_t*);
    int32_t (*get_layout)(Handle, int32_t*);
    int32_t (*get_storage_offset)(Handle, int64_t*);
    int32_t (*is_contiguous)(Handle, bool*);
    int32_t (*delete_tensor)(Handle);
    int32_t strided, cpu;
    int32_t dtypes[kDTypes];
    PyObject* handles;  // torch._C._aoti.unsafe_alloc_void_ptrs_from_tensors
};

// How many grads set_grads has read through the shim (tests: that it serves), and whether it
// is used (benchmarks turn it off to compare).
size_t shim_grads = 0;
bool shim_used = true;

// The shim of the torch module `m`, or null (no error set).
const Shim* load_shim(const py::module_& m) {
    try {
        const py::object handles = py::module_::import("torch._C._aoti")
                                       .attr("unsafe_alloc_void_ptrs_from_tensors");
        const std::string dir = py::str(m.attr("__file__")).cast<std::string>();
        const std::string lib = dir.substr(0, dir.rfind('/')) + "/lib/libtorch_cpu.so";
        void* so = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
        if (!so) return nullptr;
        auto sym = [so](const char* name) {
            void* f = dlsym(so, name);
            if (!f) throw std::runtime_error(name);
            return f;
        };
        auto* s = new Shim();
        auto fn = [&](auto& field, const char* name) {
            field = reinterpret_cast<std::remove_reference_t<decltype(field)>>(sym(name));
        };
        fn(s->get_data_ptr, "aoti_torch_get_data_ptr");
        fn(s->get_storage_size, "aoti_torch_get_storage_size");
        fn(s->get_dim, "aoti_torch_get_dim");
        fn(s->get_sizes, "aoti_torch_get_sizes");
        fn(s->get_dtype, "aoti_torch_get_dtype");
        fn(s->get_device_type, "aoti_torch_get_device_type");
        fn(s->get_layout, "aoti_torch_get_layout");
        fn(s->get_storage_offset, "aoti_torch_get_storage_offset");
        fn(s->is_contiguous, "aoti_torch_is_contiguous");
        fn(s->delete_tensor, "aoti_torch_delete_tensor_object");
        int32_t (*code)() = nullptr;
        fn(code, "aoti_torch_layout_strided");
        s->strided = code();
        fn(code, "aoti_torch_device_type_cpu");
        s->cpu = code();
        const char* dtypes[kDTypes] = {"aoti_torch_dtype_float32", "aoti_torch_dtype_float64",
                                       "aoti_torch_dtype_float16", "aoti_torch_dtype_bfloat16"};
        for (int d = 0; d < kDTypes; ++d) {
            fn(code, dtypes[d]);
            s->dtypes[d] = code();
        }
        s->handles = handles.inc_ref().ptr();
        return s;
    } catch (py::error_already_set&) {
        PyErr_Clear();
    } catch (std::runtime_error&) {
    }
    return nullptr;
}

const Torch* torch_of(PyObject* o) {
    static Torch* t = nullptr;
    if (t) return t;
    PyObject* modules = PyImport_GetModuleDict();
    PyObject* torch = PyDict_GetItemString(modules, "torch");  // borrowed
    if (!torch) return nullptr;
    // Only a fully imported torch (the object's type comes from it).
    py::module_ m = py::reinterpret_borrow<py::module_>(torch);
    if (!py::hasattr(m, "Tensor") || !py::hasattr(m, "nn")) return nullptr;
    (void)o;
    auto* fresh = new Torch();
    auto keep = [](py::object x) { return x.release().ptr(); };
    fresh->tensor = keep(m.attr("Tensor"));
    fresh->parameter = keep(m.attr("nn").attr("Parameter"));
    fresh->strided = keep(m.attr("strided"));
    const char* names[kDTypes] = {"float32", "float64", "float16", "bfloat16"};
    for (int d = 0; d < kDTypes; ++d) fresh->dtypes[d] = keep(m.attr(names[d]));
    fresh->s_layout = PyUnicode_InternFromString("layout");
    fresh->s_is_cpu = PyUnicode_InternFromString("is_cpu");
    fresh->s_dtype = PyUnicode_InternFromString("dtype");
    fresh->s_shape = PyUnicode_InternFromString("shape");
    fresh->s_is_contiguous = PyUnicode_InternFromString("is_contiguous");
    fresh->s_data_ptr = PyUnicode_InternFromString("data_ptr");
    fresh->s_untyped_storage = PyUnicode_InternFromString("untyped_storage");
    fresh->s_nbytes = PyUnicode_InternFromString("nbytes");
    fresh->s_storage_offset = PyUnicode_InternFromString("storage_offset");
    fresh->shim = load_shim(m);
    t = fresh;
    return t;
}

// getattr / a method call without arguments, as new references (errors propagate).
py::object attr(PyObject* o, PyObject* name) {
    PyObject* r = PyObject_GetAttr(o, name);
    if (!r) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(r);
}

py::object call0(PyObject* o, PyObject* name) {
    PyObject* r = PyObject_CallMethodNoArgs(o, name);
    if (!r) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(r);
}

}  // namespace

class TensorPlan {
  public:
    // slots: params, grads, state0, state1, state2, master_params; each a list (or tuple) of
    // NumPy arrays or None. Checked by collect() as any kernel call's lists are (dtypes, shapes,
    // C-contiguous, aligned, writeable, no written array overlapping another); the plan then
    // holds a reference to every array.
    explicit TensorPlan(const py::sequence& slots) {
        if (py::len(slots) != static_cast<size_t>(kSlots))
            throw py::value_error("slots must have " + std::to_string(kSlots) +
                                  " items (params, grads, state0-2, master_params), each a list of "
                                  "arrays or None");
        py::object lists[kSlots];
        for (int s = 0; s < kSlots; ++s) lists[s] = slots[s];
        if (!lists[kGrad].is_none())
            throw py::value_error("slots[1] (grads) must be None: grads are given at each "
                                  "step with set_grads()");
        if (lists[kParam].is_none()) throw py::value_error("slots[0] (params) is required");
        ListArgs args{};
        for (int s = 0; s < kSlots; ++s) {
            if (lists[s].is_none()) continue;
            if (!PyList_Check(lists[s].ptr()) && !PyTuple_Check(lists[s].ptr()))
                throw py::type_error(std::string(kSlotNames[s]) + " must be a list or tuple of "
                                     "numpy arrays, got " + type_name(lists[s]));
            args.add({kSlotNames[s], lists[s], true, static_cast<Slot>(s)});
            mask_ |= 1u << s;
        }
        collect(args, arrays_, /*half_ok=*/true);  // every check; holds the arrays
        mask_ |= 1u << kGrad;
        // Per tensor: dtype, size and shape (for the grads' checks), its Segment.
        py::sequence params = lists[kParam];
        const size_t n = static_cast<size_t>(py::len(params));
        dtype_.resize(n);
        size_.resize(n);
        shape_.resize(n);
        dims_.resize(n);
        place_.assign(n, -1);
        size_t next[kDTypes] = {0, 0, 0, 0};
        for (size_t i = 0; i < n; ++i) {
            py::object p = params[i];
            const Array a = check_array(p.ptr(), "params", static_cast<int64_t>(i), true,
                                        nullptr, true);
            dtype_[i] = a.dtype;
            size_[i] = a.size;
            shape_[i] = p.attr("shape");
            dims_[i].assign(a.a->dimensions, a.a->dimensions + a.ndim());
            if (a.size == 0) continue;
            const int d = static_cast<int>(a.dtype);
            place_[i] = static_cast<int64_t>(next[d]++) * kDTypes + d;
        }
        for (int d = 0; d < kDTypes; ++d) {
            segs_[d] = arrays_.segs[d];
            for (Segment& seg : segs_[d]) seg.grad = nullptr;
        }
        for (size_t i = 0; i < n; ++i) {
            if (place_[i] < 0) continue;
            const Segment& seg = segs_[place_[i] % kDTypes][static_cast<size_t>(place_[i] / kDTypes)];
            const void* at[kSlots] = {seg.param, nullptr, seg.state[0], seg.state[1],
                                      seg.state[2], seg.master};
            for (int s = 0; s < kSlots; ++s) {
                if (!at[s]) continue;
                const uintptr_t lo = reinterpret_cast<uintptr_t>(at[s]);
                written_.push_back({lo, lo + uintptr_t(size_[i] * slot_itemsize(s, dtype_[i])),
                                    s, i});
            }
        }
        std::sort(written_.begin(), written_.end(),
                  [](const Span& x, const Span& y) { return x.lo < y.lo; });
    }

    ~TensorPlan() { arrays_.release(); }  // (pybind11 destroys it with the GIL held)

    // The grads of the next kernel call, one per tensor: NumPy arrays, or torch CPU tensors
    // (exactly torch.Tensor or torch.nn.Parameter), each checked here: the param's dtype and
    // shape, contiguous (strided layout, on the CPU), aligned, overlapping no written array.
    // The pointers are read from the objects themselves; the list is held until that call ends.
    // None forgets the grads of an earlier call.
    void set_grads(py::handle grads) {
        grads_set_ = false;
        grads_owner_ = py::none();
        if (grads.is_none()) return;  // (forgets the grads of an earlier set_grads)
        PyObject* o = grads.ptr();
        if (!PyList_Check(o) && !PyTuple_Check(o))
            throw py::type_error("grads must be a list or tuple of arrays or tensors, got " +
                                 type_name(grads));
        const py::object held = py::reinterpret_borrow<py::object>(grads);
        const bool list = PyList_Check(o);
        const size_t n = size_.size();
        const size_t got = static_cast<size_t>(list ? PyList_GET_SIZE(o) : PyTuple_GET_SIZE(o));
        if (got != n)
            throw py::value_error("grads has " + std::to_string(got) +
                                  " items but the plan has " + std::to_string(n) + " tensors");
        // Check every grad before any Segment is touched; `ptr` holds the addresses meanwhile.
        // Through torch's C shim where it serves (every grad a plain CPU tensor that passes);
        // else, or when one fails there, by the look-ups, which name what is wrong.
        ptr_.resize(n);
        if (!shim_pointers(o, list, n)) {
            for (size_t i = 0; i < n; ++i) {
                PyObject* g = list ? PyList_GET_ITEM(o, i) : PyTuple_GET_ITEM(o, i);
                ptr_[i] = grad_pointer(g, i);
            }
        }
        for (size_t i = 0; i < n; ++i) {
            if (place_[i] < 0) continue;
            const int64_t at = place_[i];
            segs_[at % kDTypes][static_cast<size_t>(at / kDTypes)].grad =
                reinterpret_cast<const void*>(ptr_[i]);
        }
        // A list that the caller may change after this call: hold a copy of its items.
        grads_owner_ = list ? py::reinterpret_steal<py::object>(PyList_AsTuple(o)) : held;
        if (!grads_owner_) throw py::error_already_set();
        grads_set_ = true;
    }

    size_t size() const { return size_.size(); }
    unsigned mask() const { return mask_; }

    // Fills `out` for one kernel call; the grads (and the reference to them) pass to it.
    void fill(Batches& out, py::handle self) {
        if (!grads_set_)
            throw py::value_error("grads: set_grads() has not been called since this plan's last "
                                  "kernel call");
        for (int d = 0; d < kDTypes; ++d) out.segs[d].assign(segs_[d].begin(), segs_[d].end());
        out.master = (mask_ & (1u << kMaster)) != 0;
        out.hold(self.ptr());
        out.hold(grads_owner_.ptr());
        grads_owner_ = py::none();
        grads_set_ = false;
    }

  private:
    // The owner of the handles of one shim_pointers call: deleted when it ends.
    struct Handles {
        const Shim* shim;
        std::vector<Shim::Handle> h;
        ~Handles() {
            for (Shim::Handle x : h) shim->delete_tensor(x);
        }
    };

    // ptr_ filled through torch's C shim (see Shim) with set_grads' checks; false, with ptr_
    // unspecified, when the shim is absent, a grad is not exactly a torch.Tensor or Parameter,
    // or any grad fails a check (the look-ups then find which and why).
    bool shim_pointers(PyObject* o, bool list, size_t n) {
        if (n == 0) return false;
        PyObject* first = list ? PyList_GET_ITEM(o, 0) : PyTuple_GET_ITEM(o, 0);
        const Torch* t = torch_of(first);
        if (!t || !t->shim || !shim_used) return false;
        const Shim& s = *t->shim;
        for (size_t i = 0; i < n; ++i) {
            PyObject* type = reinterpret_cast<PyObject*>(
                Py_TYPE(list ? PyList_GET_ITEM(o, i) : PyTuple_GET_ITEM(o, i)));
            if (type != t->tensor && type != t->parameter) return false;
        }
        PyObject* got = PyObject_CallOneArg(s.handles, o);
        if (!got) {
            PyErr_Clear();
            return false;
        }
        const py::object caps = py::reinterpret_steal<py::object>(got);
        if (!PyList_Check(got) || static_cast<size_t>(PyList_GET_SIZE(got)) != n) return false;
        Handles hs{&s, {}};
        hs.h.reserve(n);
        for (size_t i = 0; i < n; ++i) {
            PyObject* cap = PyList_GET_ITEM(got, i);
            void* h = PyCapsule_GetPointer(cap, PyCapsule_GetName(cap));
            if (!h) {
                PyErr_Clear();
                return false;
            }
            hs.h.push_back(h);
        }
        for (size_t i = 0; i < n; ++i) {
            const Shim::Handle h = hs.h[i];
            const DType d = dtype_[i];
            int32_t layout = -1, device = -1, dtype = -1;
            int64_t ndim = -1, *sizes = nullptr, offset = -1, nbytes = -1;
            bool contiguous = false;
            void* data = nullptr;
            if (s.get_layout(h, &layout) || layout != s.strided || s.get_device_type(h, &device) ||
                device != s.cpu || s.get_dtype(h, &dtype) || dtype != s.dtypes[static_cast<int>(d)] ||
                s.get_dim(h, &ndim) || ndim != static_cast<int64_t>(dims_[i].size()) ||
                s.get_sizes(h, &sizes) ||
                !std::equal(dims_[i].begin(), dims_[i].end(), sizes) ||
                s.is_contiguous(h, &contiguous) || !contiguous)
                return false;
            if (size_[i] == 0) {
                ptr_[i] = 0;
                continue;
            }
            if (s.get_data_ptr(h, &data) || !data || s.get_storage_offset(h, &offset) ||
                s.get_storage_size(h, &nbytes) || offset < 0 ||
                nbytes < (offset + size_[i]) * itemsize(d))
                return false;
            const uintptr_t p = reinterpret_cast<uintptr_t>(data);
            if (p % static_cast<uintptr_t>(itemsize(d)) || written_overlap(p, i)) return false;
            ptr_[i] = p;
        }
        shim_grads += n;
        return true;
    }

    // The written array that the grad of tensor i at p would overlap, or null.
    const Span* written_overlap(uintptr_t p, size_t i) const {
        const uintptr_t hi = p + uintptr_t(size_[i] * itemsize(dtype_[i]));
        // The written spans are sorted and disjoint: the first whose end lies beyond p is the
        // only candidate for an overlap.
        const auto w = std::upper_bound(written_.begin(), written_.end(), p,
                                        [](uintptr_t v, const Span& sp) { return v < sp.hi; });
        return w != written_.end() && w->lo < hi ? &*w : nullptr;
    }

    // Grad i's data pointer, after its checks (TypeError / ValueError naming grads[i]).
    uintptr_t grad_pointer(PyObject* g, size_t i) {
        const DType d = dtype_[i];
        uintptr_t p = 0;
        if (py::detail::npy_api::get().PyArray_Check_(g)) {
            const Array a = check_array(g, "grads", static_cast<int64_t>(i), false, nullptr, true);
            if (a.dtype != d)
                throw py::type_error(item(kGrad, i) + " has dtype " + dtype_name(a.dtype) +
                                     "; expected " + dtype_name(d) + " like " + item(kParam, i));
            if (!shape_[i].equal(py::reinterpret_borrow<py::object>(g).attr("shape")))
                throw py::value_error(item(kGrad, i) + ": its shape does not match " +
                                      item(kParam, i) + " " + py::str(shape_[i]).cast<std::string>());
            p = a.lo();
        } else try {
            const Torch* t = torch_of(g);
            PyTypeObject* type = Py_TYPE(g);
            if (!t || (reinterpret_cast<PyObject*>(type) != t->tensor &&
                       reinterpret_cast<PyObject*>(type) != t->parameter))
                throw py::type_error(item(kGrad, i) + " must be a numpy.ndarray or a "
                                     "torch.Tensor, got " + type_name(g));
            if (!attr(g, t->s_layout).is(py::handle(t->strided)))
                throw py::type_error(item(kGrad, i) + ": only dense (strided) tensors are taken");
            if (!PyObject_IsTrue(attr(g, t->s_is_cpu).ptr()))
                throw py::value_error(item(kGrad, i) + ": not on the CPU, as " + item(kParam, i) +
                                      " is");
            const py::object dt = attr(g, t->s_dtype);
            if (!dt.is(py::handle(t->dtypes[static_cast<int>(d)])))
                throw py::type_error(item(kGrad, i) + " has dtype " + py::str(dt).cast<std::string>() +
                                     "; expected " + dtype_name(d) + " like " + item(kParam, i));
            if (!shape_[i].equal(attr(g, t->s_shape)))
                throw py::value_error(item(kGrad, i) + ": its shape does not match " +
                                      item(kParam, i) + " " + py::str(shape_[i]).cast<std::string>());
            if (!PyObject_IsTrue(call0(g, t->s_is_contiguous).ptr()))
                throw py::value_error(item(kGrad, i) + " must be contiguous");
            if (size_[i] == 0) return 0;
            const py::object ptr = call0(g, t->s_data_ptr);
            const unsigned long long v = PyLong_AsUnsignedLongLong(ptr.ptr());
            if (PyErr_Occurred()) throw py::error_already_set();
            p = static_cast<uintptr_t>(v);
            // The storage must hold the elements from the tensor's offset on: a storage resized
            // in place (untyped_storage().resize_(k)) under the tensor keeps its shape. (A
            // storage resized to 0 has no pointer: refused below.)
            if (p != 0) {
                const py::object storage = call0(g, t->s_untyped_storage);
                const long long nbytes = PyLong_AsLongLong(call0(storage.ptr(), t->s_nbytes).ptr());
                if (PyErr_Occurred()) throw py::error_already_set();
                const long long offset = PyLong_AsLongLong(call0(g, t->s_storage_offset).ptr());
                if (PyErr_Occurred()) throw py::error_already_set();
                const long long need = (offset + size_[i]) * itemsize(d);
                if (offset < 0 || nbytes < need)
                    throw py::value_error(item(kGrad, i) + ": its storage holds " +
                                          std::to_string(nbytes) + " bytes, fewer than the " +
                                          std::to_string(need) + " its shape and offset need "
                                          "(storage resized under the tensor)");
            }
        } catch (py::error_already_set& e) {  // torch refused a query (sparse, freed storage)
            if (!e.matches(PyExc_Exception)) throw;
            throw py::value_error(item(kGrad, i) + ": " + e.what());
        }
        if (size_[i] == 0) return p;
        if (p == 0) throw py::value_error(item(kGrad, i) + ": holds no memory (freed storage)");
        if (p % static_cast<uintptr_t>(itemsize(d)))
            throw py::value_error(item(kGrad, i) + " must be aligned to its dtype");
        if (const Span* w = written_overlap(p, i))
            throw py::value_error(item(kGrad, i) + " shares memory with " +
                                  item(w->slot, w->index) +
                                  "; arrays that are updated in place must not alias");
        return p;
    }

    Batches arrays_;               // the params', states' and master weights' arrays, held
    std::vector<DType> dtype_;
    std::vector<int64_t> size_;
    std::vector<py::object> shape_;  // the params' shapes (tuples)
    std::vector<std::vector<int64_t>> dims_;  // the same, as numbers
    unsigned mask_ = 0;            // bit s: the plan holds slot s (grads always)
    std::vector<Span> written_;    // the written arrays, sorted by address, disjoint
    std::vector<Segment> segs_[kDTypes];
    std::vector<int64_t> place_;   // tensor i's Segment: index * kDTypes + dtype, or -1 (empty)
    std::vector<uintptr_t> ptr_;   // set_grads' scratch
    py::object grads_owner_ = py::none();
    bool grads_set_ = false;
};

bool collect_plan(const ListArgs& args, Batches& out) {
    const py::handle first = args.arg[0].list;
    if (!py::isinstance<TensorPlan>(first)) return false;
    TensorPlan& plan = first.cast<TensorPlan&>();
    unsigned named = 0;
    for (int k = 0; k < args.n; ++k) {
        if (!args.arg[k].list.is(first))
            throw py::type_error(std::string(args.arg[k].name) + ": must be the TensorPlan given "
                                 "as " + args.arg[0].name + " (a plan stands in for every list "
                                 "it holds)");
        named |= 1u << args.arg[k].slot;
    }
    if (named != plan.mask()) {
        std::string want, got;
        for (int s = 0; s < kSlots; ++s) {
            if (plan.mask() & (1u << s)) want += std::string(want.empty() ? "" : ", ") + kSlotNames[s];
            if (named & (1u << s)) got += std::string(got.empty() ? "" : ", ") + kSlotNames[s];
        }
        throw py::value_error("the TensorPlan holds " + want + "; this call takes " + got);
    }
    for (auto& v : out.segs) v.clear();
    out.release();
    plan.fill(out, first);
    return true;
}

}  // namespace cpu
}  // namespace fusedopt

namespace {

// The largest idle spin / block-after time accepted (1 s).
constexpr long long kMaxSpinUs = 1000000;

// The names of fusedopt::cpu::Threading, by value.
constexpr const char* kThreadingNames[] = {"auto", "pool", "openmp"};

// One of `count` names from Python, as its index; a TypeError for a non-str, a ValueError for
// another str, each listing the names ("..., 'b' or None" in the TypeError where None is
// accepted by the caller too).
int choice_arg(py::handle v, const char* name, const char* const* names, int count,
               bool none_ok = false) {
    auto listed = [&](bool with_none) {
        std::string out;
        const int n = count + (with_none ? 1 : 0);
        for (int k = 0; k < n; ++k) {
            if (k > 0) out += k + 1 == n ? " or " : ", ";
            out += k < count ? "'" + std::string(names[k]) + "'" : std::string("None");
        }
        return out;
    };
    if (!PyUnicode_Check(v.ptr()))
        throw py::type_error(std::string(name) + " must be " + listed(none_ok) + ", got " +
                             type_name(v));
    const std::string s = py::cast<std::string>(v);
    for (int k = 0; k < count; ++k)
        if (s == names[k]) return k;
    throw py::value_error(std::string(name) + " must be " + listed(false) + ", got '" + s + "'");
}

// A Threading from Python: one of kThreadingNames.
int threading_arg(py::handle v, const char* name) {
    return choice_arg(v, name, kThreadingNames, 3);
}

// A Split from Python (parallel.h split_mode): one of kSplitNames.
constexpr const char* kSplitNames[] = {"claim", "ranges"};

// An idle-spin time in microseconds from Python: an int in 0..kMaxSpinUs.
int spin_us_arg(py::handle v, const char* name) {
    if (!PyLong_Check(v.ptr()) || PyBool_Check(v.ptr()))
        throw py::type_error(std::string(name) + " must be an int, got " + type_name(v));
    const long long x = PyLong_AsLongLong(v.ptr());
    if (PyErr_Occurred() || x < 0 || x > kMaxSpinUs) {
        PyErr_Clear();
        throw py::value_error(std::string(name) + " must be 0.." + std::to_string(kMaxSpinUs) +
                              " (microseconds)");
    }
    return static_cast<int>(x);
}

}  // namespace

void register_tensors(py::module_& m) {
    using fusedopt::cpu::TensorPlan;
    py::class_<TensorPlan>(m, "TensorPlan",
                           "The arrays of one multi-tensor call, checked once (fusedopt.torch's "
                           "path to the kernels): pass it as every list argument of a rule; "
                           "set_grads(grads) before each call.")
        .def(py::init<const py::sequence&>(), py::arg("slots"))
        .def("set_grads", &TensorPlan::set_grads, py::arg("grads"))
        .def("__len__", &TensorPlan::size);
    m.def(
        "_torch_shim",
        [](py::object use) -> py::object {
            const fusedopt::cpu::Torch* t = fusedopt::cpu::torch_of(nullptr);
            if (t == nullptr || t->shim == nullptr) return py::none();
            if (!use.is_none()) fusedopt::cpu::shim_used = use.cast<bool>();
            return py::int_(fusedopt::cpu::shim_grads);
        },
        py::arg("use") = py::none(),
        "How many grads TensorPlan.set_grads has read through torch's C shim so far (tests); "
        "None before torch is imported, or where this torch lacks the shim (the attribute "
        "look-ups then serve). `use` False or True turns the shim off or on (benchmarks compare "
        "the two; results never depend on it).");
    // The worker pool's waits (parallel.h; benchmarks compare them side by side): returns the
    // previous (idle_spin_us, block_after_us, threading) and sets the given ones.
    m.def(
        "_pool_waits",
        [](py::object idle_spin_us, py::object block_after_us, py::object threading) {
            using fusedopt::cpu::PoolWaits;
            const PoolWaits old = fusedopt::cpu::pool_waits();
            PoolWaits w = old;
            if (!idle_spin_us.is_none())
                w.idle_spin_us = spin_us_arg(idle_spin_us, "idle_spin_us");
            if (!block_after_us.is_none()) {
                if (!PyLong_Check(block_after_us.ptr()) || PyBool_Check(block_after_us.ptr()))
                    throw py::type_error("block_after_us must be an int or None, got " +
                                         type_name(block_after_us));
                const long long x = PyLong_AsLongLong(block_after_us.ptr());
                if (PyErr_Occurred() || x < -1 || x > kMaxSpinUs) {
                    PyErr_Clear();
                    throw py::value_error("block_after_us must be -1 (never) or 0.." +
                                          std::to_string(kMaxSpinUs));
                }
                w.block_after_us = static_cast<int>(x);
            }
            if (!threading.is_none()) w.threading = threading_arg(threading, "threading");
            fusedopt::cpu::set_pool_waits(w);
            return py::make_tuple(old.idle_spin_us, old.block_after_us,
                                  kThreadingNames[old.threading]);
        },
        py::arg("idle_spin_us") = py::none(), py::arg("block_after_us") = py::none(),
        py::arg("threading") = py::none());
    m.def(
        "get_threading",
        [] { return std::string(kThreadingNames[fusedopt::cpu::pool_waits().threading]); },
        "Whose threads run the CPU kernels' chunks: 'auto', 'pool' or 'openmp' (set_threading).");
    m.def(
        "set_threading",
        [](py::object mode) { fusedopt::cpu::set_threading(threading_arg(mode, "mode")); },
        py::arg("mode"),
        "Whose threads run the CPU kernels' chunks: 'pool' (fusedopt's worker pool, which "
        "keeps a step fast when other processes load the cores), 'openmp' (a parallel region of "
        "the process's OpenMP runtime per call: torch's own threads when both load one libgomp) "
        "or 'auto' (the default, or FUSEDOPT_THREADING at import of fusedopt): OpenMP's for the "
        "steps of fusedopt.torch, where torch's threads are awake and would otherwise spin "
        "beside the pool's, and the pool for everything else. Results never depend on it.");
    m.def(
        "_torch_caller",
        [](bool on) { return fusedopt::cpu::set_torch_caller(on); }, py::arg("on"),
        "Marks the calling thread as fusedopt.torch's step (threading 'auto' then runs its "
        "calls on OpenMP's threads); returns the previous mark. Thread-local.");
    m.def(
        "_split",
        [](py::object mode) {
            const std::string old = kSplitNames[fusedopt::cpu::split_mode()];
            if (!mode.is_none())
                fusedopt::cpu::set_split_mode(choice_arg(mode, "mode", kSplitNames, 2, true));
            return old;
        },
        py::arg("mode") = py::none(),
        "How a call on OpenMP's threads hands out its chunks (parallel.h split_mode; benchmarks): "
        "'claim' (one shared counter) or 'ranges' (each thread its contiguous slice first); "
        "returns the previous mode, sets `mode` unless None. Results never depend on it.");
    m.def("_openmp_regions", &fusedopt::cpu::openmp_regions,
          "How many calls ran on OpenMP's threads so far (tests).");
    m.def(
        "get_pool_spin", [] { return fusedopt::cpu::pool_waits().idle_spin_us; },
        "Microseconds an idle worker of the CPU pool polls for the next call before it sleeps "
        "(set_pool_spin).");
    m.def(
        "set_pool_spin",
        [](py::object us) { fusedopt::cpu::set_idle_spin_us(spin_us_arg(us, "us")); },
        py::arg("us"),
        "How long (microseconds, 0..1000000) an idle worker of the CPU pool polls for the next "
        "call before it sleeps; default 200, or FUSEDOPT_POOL_SPIN_US at import of fusedopt. "
        "Longer keeps workers awake across longer gaps between calls; shorter leaves the cores "
        "sooner to other threads (torch's). Results never depend on it.");
}
