// fusedopt/rules/adamax.h -- AdaMax (Kingma & Ba 2015, section 7.1), torch.optim.Adamax names.
//
//   g       <- (maximize ? -g : g) + wd * p
//   exp_avg <- b1 * exp_avg + (1 - b1) * g
//   exp_inf <- max(b2 * exp_inf, |g| + eps)      (eps keeps exp_inf > 0, placed as torch does)
//   p       <- p - step_size * (exp_avg / exp_inf),   step_size = lr / (1 - b1^t)
#pragma once
#include "common.h"

namespace fusedopt {
namespace rules {

// step_size: lr / (1 - beta1^t), computed on the host.
#define FUSEDOPT_ADAMAX_SCALARS(X) \
    X(T, step_size) X(T, beta1) X(T, one_minus_beta1) X(T, beta2) X(T, eps) X(T, weight_decay)
#define FUSEDOPT_ADAMAX_FLAGS(X) X(bool, maximize) X(int, weight_decay_mode)

template <typename T>
struct AdamaxScalars {
    FUSEDOPT_SCALARS(AdamaxScalars, FUSEDOPT_ADAMAX_SCALARS)
};
struct AdamaxFlags {
    FUSEDOPT_FLAGS(FUSEDOPT_ADAMAX_FLAGS)
};

template <typename T, bool Maximize, int WD>
FUSEDOPT_HD void adamax_update(T& p, T g, T& exp_avg, T& exp_inf, const AdamaxScalars<T>& s) {
    g = effective_grad<T, Maximize, WD>(g, p, s.weight_decay);
    exp_avg = s.beta1 * exp_avg + s.one_minus_beta1 * g;
    exp_inf = fo_max(s.beta2 * exp_inf, fo_abs(g) + s.eps);
    p = p - s.step_size * (exp_avg / exp_inf);
}

}  // namespace rules
}  // namespace fusedopt
