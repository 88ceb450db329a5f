// fusedopt/rules/rmsprop.h -- RMSProp (Hinton, lecture 6e), centered variant (Graves 2013),
// torch.optim.RMSprop names.
//
//   g          <- (maximize ? -g : g) + wd * p
//   square_avg <- alpha * square_avg + (1 - alpha) * (g * g)
//   centered:  grad_avg <- alpha * grad_avg + (1 - alpha) * g
//              denom = sqrt(square_avg - grad_avg * grad_avg + eps_root) + eps
//   else:      denom = sqrt(square_avg + eps_root) + eps
//   momentum > 0: momentum_buffer <- momentum * momentum_buffer + g / denom
//                 p <- p - lr * momentum_buffer
//   else:         p <- p - lr * (g / denom)
#pragma once
#include "common.h"

namespace fusedopt {
namespace rules {

#define FUSEDOPT_RMSPROP_SCALARS(X)                                                        \
    X(T, lr) X(T, alpha) X(T, one_minus_alpha) X(T, eps) X(T, eps_root) X(T, weight_decay) \
    X(T, momentum)
#define FUSEDOPT_RMSPROP_FLAGS(X) \
    X(bool, maximize) X(int, weight_decay_mode) X(bool, centered) X(bool, has_momentum)

template <typename T>
struct RmspropScalars {
    FUSEDOPT_SCALARS(RmspropScalars, FUSEDOPT_RMSPROP_SCALARS)
};
struct RmspropFlags {
    FUSEDOPT_FLAGS(FUSEDOPT_RMSPROP_FLAGS)
};

// `grad_avg` is read and written only when Centered, `momentum_buffer` only when Momentum.
template <typename T, bool Maximize, int WD, bool Centered, bool Momentum>
FUSEDOPT_HD void rmsprop_update(T& p, T g, T& square_avg, T& grad_avg, T& momentum_buffer,
                                const RmspropScalars<T>& s) {
    g = effective_grad<T, Maximize, WD>(g, p, s.weight_decay);
    square_avg = s.alpha * square_avg + s.one_minus_alpha * (g * g);
    T var = square_avg;
    if (Centered) {
        grad_avg = s.alpha * grad_avg + s.one_minus_alpha * g;
        var = square_avg - grad_avg * grad_avg;
    }
    const T denom = fo_sqrt(var + s.eps_root) + s.eps;
    if (Momentum) {
        momentum_buffer = s.momentum * momentum_buffer + g / denom;
        p = p - s.lr * momentum_buffer;
    } else {
        p = p - s.lr * (g / denom);
    }
}

}  // namespace rules
}  // namespace fusedopt
