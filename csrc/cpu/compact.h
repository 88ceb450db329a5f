// csrc/cpu/compact.h -- the CPU kernels of compact state (issue 10): bfloat16 and 8-bit blockwise
// state, stochastic rounding of bfloat16 params. The interface between the argument collection
// (compact_bindings.cpp) and the loops (compact.cpp, compiled once per instruction set like
// kernels.cpp).
//
// The loop works block by block (fusedopt::kQuantBlock elements). A tensor whose states are all
// bfloat16 or all 8-bit takes one fused pass per block: each element's states are widened or
// dequantized, updated by the rule's functor (fusedopt/functors.h, the same as the plain loop's)
// and rounded to nearest even (bfloat16) in registers; 8-bit values go to an L1 buffer with the
// block's absmax kept as an integer maximum, then are encoded (y = x * (1 / absmax), one
// reciprocal per block: fusedopt/compact.h). The AVX-512 copy looks the 256-entry map and
// thresholds up with in-register permutes (with VBMI: byte permutes, 64 codes at a time); its
// encoder gathers only the bucket's code (a byte table, encode_bytes). Float32 params and
// grads (and float32 master weights) are read and written in place; 16-bit ones pass through a
// float32 buffer, rounded to nearest even or stochastically on store. Any other mix of state
// kinds (float32 beside compact) takes the buffered form of the same pass. One pass over
// memory; the threads take chunks of kCompactChunk elements of one tensor, a multiple of the
// block, so that a block never straddles two threads.
#pragma once
#include <cstdint>

#include "fusedopt/compact.h"
#include "fusedopt/rules.h"
#include "kernels.h"

namespace fusedopt {
namespace cpu {

// How one state tensor is held.
enum class StateKind : int { kFloat32 = 0, kBFloat16 = 1, kUInt8 = 2 };

// One tensor of a compact call. Params and grads are float32, float16 or bfloat16 (`dtype`);
// master weights (16-bit params only) float32 or null. state[k] is null when the rule does not
// use slot k; absmax[k] is set for kUInt8 states only.
struct CompactTensor {
    void* param;
    const void* grad;
    void* master;
    void* state[3];
    float* absmax[3];
    StateKind kind[3];
    bool qsigned[3];  // kUInt8: which map (fusedopt.quant: signed for first moments, momentum)
    DType dtype;
    int64_t size;
    unsigned sr_key;  // fusedopt/compact.h fo_sr_key of (seed, step, this tensor's list index)
};

struct CompactCall {
    const CompactTensor* tensors;
    int64_t ntensors;
    int64_t total;                // elements in all tensors
    bool stochastic_rounding;     // bfloat16 params are rounded with fo_float_to_bf16_sr
    const float* grad_scale;      // AMP: the rule sees g / *grad_scale (or null)
    const float* map[2];          // the dynamic map, [0] unsigned, [1] signed (fusedopt.quant)
    const float* thresholds[2];   // and its encoding thresholds
    const int* encode[2];         // and its encoding table (fusedopt.quant.encode_table)
    const uint8_t* map_planes[2]; // the map's float32 bits as 4 byte planes of 256 (plane b:
                                  // byte b of each entry), for the AVX-512 VBMI decode
    const uint8_t* thr_planes[2]; // and the thresholds', for the VBMI encode
    bool vbmi;                    // the CPU has AVX-512 VBMI (and FUSEDOPT_NO_VBMI is unset)
    const float* encode_lines[2];    // the VBMI encoder's lines (kEncodeLines floats each): see
                                     // compact_bindings.cpp, fill_encode_lines
};

// CompactCall::encode_lines of one map: [0, 32) the decade boundary of each binary octave of
// |y| (2^-31 .. 2^0; its low 4 bits: the decade index above it), [32, 48) the slope and
// [48, 64) the intercept of each decade's line (index 0..6).
constexpr int kEncodeLines = 64;

// Elements per chunk of a thread: a multiple of kQuantBlock.
constexpr int64_t kCompactChunk = 16384;

template <typename Scalars, typename Flags>
using CompactFn = void (*)(const CompactCall&, const Scalars&, const Flags&);

struct CompactTable {
    const char* name;
    CompactFn<rules::SgdScalars<double>, rules::SgdFlags> sgd;
    CompactFn<rules::AdagradScalars<double>, rules::AdagradFlags> adagrad;
    CompactFn<rules::RmspropScalars<double>, rules::RmspropFlags> rmsprop;
    CompactFn<rules::AdamScalars<double>, rules::AdamFlags> adam;
    CompactFn<rules::AdamaxScalars<double>, rules::AdamaxFlags> adamax;
    // How many of the floats with bits first, first + stride, ... <= last (|y| <= 1 + 2^-23)
    // this copy's block encoder (absmax 1) codes otherwise than fo_quant_encode: the check
    // of fusedopt._core.quant_encode_mismatches (tests, tools/exhaustive_encode.py).
    uint64_t (*encode_mismatches)(const CompactCall&, bool qsigned, uint32_t first, uint32_t last,
                                  uint32_t stride);
};

namespace generic { const CompactTable& compact_table(); }
namespace avx2 { const CompactTable& compact_table(); }
namespace avx512 { const CompactTable& compact_table(); }

}  // namespace cpu
}  // namespace fusedopt
