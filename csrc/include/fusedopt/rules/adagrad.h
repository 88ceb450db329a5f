// fusedopt/rules/adagrad.h -- Adagrad (Duchi, Hazan & Singer 2011), torch.optim.Adagrad names.
//
//   g   <- (maximize ? -g : g) + wd * p
//   sum <- sum + g * g
//   p   <- p - clr * (g / (sqrt(sum + eps_root) + eps)),   clr = lr / (1 + (t - 1) * lr_decay)
#pragma once
#include "common.h"

namespace fusedopt {
namespace rules {

template <typename T>
struct AdagradScalars {
    T clr;  // decayed learning rate, computed on the host
    T eps;
    T eps_root;
    T weight_decay;
};

template <typename T, bool Maximize, int WD>
FUSEDOPT_HD void adagrad_update(T& p, T g, T& sum, const AdagradScalars<T>& s) {
    g = effective_grad<T, Maximize, WD>(g, p, s.weight_decay);
    sum = sum + g * g;
    const T denom = fo_sqrt(sum + s.eps_root) + s.eps;
    p = p - s.clr * (g / denom);
}

}  // namespace rules
}  // namespace fusedopt
