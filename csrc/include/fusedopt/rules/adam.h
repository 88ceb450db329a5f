// fusedopt/rules/adam.h -- Adam (Kingma & Ba 2015) with bias correction, AdamW's decoupled weight
// decay (Loshchilov & Hutter 2019), AMSGrad (Reddi et al. 2018), optax's eps_root.
//
//   g     <- (maximize ? -g : g) + wd * p          (Adam's L2 form)
//   p     <- p * (1 - lr * wd)                      (AdamW's decoupled form, instead)
//   m     <- b1 * m + (1 - b1) * g
//   v     <- b2 * v + (1 - b2) * (g * g)
//   vmax  <- max(vmax, v)                           (amsgrad; vmax replaces v below)
//   m_hat  = m / (1 - b1^t),  v_hat = v / (1 - b2^t)
//   p     <- p - lr * m_hat / (sqrt(v_hat + eps_root) + eps)
#pragma once
#include "common.h"

namespace fusedopt {
namespace rules {

template <typename T>
struct AdamScalars {
    T lr;
    T beta1;
    T one_minus_beta1;
    T beta2;
    T one_minus_beta2;
    T bias_correction1;  // 1 - beta1^t
    T bias_correction2;  // 1 - beta2^t
    T eps;
    T eps_root;
    T weight_decay;
    T decay;  // 1 - lr * weight_decay (decoupled only)
};

// `vmax` is read and written only when AMSGrad.
template <typename T, bool Maximize, int WD, bool AMSGrad>
FUSEDOPT_HD void adam_update(T& p, T g, T& m, T& v, T& vmax, const AdamScalars<T>& s) {
    g = effective_grad<T, Maximize, WD>(g, p, s.weight_decay);
    if (WD == kDecoupled) p = p * s.decay;
    m = s.beta1 * m + s.one_minus_beta1 * g;
    v = s.beta2 * v + s.one_minus_beta2 * (g * g);
    T v_used = v;
    if (AMSGrad) {
        vmax = fo_max(vmax, v);
        v_used = vmax;
    }
    const T m_hat = m / s.bias_correction1;
    const T v_hat = v_used / s.bias_correction2;
    p = p - s.lr * m_hat / (fo_sqrt(v_hat + s.eps_root) + s.eps);
}

}  // namespace rules
}  // namespace fusedopt
