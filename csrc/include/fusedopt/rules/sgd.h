// fusedopt/rules/sgd.h -- SGD with momentum, dampening, Nesterov (torch.optim.SGD semantics).
//
//   g               <- (maximize ? -g : g) + wd * p       (L2 term only when wd != 0)
//   momentum_buffer <- g                                  on the first step (as torch does)
//   momentum_buffer <- momentum * momentum_buffer + (1 - dampening) * g    after that
//   g               <- g + momentum * momentum_buffer  (nesterov)  or  g <- momentum_buffer
//   p               <- p - lr * g
#pragma once
#include "common.h"

namespace fusedopt {
namespace rules {

#define FUSEDOPT_SGD_SCALARS(X) \
    X(T, lr) X(T, momentum) X(T, one_minus_dampening) X(T, weight_decay) X(bool, first_step)
#define FUSEDOPT_SGD_FLAGS(X) \
    X(bool, maximize) X(int, weight_decay_mode) X(bool, has_momentum) X(bool, nesterov)

// first_step: the momentum buffer is set to g instead of being decayed.
template <typename T>
struct SgdScalars {
    FUSEDOPT_SCALARS(SgdScalars, FUSEDOPT_SGD_SCALARS)
};
struct SgdFlags {
    FUSEDOPT_FLAGS(FUSEDOPT_SGD_FLAGS)
};

// Plain (momentum == 0) step: no buffer.
template <typename T, bool Maximize, int WD>
FUSEDOPT_HD void sgd_update(T& p, T g, const SgdScalars<T>& s) {
    g = effective_grad<T, Maximize, WD>(g, p, s.weight_decay);
    p = p - s.lr * g;
}

template <typename T, bool Maximize, int WD, bool Nesterov>
FUSEDOPT_HD void sgd_momentum_update(T& p, T g, T& momentum_buffer, const SgdScalars<T>& s) {
    g = effective_grad<T, Maximize, WD>(g, p, s.weight_decay);
    if (s.first_step) {
        momentum_buffer = g;
    } else {
        momentum_buffer = s.momentum * momentum_buffer + s.one_minus_dampening * g;
    }
    if (Nesterov) {
        g = g + s.momentum * momentum_buffer;
    } else {
        g = momentum_buffer;
    }
    p = p - s.lr * g;
}

}  // namespace rules
}  // namespace fusedopt
