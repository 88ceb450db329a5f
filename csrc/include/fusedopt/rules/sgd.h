// fusedopt/rules/sgd.h -- SGD with momentum, dampening, Nesterov (torch.optim.SGD semantics).
//
//   g  <- (maximize ? -g : g) + wd * p                      (L2 term only when wd != 0)
//   buf <- g                                   on the first step (torch initialises the buffer so)
//   buf <- momentum * buf + (1 - dampening) * g otherwise
//   g  <- g + momentum * buf  (nesterov)   or   g <- buf
//   p  <- p - lr * g
#pragma once
#include "common.h"

namespace fusedopt {
namespace rules {

template <typename T>
struct SgdScalars {
    T lr;
    T momentum;
    T one_minus_dampening;
    T weight_decay;
    bool first_step;  // the momentum buffer is set to g instead of being decayed
};

// Plain (momentum == 0) step: no buffer.
template <typename T, bool Maximize, int WD>
FUSEDOPT_HD void sgd_update(T& p, T g, const SgdScalars<T>& s) {
    g = effective_grad<T, Maximize, WD>(g, p, s.weight_decay);
    p = p - s.lr * g;
}

// Momentum step, buffer `buf`.
template <typename T, bool Maximize, int WD, bool Nesterov>
FUSEDOPT_HD void sgd_momentum_update(T& p, T g, T& buf, const SgdScalars<T>& s) {
    g = effective_grad<T, Maximize, WD>(g, p, s.weight_decay);
    if (s.first_step) {
        buf = g;
    } else {
        buf = s.momentum * buf + s.one_minus_dampening * g;
    }
    if (Nesterov) {
        g = g + s.momentum * buf;
    } else {
        g = buf;
    }
    p = p - s.lr * g;
}

}  // namespace rules
}  // namespace fusedopt
