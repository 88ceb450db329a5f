// fusedopt/rules/adamax.h -- AdaMax (Kingma & Ba 2015, section 7.1), torch.optim.Adamax names.
//
//   g <- (maximize ? -g : g) + wd * p
//   m <- b1 * m + (1 - b1) * g
//   u <- max(b2 * u, |g| + eps)          (eps keeps u > 0, placed as torch places it)
//   p <- p - clr * (m / u),   clr = lr / (1 - b1^t)
#pragma once
#include "common.h"

namespace fusedopt {
namespace rules {

template <typename T>
struct AdamaxScalars {
    T clr;  // lr / (1 - beta1^t), computed on the host
    T beta1;
    T one_minus_beta1;
    T beta2;
    T eps;
    T weight_decay;
};

template <typename T, bool Maximize, int WD>
FUSEDOPT_HD void adamax_update(T& p, T g, T& m, T& u, const AdamaxScalars<T>& s) {
    g = effective_grad<T, Maximize, WD>(g, p, s.weight_decay);
    m = s.beta1 * m + s.one_minus_beta1 * g;
    u = fo_max(s.beta2 * u, fo_abs(g) + s.eps);
    p = p - s.clr * (m / u);
}

}  // namespace rules
}  // namespace fusedopt
