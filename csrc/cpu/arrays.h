// csrc/cpu/arrays.h -- checks of NumPy arguments for the kernels of fusedopt._core.
//
// Every check runs before any kernel touches memory, so a call either updates every array or
// none. Errors name the argument: `grads[3]: shape (4,) does not match params[3] (5,)`.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <initializer_list>
#include <vector>

#include "kernels.h"

namespace fusedopt {
namespace cpu {

namespace py = pybind11;

// A list argument of a multi-tensor call: its name for messages, the Python list, whether the
// kernel writes it, and the slot (fusedopt/slots.h) of a Segment that receives it.
struct ListArg {
    const char* name;
    py::handle list;
    bool written;
    Slot slot;
};

// The tensors of a call by dtype (float32, float64, float16, bfloat16), each a batch of its own,
// whether the call has master weights, and a strong reference to
// every list and array of the call: the kernels run without the GIL, and another thread may
// clear or replace the lists meanwhile; the arrays (hence their memory) stay alive until the
// Batches are released (release(), with the GIL held).
struct Batches {
    std::vector<Segment> segs[kDTypes];
    std::vector<PyObject*> refs;
    bool master = false;

    void hold(PyObject* o) {
        Py_INCREF(o);
        refs.push_back(o);
    }
    // Drops the references (GIL held). Reused buffers: nothing is freed or allocated once grown.
    void release() {
        for (PyObject* o : refs) Py_DECREF(o);
        refs.clear();
    }
    Batch batch(DType d) const {
        const auto& v = segs[static_cast<int>(d)];
        const int64_t total = v.empty() ? 0 : v.back().offset + v.back().size;
        return Batch{v.data(), static_cast<int64_t>(v.size()), total, d, master && is_16bit(d)};
    }
};

// One checked array argument: a float32/float64 ndarray (float16/bfloat16 too where the call
// takes 16-bit params) in native byte order, C-contiguous and aligned (and writeable when it is
// written).
struct Array {
    const char* list;  // the argument's name
    int64_t index;     // the item's place in that list, or -1 for a lone array
    const py::detail::PyArray_Proxy* a;
    DType dtype;
    int64_t size;

    void* data() const { return a->data; }
    int ndim() const { return a->nd; }
    int64_t dim(int d) const { return static_cast<int64_t>(a->dimensions[d]); }
    uintptr_t lo() const { return reinterpret_cast<uintptr_t>(a->data); }
    uintptr_t hi() const {
        return lo() + static_cast<uintptr_t>(size) * static_cast<uintptr_t>(itemsize(dtype));
    }
    bool same_shape(const Array& o) const;
    std::string name() const;   // "grads[3]" or "out" (built only for messages)
    std::string shape() const;  // "(3,)", "(2, 5)"
};

// Checks `o` as above, and that it has the dtype of `like` when that is given (float16 and
// bfloat16 accepted only when `half_ok`). Raises TypeError (not an array, wrong dtype) or
// ValueError naming the argument; allocates nothing otherwise.
Array check_array(PyObject* o, const char* list, int64_t index, bool written,
                  const Array* like = nullptr, bool half_ok = false);

const char* dtype_name(DType d);

// The lists of one call, at most kMaxLists (params, grads, three states, master weights), on the
// stack.
constexpr int kMaxLists = 6;
struct ListArgs {
    ListArg arg[kMaxLists];
    int n = 0;
    ListArgs(std::initializer_list<ListArg> a) {
        for (const ListArg& x : a) add(x);
    }
    void add(const ListArg& x) { arg[n++] = x; }
};

// Checks the lists (the first is the params) and fills `out` (reused buffers: no allocation once
// grown), holding a reference to every list and array. Raises TypeError / ValueError naming the
// argument. Hyperparameters are checked in Python (fusedopt._scalars); here only the arrays.
// The dtype each list must have follows from its slot: grads (and other param-slot lists) the
// param's; states the param's math type (float32 for 16-bit params); master weights float32, and
// only for float16/bfloat16 params. `half_ok`: the call takes 16-bit params (the rules and
// found_inf_); others refuse them.
void collect(const ListArgs& args, Batches& out, bool half_ok = false);

// The Batches of one call on this thread (reused between calls), released when the call ends
// (normally or by an exception): construct it before collect(), and before any GIL release so
// that it is destroyed with the GIL held.
class CallBatches {
  public:
    CallBatches();
    ~CallBatches();
    CallBatches(const CallBatches&) = delete;
    CallBatches& operator=(const CallBatches&) = delete;
    Batches& operator*() { return *b_; }
    Batches* operator->() { return b_; }

  private:
    Batches* b_;
    bool outer_;
};

}  // namespace cpu
}  // namespace fusedopt
