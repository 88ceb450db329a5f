// fusedopt/functors.h -- every rule as a functor over one element's slots, the only thing the
// loops of both backends call: csrc/cpu/kernels.cpp's elementwise<> and csrc/cuda/
// multi_tensor.cuh's apply<> load the slots a functor names, call it, and store them.
//
// A functor over math type M (float or double) provides
//   kStates     mask of the state slots it reads and writes (state_bit(k): slot kState0 + k)
//   kReadsGrad  whether it reads the grad slot
//   void operator()(M& p, M g, M& state0, M& state1, M& state2) const
// and holds the rule's scalars, already cast to M. State slots follow fusedopt/slots.h; a state
// keeps its slot whatever flags are on (RMSprop: square_avg, grad_avg, momentum_buffer are
// always state0, state1, state2).
#pragma once
#include "rules.h"
#include "slots.h"

namespace fusedopt {

template <typename M, bool Maximize, int WD, bool Momentum, bool Nesterov>
struct SgdOp {
    static constexpr unsigned kStates = Momentum ? state_bit(0) : 0u;
    static constexpr bool kReadsGrad = true;
    rules::SgdScalars<M> s;
    FUSEDOPT_HD void operator()(M& p, M g, M& momentum_buffer, M&, M&) const {
        if (Momentum) {
            rules::sgd_momentum_update<M, Maximize, WD, Nesterov>(p, g, momentum_buffer, s);
        } else {
            rules::sgd_update<M, Maximize, WD>(p, g, s);
        }
    }
};

template <typename M, bool Maximize, int WD>
struct AdagradOp {
    static constexpr unsigned kStates = state_bit(0);
    static constexpr bool kReadsGrad = true;
    rules::AdagradScalars<M> s;
    FUSEDOPT_HD void operator()(M& p, M g, M& sum, M&, M&) const {
        rules::adagrad_update<M, Maximize, WD>(p, g, sum, s);
    }
};

template <typename M, bool Maximize, int WD, bool Centered, bool Momentum>
struct RmspropOp {
    static constexpr unsigned kStates =
        state_bit(0) | (Centered ? state_bit(1) : 0u) | (Momentum ? state_bit(2) : 0u);
    static constexpr bool kReadsGrad = true;
    rules::RmspropScalars<M> s;
    FUSEDOPT_HD void operator()(M& p, M g, M& square_avg, M& grad_avg,
                                M& momentum_buffer) const {
        rules::rmsprop_update<M, Maximize, WD, Centered, Momentum>(p, g, square_avg, grad_avg,
                                                                   momentum_buffer, s);
    }
};

template <typename M, bool Maximize, int WD, bool AMSGrad>
struct AdamOp {
    static constexpr unsigned kStates =
        state_bit(0) | state_bit(1) | (AMSGrad ? state_bit(2) : 0u);
    static constexpr bool kReadsGrad = true;
    rules::AdamScalars<M> s;
    FUSEDOPT_HD void operator()(M& p, M g, M& exp_avg, M& exp_avg_sq, M& max_exp_avg_sq) const {
        rules::adam_update<M, Maximize, WD, AMSGrad>(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq,
                                                     s);
    }
};

template <typename M, bool Maximize, int WD>
struct AdamaxOp {
    static constexpr unsigned kStates = state_bit(0) | state_bit(1);
    static constexpr bool kReadsGrad = true;
    rules::AdamaxScalars<M> s;
    FUSEDOPT_HD void operator()(M& p, M g, M& exp_avg, M& exp_inf, M&) const {
        rules::adamax_update<M, Maximize, WD>(p, g, exp_avg, exp_inf, s);
    }
};

// p <- p * factor (clip_by_global_norm_).
template <typename M>
struct ScaleOp {
    static constexpr unsigned kStates = 0u;
    static constexpr bool kReadsGrad = false;
    M factor;
    FUSEDOPT_HD void operator()(M& p, M, M&, M&, M&) const { p = p * factor; }
};

}  // namespace fusedopt
