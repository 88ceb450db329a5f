// csrc/cuda/optim.cu -- the update rules as multi-tensor CUDA kernels, one launch per step.
//
// Each kernel runs a functor of fusedopt/functors.h (shared with the CPU loop) with the driver of
// multi_tensor.cuh (load -> rule -> store); no formula is written here. Template parameters:
//   P        storage type of params and grads: float, double, half_t, bf16_t
//   Maximize, WD (rules::WeightDecay), and the rule's own flags, in the order of the flag fields
//            of the fusedopt._scalars record: select the rule instance
//   Master   float32 master weights (half_t / bf16_t params only)
//   Amp      skip the step when *found_inf != 0, divide grads by *grad_scale
// Per-step scalars arrive as one rules::XScalars struct of the math type (float for
// float/half/bfloat16, double for double), cast once on the host from the float64 record.
#include "multi_tensor.cuh"
#include "fusedopt/functors.h"

namespace fusedopt {
namespace cuda {

// The math type of storage type P, and the scalar struct of a rule in it: the kernel argument,
// built on the host from the fusedopt._scalars record (fusedopt/_cuda/launch.py), its fields
// cast once from float64.
#define FUSEDOPT_M typename MathOf<P>::type

template <typename P, bool Maximize, int WD, bool Momentum, bool Nesterov, bool Master, bool Amp>
__global__ void __launch_bounds__(kThreads)
    sgd_kernel(FUSEDOPT_MT_PARAMS, rules::SgdScalars<FUSEDOPT_M> s) {
    apply<P, Master, Amp>(SgdOp<FUSEDOPT_M, Maximize, WD, Momentum, Nesterov>{s}, FUSEDOPT_MT_ARGS);
}

template <typename P, bool Maximize, int WD, bool Master, bool Amp>
__global__ void __launch_bounds__(kThreads)
    adagrad_kernel(FUSEDOPT_MT_PARAMS, rules::AdagradScalars<FUSEDOPT_M> s) {
    apply<P, Master, Amp>(AdagradOp<FUSEDOPT_M, Maximize, WD>{s}, FUSEDOPT_MT_ARGS);
}

template <typename P, bool Maximize, int WD, bool Centered, bool Momentum, bool Master, bool Amp>
__global__ void __launch_bounds__(kThreads)
    rmsprop_kernel(FUSEDOPT_MT_PARAMS, rules::RmspropScalars<FUSEDOPT_M> s) {
    apply<P, Master, Amp>(RmspropOp<FUSEDOPT_M, Maximize, WD, Centered, Momentum>{s},
                          FUSEDOPT_MT_ARGS);
}

template <typename P, bool Maximize, int WD, bool AMSGrad, bool Master, bool Amp>
__global__ void __launch_bounds__(kThreads)
    adam_kernel(FUSEDOPT_MT_PARAMS, rules::AdamScalars<FUSEDOPT_M> s) {
    apply<P, Master, Amp>(AdamOp<FUSEDOPT_M, Maximize, WD, AMSGrad>{s}, FUSEDOPT_MT_ARGS);
}

template <typename P, bool Maximize, int WD, bool Master, bool Amp>
__global__ void __launch_bounds__(kThreads)
    adamax_kernel(FUSEDOPT_MT_PARAMS, rules::AdamaxScalars<FUSEDOPT_M> s) {
    apply<P, Master, Amp>(AdamaxOp<FUSEDOPT_M, Maximize, WD>{s}, FUSEDOPT_MT_ARGS);
}

template <typename P>
__global__ void __launch_bounds__(kThreads) scale_kernel(FUSEDOPT_MT_PARAMS, FUSEDOPT_M factor) {
    apply<P, false, false>(ScaleOp<FUSEDOPT_M>{factor}, FUSEDOPT_MT_ARGS);
}

#undef FUSEDOPT_M

// *found_inf = 1 if any element of the table's tensors (param slot) is infinite or NaN; left as
// it is otherwise (the caller zeroes it). Every writer stores the same value: no atomics needed.
template <typename P>
__global__ void __launch_bounds__(kThreads)
    found_inf_kernel(const i64* table, i64 nt, i64 nchunks, i64 chunk, float* found_inf) {
    for_each_chunk(table, nt, nchunks, chunk, [&](i64, const ChunkRef& ref) {
        const P* g = reinterpret_cast<const P*>(ref.row[kParam]);
        bool bad = false;
        for (i64 i = ref.lo + threadIdx.x; i < ref.hi; i += blockDim.x) {
            const typename MathOf<P>::type v = to_math(g[i]);
            bad = bad || !(v - v == v - v);  // x - x is NaN exactly when x is inf or NaN
        }
        if (bad) *found_inf = 1.0f;
    });
}

}  // namespace cuda
}  // namespace fusedopt
