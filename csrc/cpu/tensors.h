// csrc/cpu/tensors.h -- tensors of another library (torch) reaching the kernels, checked once.
//
// fusedopt.torch steps the same tensors step after step: building a NumPy view of every tensor at
// every step cost about a microsecond per tensor. A TensorPlan (tensor_bindings.cpp) holds the
// Segments of one kernel call. The params, states and master weights are given once, as NumPy
// arrays (zero-copy views of the tensors), and checked by collect() exactly as a kernel call's
// lists are (dtypes, shapes, contiguity, alignment, writeable, no aliasing); the plan holds them.
// Per step only the grads are given (set_grads): NumPy arrays, or torch CPU tensors whose
// pointer, dtype, shape, layout, device and contiguity are read from the tensor itself through
// its Python methods (torch is looked up in sys.modules, never imported: no torch header, no
// build-time dependency), checked against the plan's param, aligned, aliasing no written array.
// No pointer is ever taken from the caller as a number. The rule entries of fusedopt._core take
// the plan in place of every list it holds (`_core.adam(plan, plan, plan, plan, None, scalars)`):
// collect() finds it there and fills the call's Batches from it, with a reference to the grads
// until that call ends.
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
