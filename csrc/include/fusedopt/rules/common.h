// fusedopt/rules/common.h -- what every rule shares: how weight decay is applied.
//
// Notation of every rule header (the same in fusedopt.reference and fusedopt.ops): p the param,
// g the grad, t the 1-based step, wd = weight_decay, b1, b2 = beta1, beta2; the states carry the
// names of the optimizers' state keys (exp_avg, exp_avg_sq, max_exp_avg_sq, momentum_buffer, sum,
// square_avg, grad_avg, exp_inf).
#pragma once
#include "../hd.h"
#include "../scalars.h"

namespace fusedopt {
namespace rules {

// How weight_decay enters an update (the record's weight_decay_mode, set once by
// fusedopt._scalars; no backend derives it again).
//   kNone:      no decay (weight_decay == 0); nothing is computed, so p's bits never leak into g.
//   kL2:        L2 penalty folded into the gradient, g <- g + wd * p (torch's weight_decay).
//   kDecoupled: decoupled decay (Loshchilov & Hutter), p <- p * (1 - lr * wd) before the update.
enum WeightDecay : int { kNone = 0, kL2 = 1, kDecoupled = 2 };

// The gradient as the rule sees it: sign flipped for maximization, plus the L2 term.
template <typename T, bool Maximize, int WD>
FUSEDOPT_HD T effective_grad(T g, T p, T weight_decay) {
    if (Maximize) g = -g;
    if (WD == kL2) g = g + weight_decay * p;
    return g;
}

}  // namespace rules
}  // namespace fusedopt
