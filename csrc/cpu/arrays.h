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
// kernel writes it, and which pointer of a Segment receives it (-1: param, -2: grad, k: state[k]).
struct ListArg {
    const char* name;
    py::handle list;
    bool written;
    int slot;
};

// The float32 and float64 tensors of a call, each a batch of its own.
struct Batches {
    std::vector<Segment> segs[2];
    Batch batch(DType d) const {
        const auto& v = segs[static_cast<int>(d)];
        const int64_t total = v.empty() ? 0 : v.back().offset + v.back().size;
        return Batch{v.data(), static_cast<int64_t>(v.size()), total, d};
    }
};

// The lists of one call, at most kMaxLists (params, grads, three states), on the stack.
constexpr int kMaxLists = 5;
struct ListArgs {
    ListArg arg[kMaxLists];
    int n = 0;
    ListArgs(std::initializer_list<ListArg> a) {
        for (const ListArg& x : a) add(x);
    }
    void add(const ListArg& x) { arg[n++] = x; }
};

// Checks the lists (the first is the params) and fills `out` (reused buffers: no allocation once
// grown). Raises TypeError / ValueError naming the argument. Hyperparameters are checked in
// Python (fusedopt._scalars); here only the arrays.
void collect(const ListArgs& args, Batches& out);

}  // namespace cpu
}  // namespace fusedopt
