// csrc/cpu/stream.cpp -- the bandwidth probe of the benchmarks (fusedopt._core.stream), kept out
// of the production kernel table. Compiled once per instruction set like kernels.cpp, so that the
// probe moves memory with the vector width of the kernels it is compared with.
#include <cstdint>

#include "kernels.h"
#include "loops.h"
#include "parallel.h"

namespace fusedopt {
namespace cpu {
namespace FUSEDOPT_ISA {
namespace {

// Reads R streams (param, grad, state0, state1, state2) and writes W of (param, state0, ...).
template <typename T, int R, int W>
void stream_loop(const Batch& b) {
    parallel_for_elements(b, [&](const Segment& sg, int64_t lo, int64_t hi) {
        const T* in[5] = {as<T>(sg.param), as<T>(sg.grad), as<T>(sg.state[0]),
                          as<T>(sg.state[1]), as<T>(sg.state[2])};
        T* out[4] = {as<T>(sg.param), as<T>(sg.state[0]), as<T>(sg.state[1]),
                     as<T>(sg.state[2])};
        FUSEDOPT_IVDEP
        for (int64_t i = lo; i < hi; ++i) {
            T acc = T(0);
#pragma GCC unroll 8
            for (int r = 0; r < R; ++r) acc = acc + in[r][i];
#pragma GCC unroll 8
            for (int w = 0; w < W; ++w) out[w][i] = acc;
        }
    });
}

template <typename T, int R>
void stream_w(const Batch& b, int writes) {
    switch (writes) {
        case 0: stream_loop<T, R, 0>(b); break;
        case 1: stream_loop<T, R, 1>(b); break;
        case 2: if (R >= 3) stream_loop<T, R, 2>(b); break;
        case 3: if (R >= 4) stream_loop<T, R, 3>(b); break;
        case 4: if (R >= 5) stream_loop<T, R, 4>(b); break;
    }
}

template <typename T>
void stream_typed(const Batch& b, int reads, int writes) {
    switch (reads) {
        case 1: stream_w<T, 1>(b, writes); break;
        case 2: stream_w<T, 2>(b, writes); break;
        case 3: stream_w<T, 3>(b, writes); break;
        case 4: stream_w<T, 4>(b, writes); break;
        case 5: stream_w<T, 5>(b, writes); break;
    }
}

void stream_any(const Batch& b, int reads, int writes) {
    if (b.dtype == DType::kFloat32) {
        stream_typed<float>(b, reads, writes);
    } else {
        stream_typed<double>(b, reads, writes);
    }
}

}  // namespace

StreamFn stream() { return &stream_any; }

}  // namespace FUSEDOPT_ISA
}  // namespace cpu
}  // namespace fusedopt
