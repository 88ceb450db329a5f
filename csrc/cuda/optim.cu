// csrc/cuda/optim.cu -- the update rules as multi-tensor CUDA kernels, one launch per step.
//
// Each functor only adapts a rule of csrc/include/fusedopt/rules/ to the driver of
// multi_tensor.cuh (load -> rule -> store); no formula is written here. Template parameters:
//   P        storage type of params and grads: float, double, half_t, bf16_t
//   Maximize, WD (rules::WeightDecay), and the rule's own flags: select the rule instance
//   Master   float32 master weights (half_t / bf16_t params only)
//   Amp      skip the step when *found_inf != 0, divide grads by *grad_scale
// Per-step scalars arrive as the math type (float for float/half/bfloat16, double for double),
// cast once on the host from the float64 values of fusedopt._scalars.
#include "multi_tensor.cuh"
#include "fusedopt/rules.h"

namespace fusedopt {
namespace cuda {

#define FUSEDOPT_OP_TYPES(P)           \
    typedef P param_t;                 \
    typedef typename MathOf<P>::type M; \
    typedef M math_t

template <typename P, bool Maximize, int WD, bool Momentum, bool Nesterov>
struct SgdOp {
    FUSEDOPT_OP_TYPES(P);
    static constexpr int kStates = Momentum ? 1 : 0;
    rules::SgdScalars<M> s;
    __device__ __forceinline__ void operator()(M& p, M g, M& buf, M&, M&) const {
        if (Momentum) {
            rules::sgd_momentum_update<M, Maximize, WD, Nesterov>(p, g, buf, s);
        } else {
            rules::sgd_update<M, Maximize, WD>(p, g, s);
        }
    }
};

template <typename P, bool Maximize, int WD>
struct AdagradOp {
    FUSEDOPT_OP_TYPES(P);
    static constexpr int kStates = 1;
    rules::AdagradScalars<M> s;
    __device__ __forceinline__ void operator()(M& p, M g, M& sum, M&, M&) const {
        rules::adagrad_update<M, Maximize, WD>(p, g, sum, s);
    }
};

// State slots in the order of the used buffers: square_avg, then grad_avg when centered, then
// the momentum buffer.
template <typename P, bool Maximize, int WD, bool Centered, bool Momentum>
struct RmspropOp {
    FUSEDOPT_OP_TYPES(P);
    static constexpr int kStates = 1 + (Centered ? 1 : 0) + (Momentum ? 1 : 0);
    rules::RmspropScalars<M> s;
    __device__ __forceinline__ void operator()(M& p, M g, M& sq, M& s1, M& s2) const {
        M& buf = Centered ? s2 : s1;
        rules::rmsprop_update<M, Maximize, WD, Centered, Momentum>(p, g, sq, s1, buf, s);
    }
};

template <typename P, bool Maximize, int WD, bool AMSGrad>
struct AdamOp {
    FUSEDOPT_OP_TYPES(P);
    static constexpr int kStates = AMSGrad ? 3 : 2;
    rules::AdamScalars<M> s;
    __device__ __forceinline__ void operator()(M& p, M g, M& m, M& v, M& vmax) const {
        rules::adam_update<M, Maximize, WD, AMSGrad>(p, g, m, v, vmax, s);
    }
};

template <typename P, bool Maximize, int WD>
struct AdamaxOp {
    FUSEDOPT_OP_TYPES(P);
    static constexpr int kStates = 2;
    rules::AdamaxScalars<M> s;
    __device__ __forceinline__ void operator()(M& p, M g, M& m, M& u, M&) const {
        rules::adamax_update<M, Maximize, WD>(p, g, m, u, s);
    }
};

// p <- p * factor (clip_by_global_norm_), as the CPU loop does it.
template <typename P>
struct ScaleOp {
    FUSEDOPT_OP_TYPES(P);
    static constexpr int kStates = 0;
    M factor;
    __device__ __forceinline__ void operator()(M& p, M, M&, M&, M&) const { p = p * factor; }
};

#undef FUSEDOPT_OP_TYPES

#define FUSEDOPT_M typename MathOf<P>::type

template <typename P, bool Maximize, int WD, bool Momentum, bool Nesterov, bool Master, bool Amp>
__global__ void __launch_bounds__(kThreads)
    sgd_kernel(FUSEDOPT_MT_PARAMS, FUSEDOPT_M lr, FUSEDOPT_M momentum,
               FUSEDOPT_M one_minus_dampening, FUSEDOPT_M weight_decay, i64 first_step) {
    SgdOp<P, Maximize, WD, Momentum, Nesterov> op{
        {lr, momentum, one_minus_dampening, weight_decay, first_step != 0}};
    apply<Master, Amp, true>(op, FUSEDOPT_MT_ARGS);
}

template <typename P, bool Maximize, int WD, bool Master, bool Amp>
__global__ void __launch_bounds__(kThreads)
    adagrad_kernel(FUSEDOPT_MT_PARAMS, FUSEDOPT_M clr, FUSEDOPT_M eps, FUSEDOPT_M eps_root,
                   FUSEDOPT_M weight_decay) {
    AdagradOp<P, Maximize, WD> op{{clr, eps, eps_root, weight_decay}};
    apply<Master, Amp, true>(op, FUSEDOPT_MT_ARGS);
}

template <typename P, bool Maximize, int WD, bool Centered, bool Momentum, bool Master, bool Amp>
__global__ void __launch_bounds__(kThreads)
    rmsprop_kernel(FUSEDOPT_MT_PARAMS, FUSEDOPT_M lr, FUSEDOPT_M alpha,
                   FUSEDOPT_M one_minus_alpha, FUSEDOPT_M eps, FUSEDOPT_M eps_root,
                   FUSEDOPT_M weight_decay, FUSEDOPT_M momentum) {
    RmspropOp<P, Maximize, WD, Centered, Momentum> op{
        {lr, alpha, one_minus_alpha, eps, eps_root, weight_decay, momentum}};
    apply<Master, Amp, true>(op, FUSEDOPT_MT_ARGS);
}

template <typename P, bool Maximize, int WD, bool AMSGrad, bool Master, bool Amp>
__global__ void __launch_bounds__(kThreads)
    adam_kernel(FUSEDOPT_MT_PARAMS, FUSEDOPT_M lr, FUSEDOPT_M beta1, FUSEDOPT_M one_minus_beta1,
                FUSEDOPT_M beta2, FUSEDOPT_M one_minus_beta2, FUSEDOPT_M bias_correction1,
                FUSEDOPT_M bias_correction2, FUSEDOPT_M eps, FUSEDOPT_M eps_root,
                FUSEDOPT_M weight_decay, FUSEDOPT_M decay) {
    AdamOp<P, Maximize, WD, AMSGrad> op{{lr, beta1, one_minus_beta1, beta2, one_minus_beta2,
                                         bias_correction1, bias_correction2, eps, eps_root,
                                         weight_decay, decay}};
    apply<Master, Amp, true>(op, FUSEDOPT_MT_ARGS);
}

template <typename P, bool Maximize, int WD, bool Master, bool Amp>
__global__ void __launch_bounds__(kThreads)
    adamax_kernel(FUSEDOPT_MT_PARAMS, FUSEDOPT_M clr, FUSEDOPT_M beta1,
                  FUSEDOPT_M one_minus_beta1, FUSEDOPT_M beta2, FUSEDOPT_M eps,
                  FUSEDOPT_M weight_decay) {
    AdamaxOp<P, Maximize, WD> op{{clr, beta1, one_minus_beta1, beta2, eps, weight_decay}};
    apply<Master, Amp, true>(op, FUSEDOPT_MT_ARGS);
}

template <typename P>
__global__ void __launch_bounds__(kThreads) scale_kernel(FUSEDOPT_MT_PARAMS, FUSEDOPT_M factor) {
    ScaleOp<P> op{factor};
    apply<false, false, false>(op, FUSEDOPT_MT_ARGS);
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
