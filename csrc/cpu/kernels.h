// csrc/cpu/kernels.h -- the interface between the bindings (argument checks, GIL) and the OpenMP
// loops. The loops are compiled once per instruction set (generic x86-64 and AVX2, see
// CMakeLists.txt); each copy lives in its own namespace and the bindings pick one at run time.
#pragma once
#include <cstdint>

namespace fusedopt {
namespace cpu {

enum class DType : int { kFloat32 = 0, kFloat64 = 1 };

// One tensor of a multi-tensor call: its arrays and its place in the global element range.
// Unused state pointers are null. `offset` is the number of elements in all earlier tensors.
struct Segment {
    void* param;
    const void* grad;
    void* state[3];
    int64_t size;
    int64_t offset;
};

struct Batch {
    const Segment* segs;
    int64_t nsegs;
    int64_t total;  // sum of sizes
    DType dtype;
};

// Per-step scalars as float64, computed once by the caller; the loops cast each once to the
// array dtype. Flags select the template instance.
struct SgdArgs {
    double lr, momentum, one_minus_dampening, weight_decay;
    bool first_step, nesterov, maximize, has_momentum;
    int weight_decay_mode;
};
struct AdagradArgs {
    double clr, eps, eps_root, weight_decay;
    bool maximize;
    int weight_decay_mode;
};
struct RmspropArgs {
    double lr, alpha, one_minus_alpha, eps, eps_root, weight_decay, momentum;
    bool maximize, centered, has_momentum;
    int weight_decay_mode;
};
struct AdamArgs {
    double lr, beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction1, bias_correction2,
        eps, eps_root, weight_decay, decay;
    bool maximize, amsgrad;
    int weight_decay_mode;
};
struct AdamaxArgs {
    double clr, beta1, one_minus_beta1, beta2, eps, weight_decay;
    bool maximize;
    int weight_decay_mode;
};

// The kernel set of one instruction set.
struct KernelTable {
    const char* name;
    void (*sgd)(const Batch&, const SgdArgs&);
    void (*adagrad)(const Batch&, const AdagradArgs&);
    void (*rmsprop)(const Batch&, const RmspropArgs&);
    void (*adam)(const Batch&, const AdamArgs&);
    void (*adamax)(const Batch&, const AdamaxArgs&);
    // Sum of squares of every element (params only), float64, fixed blocks in a fixed order.
    double (*sum_squares)(const Batch&);
    // params[i] *= (T)factor.
    void (*scale)(const Batch&, double factor);
    // Bandwidth probe: reads `reads` streams (param, grad, state[0..]) and writes the first
    // `writes` of the writable ones, with one add per element.
    void (*stream)(const Batch&, int reads, int writes);
};

namespace generic { const KernelTable& table(); }
namespace avx2 { const KernelTable& table(); }
namespace avx512 { const KernelTable& table(); }

// Elements per block of the deterministic reductions: the partition depends on this constant
// only, never on the number of threads.
constexpr int64_t kReduceBlock = 16384;

}  // namespace cpu
}  // namespace fusedopt
