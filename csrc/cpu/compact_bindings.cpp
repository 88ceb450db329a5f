// csrc/cpu/compact_bindings.cpp -- the arguments of compact-state calls (see compact.h): the
// lists into CompactTensors, the tables of the 8-bit format, the kernel copy of the ISA in use.
//
// The checks here refuse everything fusedopt._checks.check_lists refuses for these lists (array
// types, dtypes, shapes, block counts, signedness when a slot names it, contiguity, alignment,
// writeability, aliasing), before any kernel runs, so that fusedopt.ops calls this first and runs
// the Python checks only to name a refused call's fault in the library's words (its messages);
// a direct call of _core cannot make a kernel read or write out of bounds either.
#include "compact_bindings.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "fusedopt/compact.h"
#include "nogil.h"

namespace fusedopt {
namespace cpu {
namespace {

constexpr int kNpyUByte = 2;  // NPY_UBYTE
constexpr int kCContiguous = 0x0001;
constexpr int kAligned = 0x0100;
constexpr int kWriteable = 0x0400;

float g_map[2][kQuantBlock];
float g_thresholds[2][kQuantBlock];
int g_encode[2][2 * kEncodeSpan];
uint8_t g_planes[2][4 * kQuantBlock];      // the maps as byte planes (CompactCall)
uint8_t g_thr_planes[2][4 * kQuantBlock];  // the thresholds as byte planes
float g_lines[2][kEncodeLines];            // the VBMI encoder's lines (CompactCall)
bool g_tables = false;
PyObject* g_qtype = nullptr;  // fusedopt.quant.QuantizedState (a held reference), or null

// The AVX-512 copy decodes 8-bit state with VBMI byte permutes where the CPU has them; the
// environment variable FUSEDOPT_NO_VBMI (any value) turns that off (the tests compare both).
bool has_vbmi() {
#if defined(__x86_64__) || defined(__i386__)
    static const bool v = __builtin_cpu_supports("avx512vbmi") && !std::getenv("FUSEDOPT_NO_VBMI");
    return v;
#else
    return false;
#endif
}

// CompactCall::encode_lines of a map, from its entries and fusedopt.quant's definition: the
// magnitudes of decade E (values in [10^-(E+1), 10^-E)) are equal parts' midpoints, so the
// magnitude index i (0: the smallest nonzero) of the entry at or below a = |y| is the floor of
// x(a) = (a - 10^-(E+1)) * slope - 1/2 + (index of the decade's first entry); the lines hold
// z = x + 1 = a * slope - intercept. Only near a threshold must the floor be exact (there x is
// half-way between two integers); near an entry either neighbour is right, as the encoder's
// threshold comparison then moves the candidate to the nearest code. Any boundary between the
// decade's extreme entries does: the float32 10^-k with its low 4 bits replaced by the index
// of the decade above it. tools/exhaustive_encode.py checks every float y in [-1 - 2^-23, 1 + 2^-23].
void fill_encode_lines(const float* map, bool qsigned, float* out) {
    const int first = qsigned ? 128 : 1;  // the smallest positive entry; 1.0 is the last
    for (int e = 0; e < 7; ++e) {
        const double lo = std::pow(10.0, -(e + 1)), hi = std::pow(10.0, -e);
        int i0 = -1, count = 0;
        for (int j = first; j < kQuantBlock - 1; ++j)
            if (map[j] >= lo && map[j] < hi) {
                if (i0 < 0) i0 = j - first;
                ++count;
            }
        const double slope = count / (hi - lo);
        out[32 + e] = static_cast<float>(slope);
        out[48 + e] = static_cast<float>(lo * slope - 0.5 - i0);
    }
    for (int e = 7; e < 16; ++e) out[32 + e] = out[48 + e] = 0.0f;
    for (int o = 0; o < 32; ++o) {  // octave [2^(o-31), 2^(o-30))
        const double bottom = std::ldexp(1.0, o - 31), top = 2.0 * bottom;
        unsigned bits = 0;
        for (int k = 1; k <= 6; ++k) bits += std::pow(10.0, -k) > bottom;  // its decade (<= 6)
        for (int k = 1; k <= 6; ++k) {
            const double d = std::pow(10.0, -k);
            if (bottom < d && d < top)
                bits = (fo_float_bits(static_cast<float>(d)) & ~0xfu) | static_cast<unsigned>(k - 1);
        }
        out[o] = fo_bits_float(bits);
    }
}

[[noreturn]] void type_error(const std::string& msg) { throw py::type_error(msg); }
[[noreturn]] void value_error(const std::string& msg) { throw py::value_error(msg); }

std::string item(const std::string& list, Py_ssize_t i) {
    return list + "[" + std::to_string(i) + "]";
}

// The items of a list or tuple (a new reference to the sequence is held by the caller).
py::sequence as_list(py::handle h, const std::string& name) {
    if (!PyList_Check(h.ptr()) && !PyTuple_Check(h.ptr()))
        type_error(name + " must be a list or tuple of numpy arrays, got " +
                   Py_TYPE(h.ptr())->tp_name);
    return py::reinterpret_borrow<py::sequence>(h);
}

// A uint8 codes array: C-contiguous, writeable, the shape of the param `p`.
void* codes_of(PyObject* o, const std::string& name, const Array& p) {
    if (!py::detail::npy_api::get().PyArray_Check_(o))
        type_error(name + " must be a numpy.ndarray, got " + Py_TYPE(o)->tp_name);
    const auto* a = py::detail::array_proxy(o);
    if (py::detail::array_descriptor_proxy(a->descr)->type_num != kNpyUByte)
        type_error(name + " must have dtype uint8");
    if (!(a->flags & kCContiguous) || !(a->flags & kAligned) || !(a->flags & kWriteable))
        value_error(name + " must be C-contiguous, aligned and writeable");
    bool same = a->nd == p.ndim();
    for (int d = 0; same && d < a->nd; ++d) same = a->dimensions[d] == p.dim(d);
    if (!same) value_error(name + ": shape does not match " + p.name() + " " + p.shape());
    return a->data;
}

// One array of the call for the aliasing check (the message is built only on a fault).
struct Span {
    uintptr_t lo, hi;
    bool written;
    const std::string* list;
    Py_ssize_t index;
    const char* part;  // "", ".codes" or ".absmax"
};

void add_span(std::vector<Span>& spans, const void* data, int64_t bytes, bool written,
              const std::string* list, Py_ssize_t i, const char* part = "") {
    if (bytes <= 0) return;
    const uintptr_t lo = reinterpret_cast<uintptr_t>(data);
    spans.push_back({lo, lo + static_cast<uintptr_t>(bytes), written, list, i, part});
}

// The format's tables and the encoder's choice into a call.
void set_format(CompactCall& c) {
    c.grad_scale = nullptr;
    for (int sgn = 0; sgn < 2; ++sgn) {  // the format's tables: unsigned, signed
        c.map[sgn] = g_map[sgn];
        c.thresholds[sgn] = g_thresholds[sgn];
        c.encode[sgn] = g_encode[sgn];
        c.encode_lines[sgn] = g_lines[sgn];
        c.map_planes[sgn] = g_planes[sgn];
        c.thr_planes[sgn] = g_thr_planes[sgn];
    }
    c.vbmi = has_vbmi();
}

}  // namespace

void set_quant_tables(py::handle map_unsigned, py::handle thr_unsigned, py::handle map_signed,
                      py::handle thr_signed, py::handle encode_unsigned,
                      py::handle encode_signed, py::handle quantized_type) {
    if (!quantized_type.is_none()) {
        if (!PyType_Check(quantized_type.ptr()))
            type_error("quantized_type must be a class (fusedopt.quant.QuantizedState)");
        Py_INCREF(quantized_type.ptr());  // held for the process: the class outlives every call
        Py_XDECREF(g_qtype);
        g_qtype = quantized_type.ptr();
    }
    const py::handle h[4] = {map_unsigned, thr_unsigned, map_signed, thr_signed};
    const char* names[4] = {"map_unsigned", "thresholds_unsigned", "map_signed",
                            "thresholds_signed"};
    for (int k = 0; k < 4; ++k) {
        const Array a = check_array(h[k].ptr(), names[k], -1, false);
        if (a.dtype != DType::kFloat32 || a.size != kQuantBlock)
            type_error(std::string(names[k]) + " must hold 256 float32 values");
        float* dst = (k & 1) ? g_thresholds[k >> 1] : g_map[k >> 1];
        std::memcpy(dst, a.data(), sizeof(float) * kQuantBlock);
    }
    for (int s = 0; s < 2; ++s)
        for (int j = 0; j < kQuantBlock; ++j) {
            const unsigned bits = fo_float_bits(g_map[s][j]);
            const unsigned tbits = fo_float_bits(g_thresholds[s][j]);
            for (int b = 0; b < 4; ++b) {
                g_planes[s][b * kQuantBlock + j] = static_cast<uint8_t>(bits >> (8 * b));
                g_thr_planes[s][b * kQuantBlock + j] = static_cast<uint8_t>(tbits >> (8 * b));
            }
        }
    const py::handle e[2] = {encode_unsigned, encode_signed};
    for (int k = 0; k < 2; ++k) {
        const auto a = py::array_t<int32_t, py::array::c_style | py::array::forcecast>::ensure(e[k]);
        if (!a || a.size() != 2 * kEncodeSpan)
            type_error("the encoding tables must hold " + std::to_string(2 * kEncodeSpan) +
                       " int32 values (fusedopt.quant.encode_table)");
        for (py::ssize_t i = 0; i < a.size(); ++i) {
            const int32_t c = a.data()[i];
            if (c < 0 || c > 255) value_error("an encoding table entry is not a code");
            g_encode[k][i] = c;
        }
        fill_encode_lines(g_map[k], k == 1, g_lines[k]);
    }
    g_tables = true;
}

void collect_compact(CompactArgs& out, py::handle params, py::handle grads, py::handle states,
                     py::handle master_params, unsigned long long step, unsigned long long seed,
                     bool stochastic_rounding) {
    if (!g_tables) throw std::runtime_error("fusedopt._core: set_quant_tables was not called");
    out.tensors.clear();
    out.refs.clear();
    static const std::string kParams = "params", kGrads = "grads", kMaster = "master_params";
    const py::sequence ps = as_list(params, "params"), gs = as_list(grads, "grads");
    const Py_ssize_t n = py::len(ps);
    if (py::len(gs) != static_cast<size_t>(n))
        value_error("grads has " + std::to_string(py::len(gs)) + " arrays but params has " +
                    std::to_string(n));
    // states: a sequence of three (name, list) or (name, list, signed) tuples or None
    // (fusedopt/slots.h's kState0..2); `signed` (a bool): the signedness every 8-bit item of
    // the list must have (fusedopt._checks.SIGNEDNESS)
    const py::sequence st = as_list(states, "states");
    if (py::len(st) != 3) value_error("states must hold three (name, list) pairs or None");
    std::string sname[3];
    py::sequence slist[3] = {py::sequence(), py::sequence(), py::sequence()};
    bool has[3] = {false, false, false};
    int want_signed[3] = {-1, -1, -1};  // -1: not named
    for (int k = 0; k < 3; ++k) {
        const py::object e = st[k];
        if (e.is_none()) continue;
        const py::tuple pair = e.cast<py::tuple>();
        if (pair.size() != 2 && pair.size() != 3)
            value_error("states must hold three (name, list) pairs or None");
        sname[k] = pair[0].cast<std::string>();
        slist[k] = as_list(pair[1], sname[k]);
        if (py::len(slist[k]) != static_cast<size_t>(n))
            value_error(sname[k] + " has " + std::to_string(py::len(slist[k])) +
                        " arrays but params has " + std::to_string(n));
        if (pair.size() == 3) want_signed[k] = pair[2].cast<bool>() ? 1 : 0;
        has[k] = true;
        out.refs.push_back(pair[1]);
    }
    const bool master = !master_params.is_none();
    py::sequence ms;
    if (master) {
        ms = as_list(master_params, "master_params");
        if (py::len(ms) != static_cast<size_t>(n))
            value_error("master_params has a different length than params");
    }
    out.refs.push_back(py::reinterpret_borrow<py::object>(params));
    out.refs.push_back(py::reinterpret_borrow<py::object>(grads));
    if (master) out.refs.push_back(py::reinterpret_borrow<py::object>(master_params));

    thread_local std::vector<Span> spans;  // reused: no allocation once grown
    spans.clear();
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < n; ++i) {
        CompactTensor t{};
        const py::object po = ps[i], go = gs[i];
        const Array p = check_array(po.ptr(), "params", i, true, nullptr, true);
        if (p.dtype == DType::kFloat64)
            type_error(item("params", i) + ": compact state needs float32 math (float32, "
                       "float16 or bfloat16 params)");
        if (stochastic_rounding && p.dtype != DType::kBFloat16)
            value_error("stochastic_rounding=True needs bfloat16 params; " + item("params", i) +
                        " has dtype " + dtype_name(p.dtype));
        const Array g = check_array(go.ptr(), "grads", i, false, &p, true);
        if (!g.same_shape(p)) value_error(item("grads", i) + ": shape does not match params");
        out.refs.push_back(po);
        out.refs.push_back(go);
        add_span(spans, p.data(), p.hi() - p.lo(), true, &kParams, i);
        add_span(spans, g.data(), g.hi() - g.lo(), false, &kGrads, i);
        t.param = p.data();
        t.grad = g.data();
        t.dtype = p.dtype;
        t.size = p.size;
        if (master) {
            const py::object mo = ms[i];
            if (!is_16bit(p.dtype))
                type_error("master_params: float32 master weights belong to float16 or "
                           "bfloat16 params");
            const Array m = check_array(mo.ptr(), "master_params", i, true);
            if (m.dtype != DType::kFloat32 || m.size != p.size)
                type_error(item("master_params", i) + " must be float32 of params' size");
            if (!m.same_shape(p))
                value_error(item("master_params", i) + ": shape does not match params");
            out.refs.push_back(mo);
            add_span(spans, m.data(), m.hi() - m.lo(), true, &kMaster, i);
            t.master = m.data();
        }
        for (int k = 0; k < 3; ++k) {
            if (!has[k]) continue;
            const py::object so = slist[k][i];
            out.refs.push_back(so);
            if (py::detail::npy_api::get().PyArray_Check_(so.ptr())) {
                const Array s = check_array(so.ptr(), sname[k].c_str(), i, true, nullptr, true);
                if ((s.dtype != DType::kFloat32 && s.dtype != DType::kBFloat16) ||
                    s.size != p.size)
                    type_error(item(sname[k], i) + " must be float32 or bfloat16 of the "
                               "param's size");
                if (!s.same_shape(p))
                    value_error(item(sname[k], i) + ": shape does not match params");
                add_span(spans, s.data(), s.hi() - s.lo(), true, &sname[k], i);
                t.state[k] = s.data();
                t.kind[k] = s.dtype == DType::kFloat32 ? StateKind::kFloat32
                                                       : StateKind::kBFloat16;
                continue;
            }
            // a fusedopt.quant.QuantizedState
            const int is_q = g_qtype ? PyObject_IsInstance(so.ptr(), g_qtype) : 1;
            if (is_q < 0) throw py::error_already_set();
            if (!is_q || !py::hasattr(so, "codes") || !py::hasattr(so, "absmax") ||
                !py::hasattr(so, "signed"))
                type_error(item(sname[k], i) + " must be a numpy.ndarray or a "
                           "fusedopt.quant.QuantizedState, got " + Py_TYPE(so.ptr())->tp_name);
            const py::object codes = so.attr("codes"), absmax = so.attr("absmax");
            out.refs.push_back(codes);
            out.refs.push_back(absmax);
            t.state[k] = codes_of(codes.ptr(), item(sname[k], i) + ".codes", p);
            const Array a = check_array(absmax.ptr(), "absmax", i, true);
            const int64_t nb = (p.size + kQuantBlock - 1) / kQuantBlock;
            if (a.dtype != DType::kFloat32 || a.size != nb || a.ndim() != 1)
                value_error(item(sname[k], i) + ".absmax must hold " + std::to_string(nb) +
                            " float32 values in one dimension");
            add_span(spans, t.state[k], p.size, true, &sname[k], i, ".codes");
            add_span(spans, a.data(), a.hi() - a.lo(), true, &sname[k], i, ".absmax");
            t.absmax[k] = static_cast<float*>(a.data());
            t.kind[k] = StateKind::kUInt8;
            const py::object sg = so.attr("signed");
            if (want_signed[k] >= 0) {  // as the Python check: signed == (the list's signedness)
                const int eq = PyObject_RichCompareBool(
                    sg.ptr(), want_signed[k] ? Py_True : Py_False, Py_EQ);
                if (eq < 0) throw py::error_already_set();
                if (!eq)
                    value_error(item(sname[k], i) + " is 8-bit state of the wrong signedness; " +
                                sname[k] + " must be " +
                                (want_signed[k] ? "signed" : "unsigned"));
                t.qsigned[k] = want_signed[k] != 0;
            } else {
                t.qsigned[k] = sg.cast<bool>();
            }
        }
        t.sr_key = fo_sr_key(seed, step, static_cast<unsigned>(i));
        total += t.size;
        if (t.size > 0) out.tensors.push_back(t);
    }
    // No array that is written may overlap any other array of the call (check_lists' rule).
    std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) { return x.lo < y.lo; });
    for (size_t s = 0; s < spans.size(); ++s)
        for (size_t u = s + 1; u < spans.size() && spans[u].lo < spans[s].hi; ++u)
            if (spans[s].written || spans[u].written) {
                const Span& w = spans[s].written ? spans[s] : spans[u];
                const Span& o = spans[s].written ? spans[u] : spans[s];
                value_error(item(*w.list, w.index) + w.part + " shares memory with " +
                            item(*o.list, o.index) + o.part +
                            "; arrays that are updated in place must not alias");
            }
    CompactCall& c = out.call;
    c.tensors = out.tensors.data();
    c.ntensors = static_cast<int64_t>(out.tensors.size());
    c.total = total;
    c.stochastic_rounding = stochastic_rounding;
    set_format(c);
}

uint64_t quant_encode_mismatches(const char* isa, bool qsigned, uint32_t first, uint32_t last,
                                 uint32_t stride) {
    if (!g_tables) throw std::runtime_error("fusedopt._core: set_quant_tables was not called");
    if (stride == 0) value_error("stride must be positive");
    CompactCall c{};
    set_format(c);
    const CompactTable& t = compact_table_for(isa);
    fusedopt::NoGil nogil;
    return t.encode_mismatches(c, qsigned, first, last, stride);
}

const CompactTable& compact_table_for(const char* isa) {
    if (!std::strcmp(isa, "avx512")) return avx512::compact_table();
    if (!std::strcmp(isa, "avx2")) return avx2::compact_table();
    return generic::compact_table();
}

}  // namespace cpu
}  // namespace fusedopt
