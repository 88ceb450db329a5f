// fusedopt/rules/adam.h -- Adam (Kingma & Ba 2015) with bias correction, AdamW's decoupled weight
// decay (Loshchilov & Hutter 2019), AMSGrad (Reddi et al. 2018), optax's eps_root.
//
//   g              <- (maximize ? -g : g) + wd * p        (Adam's L2 form)
//   p              <- p * decay,  decay = 1 - lr * wd     (AdamW's decoupled form, instead)
//   exp_avg        <- b1 * exp_avg + (1 - b1) * g
//   exp_avg_sq     <- b2 * exp_avg_sq + (1 - b2) * (g * g)
//   max_exp_avg_sq <- max(max_exp_avg_sq, exp_avg_sq)     (amsgrad; it replaces exp_avg_sq below)
//   v_hat = exp_avg_sq * inv_bias_correction2,  inv_bias_correction2 = 1 / (1 - b2^t)
//   p              <- p - step_size * exp_avg / (sqrt(v_hat + eps_root) + eps),
//                     step_size = lr / (1 - b1^t)
// That is lr * m_hat / (sqrt(v_hat + eps_root) + eps) with the bias corrections folded into two
// host scalars: one division and one square root per element (as DeepSpeed's CPU Adam), where
// dividing by each bias correction would cost two more divisions.
#pragma once
#include "common.h"

namespace fusedopt {
namespace rules {

// step_size: lr / (1 - beta1^t); inv_bias_correction2: 1 / (1 - beta2^t); decay: 1 - lr *
// weight_decay (decoupled weight decay only, else 1). All computed on the host in float64.
#define FUSEDOPT_ADAM_SCALARS(X)                                                        \
    X(T, step_size) X(T, beta1) X(T, one_minus_beta1) X(T, beta2) X(T, one_minus_beta2) \
    X(T, inv_bias_correction2) X(T, eps) X(T, eps_root) X(T, weight_decay) X(T, decay)
#define FUSEDOPT_ADAM_FLAGS(X) X(bool, maximize) X(int, weight_decay_mode) X(bool, amsgrad)

template <typename T>
struct AdamScalars {
    FUSEDOPT_SCALARS(AdamScalars, FUSEDOPT_ADAM_SCALARS)
};
struct AdamFlags {
    FUSEDOPT_FLAGS(FUSEDOPT_ADAM_FLAGS)
};

// `max_exp_avg_sq` is read and written only when AMSGrad.
template <typename T, bool Maximize, int WD, bool AMSGrad>
FUSEDOPT_HD void adam_update(T& p, T g, T& exp_avg, T& exp_avg_sq, T& max_exp_avg_sq,
                             const AdamScalars<T>& s) {
    g = effective_grad<T, Maximize, WD>(g, p, s.weight_decay);
    if (WD == kDecoupled) p = p * s.decay;
    exp_avg = s.beta1 * exp_avg + s.one_minus_beta1 * g;
    exp_avg_sq = s.beta2 * exp_avg_sq + s.one_minus_beta2 * (g * g);
    T v = exp_avg_sq;
    if (AMSGrad) {
        max_exp_avg_sq = fo_max(max_exp_avg_sq, exp_avg_sq);
        v = max_exp_avg_sq;
    }
    const T v_hat = v * s.inv_bias_correction2;
    p = p - s.step_size * exp_avg / (fo_sqrt(v_hat + s.eps_root) + s.eps);
}

}  // namespace rules
}  // namespace fusedopt
