// csrc/cpu/kernels.h -- the interface between the bindings (argument checks, GIL) and the OpenMP
// loops. The loops are compiled once per instruction set (generic x86-64 and AVX2, see
// CMakeLists.txt); each copy lives in its own namespace and the bindings pick one at run time.
#pragma once
#include <cstdint>

#include "fusedopt/rules.h"
#include "fusedopt/slots.h"

namespace fusedopt {
namespace cpu {

// The dtypes of params (and grads). float16 and bfloat16 params ("16-bit params") take float32
// states and float32 master weights, and compute in float32.
enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };
constexpr int kDTypes = 4;
inline bool is_16bit(DType d) { return d == DType::kFloat16 || d == DType::kBFloat16; }
inline int itemsize(DType d) { return is_16bit(d) ? 2 : d == DType::kFloat32 ? 4 : 8; }

// One tensor of a multi-tensor call: its arrays and its place in the global element range.
// The pointers are the slots of fusedopt/slots.h in that order (kParam, kGrad, kState0..2,
// kMaster). Unused pointers are null. `offset` is the number of elements in all earlier tensors.
struct Segment {
    void* param;
    const void* grad;
    void* state[3];
    void* master;  // float32 master weights of a 16-bit param (or null)
    int64_t size;
    int64_t offset;

    void set(Slot slot, void* p) {
        if (slot == kParam) {
            param = p;
        } else if (slot == kGrad) {
            grad = p;
        } else if (slot == kMaster) {
            master = p;
        } else {
            state[slot - kState0] = p;
        }
    }
};

struct Batch {
    const Segment* segs;
    int64_t nsegs;
    int64_t total;  // sum of sizes
    DType dtype;
    bool master;  // every segment has master weights (16-bit params only): the rule updates
                  // them, and the param receives them rounded to nearest even
};

// One update function per rule: the record's scalars as float64 (cast once to the math type
// inside: the array dtype, float32 for 16-bit params), its flags (they select the template
// instance), and the AMP grad scale: when not null the rule sees g / (M)*grad_scale, as CUDA's
// Amp instance does.
template <typename Scalars, typename Flags>
using RuleFn = void (*)(const Batch&, const Scalars&, const Flags&, const float* grad_scale);

// The kernel set of one instruction set.
struct KernelTable {
    const char* name;
    RuleFn<rules::SgdScalars<double>, rules::SgdFlags> sgd;
    RuleFn<rules::AdagradScalars<double>, rules::AdagradFlags> adagrad;
    RuleFn<rules::RmspropScalars<double>, rules::RmspropFlags> rmsprop;
    RuleFn<rules::AdamScalars<double>, rules::AdamFlags> adam;
    RuleFn<rules::AdamaxScalars<double>, rules::AdamaxFlags> adamax;
    // Sum of squares of every element (params only), float64, fixed blocks in a fixed order
    // (float32 and float64 batches).
    double (*sum_squares)(const Batch&);
    // params[i] *= (T)factor (float32 and float64 batches).
    void (*scale)(const Batch&, double factor);
    // Whether any element (params slot) is infinite or NaN (AMP's check; every dtype).
    bool (*nonfinite)(const Batch&);
};

// The bandwidth probe of the benchmarks (csrc/cpu/stream.cpp), outside the production table:
// reads `reads` streams (param, grad, state[0..]) and writes the first `writes` of the writable
// ones, with one add per element.
using StreamFn = void (*)(const Batch&, int reads, int writes);

namespace generic { const KernelTable& table(); StreamFn stream(); }
namespace avx2 { const KernelTable& table(); StreamFn stream(); }
namespace avx512 { const KernelTable& table(); StreamFn stream(); }

// Elements per block of the deterministic reductions: the partition depends on this constant
// only, never on the number of threads.
constexpr int64_t kReduceBlock = 16384;

}  // namespace cpu
}  // namespace fusedopt
