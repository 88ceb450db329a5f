// csrc/cpu/compact_bindings.h -- the argument side of compact-state calls (compact_bindings.cpp),
// used by csrc/bindings.cpp.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "arrays.h"
#include "compact.h"

namespace fusedopt {
namespace cpu {

// One call's tensors and a reference to every Python object they point into (kept until the
// call returns, with the GIL held when it is destroyed).
struct CompactArgs {
    std::vector<CompactTensor> tensors;
    std::vector<py::object> refs;
    CompactCall call{};
};

// Copies the tables of fusedopt.quant: dynamic_map and thresholds (float32, 256 values each)
// and encode_table (int32 codes), unsigned and signed; `quantized_type` (or None): the class
// fusedopt.quant.QuantizedState, the only 8-bit state item collect_compact takes once given.
void set_quant_tables(py::handle map_unsigned, py::handle thr_unsigned, py::handle map_signed,
                      py::handle thr_signed, py::handle encode_unsigned,
                      py::handle encode_signed, py::handle quantized_type);

// Fills `out` from the lists of a call: params, grads (float32, float16, bfloat16), `states` a
// sequence of three (name, list) or (name, list, signed) tuples or None (slots kState0..2; each
// item a float32 or bfloat16 array, or a QuantizedState, of that signedness where `signed` is
// given), the optional float32 master weights. Refuses (TypeError / ValueError naming the
// argument) whatever fusedopt._checks.check_lists refuses for these lists, aliasing included.
void collect_compact(CompactArgs& out, py::handle params, py::handle grads, py::handle states,
                     py::handle master_params, unsigned long long step, unsigned long long seed,
                     bool stochastic_rounding);

// CompactTable::encode_mismatches of the copy `isa` with the format's tables (GIL released).
uint64_t quant_encode_mismatches(const char* isa, bool qsigned, uint32_t first, uint32_t last,
                                 uint32_t stride);

// The compact kernels of the instruction set named `isa` (KernelTable::name).
const CompactTable& compact_table_for(const char* isa);

}  // namespace cpu
}  // namespace fusedopt
