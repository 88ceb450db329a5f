// fusedopt/slots.h -- the named array slots of a multi-tensor call, one convention for both
// backends: the CPU's Segment (csrc/cpu/kernels.h) and the CUDA table (csrc/cuda/multi_tensor.cuh)
// hold a tensor's arrays in this order, and a rule's functor (fusedopt/functors.h) names the state
// slots it uses. fusedopt._core exports kSlots and kCudaThreads as SLOTS and THREADS, and the
// Python side reads them from there.
#pragma once
#include "hd.h"

namespace fusedopt {

enum Slot : int {
    kParam = 0,   // the parameters, updated in place
    kGrad = 1,    // the gradients, read only
    kState0 = 2,  // the rule's first state (exp_avg, sum, square_avg, momentum_buffer)
    kState1 = 3,  // second state (exp_avg_sq, grad_avg, exp_inf)
    kState2 = 4,  // third state (max_exp_avg_sq, RMSprop's momentum_buffer)
    kMaster = 5,  // float32 master weights of 16-bit params (CUDA only)
};
constexpr int kSlots = 6;
constexpr int kStateSlots = 3;

// Bit of state slot kState0 + k in a functor's kStates mask.
FUSEDOPT_HD constexpr unsigned state_bit(int k) { return 1u << k; }

// Threads per block of every CUDA kernel (see __launch_bounds__ in csrc/cuda/).
constexpr int kCudaThreads = 256;

}  // namespace fusedopt
