// fusedopt/rules/rmsprop.h -- RMSProp (Hinton, lecture 6e), centered variant (Graves 2013),
// torch.optim.RMSprop names.
//
//   g   <- (maximize ? -g : g) + wd * p
//   sq  <- alpha * sq + (1 - alpha) * (g * g)
//   centered: ga <- alpha * ga + (1 - alpha) * g;  denom = sqrt(sq - ga * ga + eps_root) + eps
//   else:                                          denom = sqrt(sq + eps_root) + eps
//   momentum > 0: buf <- momentum * buf + g / denom;  p <- p - lr * buf
//   else:                                            p <- p - lr * (g / denom)
#pragma once
#include "common.h"

namespace fusedopt {
namespace rules {

template <typename T>
struct RmspropScalars {
    T lr;
    T alpha;
    T one_minus_alpha;
    T eps;
    T eps_root;
    T weight_decay;
    T momentum;
};

// `ga` is read and written only when Centered, `buf` only when Momentum.
template <typename T, bool Maximize, int WD, bool Centered, bool Momentum>
FUSEDOPT_HD void rmsprop_update(T& p, T g, T& sq, T& ga, T& buf, const RmspropScalars<T>& s) {
    g = effective_grad<T, Maximize, WD>(g, p, s.weight_decay);
    sq = s.alpha * sq + s.one_minus_alpha * (g * g);
    T var = sq;
    if (Centered) {
        ga = s.alpha * ga + s.one_minus_alpha * g;
        var = sq - ga * ga;
    }
    const T denom = fo_sqrt(var + s.eps_root) + s.eps;
    if (Momentum) {
        buf = s.momentum * buf + g / denom;
        p = p - s.lr * buf;
    } else {
        p = p - s.lr * (g / denom);
    }
}

}  // namespace rules
}  // namespace fusedopt
