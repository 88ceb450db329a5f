// fusedopt/rules/adagrad.h -- Adagrad (Duchi, Hazan & Singer 2011), torch.optim.Adagrad names.
//
//   g    <- (maximize ? -g : g) + wd * p
//   sum  <- sum + g * g
//   p    <- p - lr_t * (g / (sqrt(sum + eps_root) + eps)),   lr_t = lr / (1 + (t - 1) * lr_decay)
#pragma once
#include "common.h"

namespace fusedopt {
namespace rules {

// lr_t: the decayed learning rate of step t, computed on the host.
#define FUSEDOPT_ADAGRAD_SCALARS(X) X(T, lr_t) X(T, eps) X(T, eps_root) X(T, weight_decay)
#define FUSEDOPT_ADAGRAD_FLAGS(X) X(bool, maximize) X(int, weight_decay_mode)

template <typename T>
struct AdagradScalars {
    FUSEDOPT_SCALARS(AdagradScalars, FUSEDOPT_ADAGRAD_SCALARS)
};
struct AdagradFlags {
    FUSEDOPT_FLAGS(FUSEDOPT_ADAGRAD_FLAGS)
};

template <typename T, bool Maximize, int WD>
FUSEDOPT_HD void adagrad_update(T& p, T g, T& sum, const AdagradScalars<T>& s) {
    g = effective_grad<T, Maximize, WD>(g, p, s.weight_decay);
    sum = sum + g * g;
    const T denom = fo_sqrt(sum + s.eps_root) + s.eps;
    p = p - s.lr_t * (g / denom);
}

}  // namespace rules
}  // namespace fusedopt
