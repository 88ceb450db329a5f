// csrc/cpu/tensors.h -- tensors of another library (torch) reaching the kernels as raw pointers.
//
// fusedopt.torch steps the same tensors step after step: building a NumPy view of every tensor at
// every step cost about a microsecond per tensor. A TensorPlan (tensor_bindings.cpp) holds the
// Segments of one kernel call -- the params, states and master weights, given once as data
// pointers with their sizes and dtypes, checked once (aligned, and no written array overlapping
// another) -- and, per step, only the grads' pointers are given (set_grads: aligned, overlapping
// no written array). The rule entries of fusedopt._core take the plan in place of every list it
// holds (`_core.adam(plan, plan, plan, plan, None, scalars)`): collect() finds it there and
// fills the call's Batches from it. No torch header is needed: the caller (fusedopt.torch) reads
// the pointers with Tensor.data_ptr() and keeps the tensors alive: the plan holds a reference to
// the objects that own the params' and states' memory, and each set_grads call to the objects
// that own the grads' memory until the kernel call that uses them ends.
#pragma once
#include "arrays.h"

namespace fusedopt {
namespace cpu {

// If the first list of `args` is a TensorPlan: fills `out` from it (every list argument must
// be that plan, naming exactly the plan's slots, grads included) and returns true; false
// otherwise. Raises TypeError / ValueError naming the argument.
bool collect_plan(const ListArgs& args, Batches& out);

}  // namespace cpu
}  // namespace fusedopt
