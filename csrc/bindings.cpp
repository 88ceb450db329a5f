// csrc/bindings.cpp -- the pybind11 module fusedopt._core.
//
// Only argument checks, the conversion of the scalar records, the choice of instruction set and
// the GIL release live here; the math is in csrc/include/fusedopt/rules/, the loop in csrc/cpu/.
// Per-step scalars arrive as one fusedopt._scalars record (float64, computed and checked there:
// the same numbers the NumPy reference uses); this layer checks the arrays.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/arrays.h"
#include "cpu/compact_bindings.h"
#include "cpu/kernels.h"
#include "cpu/lbfgs_compact.h"
#include "cpu/nogil.h"
#include "fusedopt/rules.h"
#include "fusedopt/slots.h"

namespace py = pybind11;
using namespace fusedopt::cpu;

void register_lbfgs(py::module_& m);  // csrc/cpu/lbfgs_bindings.cpp
void register_partials(py::module_& m);  // csrc/cpu/partials_bindings.cpp
void register_tensors(py::module_& m);  // csrc/cpu/tensor_bindings.cpp

namespace {

const KernelTable* g_kernels = nullptr;
StreamFn g_stream = nullptr;  // the bandwidth probe of the same instruction set

bool cpu_has(const char* feature) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (!std::strcmp(feature, "avx2")) return __builtin_cpu_supports("avx2");
    if (!std::strcmp(feature, "avx512"))
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#endif
    (void)feature;
    return false;
}

const KernelTable& kernels() { return *g_kernels; }

// The kernel copies, best first; `auto` takes the first the CPU runs.
struct IsaEntry {
    const char* name;
    const KernelTable& (*table)();
    StreamFn (*stream)();
};
constexpr IsaEntry kIsas[] = {{"avx512", &avx512::table, &avx512::stream},
                              {"avx2", &avx2::table, &avx2::stream},
                              {"generic", &generic::table, &generic::stream}};

void set_isa(const std::string& name) {
    for (const IsaEntry& e : kIsas) {
        const bool runs = !std::strcmp(e.name, "generic") || cpu_has(e.name);
        if (name == e.name) {
            if (!runs) throw py::value_error("isa: this CPU cannot run '" + name + "'");
            g_kernels = &e.table();
            g_stream = e.stream();
            return;
        }
        if (name == "auto" && runs) {
            g_kernels = &e.table();
            g_stream = e.stream();
            return;
        }
    }
    throw py::value_error("isa must be 'auto', 'avx512', 'avx2' or 'generic', got '" + name + "'");
}

std::vector<std::string> available_isas() {
    std::vector<std::string> out;
    for (const IsaEntry& e : kIsas)
        if (!std::strcmp(e.name, "generic") || cpu_has(e.name)) out.push_back(e.name);
    return out;
}

// ---- the scalar records ------------------------------------------------------------------------
// A fusedopt._scalars record is a NamedTuple: the fields of rules::XScalars in order, then those
// of rules::XFlags. It is converted here, in one place for every rule, by visiting the structs'
// field lists (fusedopt/scalars.h); scalar_fields() exports the same lists for the test that
// compares them with the Python records.

template <template <typename> class S, typename F>
struct Record {
    S<double> scalars;
    F flags;
};

// Reads the items of the record tuple in order into the visited fields.
struct FieldReader {
    PyObject* tuple;
    const char* type;
    Py_ssize_t i = 0;

    PyObject* next(const char* name) {
        PyObject* o = PyTuple_GET_ITEM(tuple, i++);
        (void)name;
        return o;
    }
    [[noreturn]] void bad(const char* name, const char* what) {
        PyErr_Clear();
        throw py::type_error(std::string("scalars.") + name + " of " + type + " must be " + what);
    }
    void operator()(const char* name, double& v) {
        v = PyFloat_AsDouble(next(name));
        if (v == -1.0 && PyErr_Occurred()) bad(name, "a float");
    }
    void operator()(const char* name, bool& v) {
        const int r = PyObject_IsTrue(next(name));
        if (r < 0) bad(name, "a bool");
        v = r != 0;
    }
    void operator()(const char* name, int& v) {
        const long r = PyLong_AsLong(next(name));
        if (r == -1 && PyErr_Occurred()) bad(name, "an int");
        v = static_cast<int>(r);
    }
};

template <typename V>
Py_ssize_t count_fields(V& v) {
    Py_ssize_t n = 0;
    v.visit([&](const char*, auto&) { ++n; });
    return n;
}

template <template <typename> class S, typename F>
Record<S, F> from_python(py::handle record, const char* type) {
    Record<S, F> r{};
    PyObject* o = record.ptr();
    const Py_ssize_t n = count_fields(r.scalars) + count_fields(r.flags);
    if (!PyTuple_Check(o) || std::strcmp(Py_TYPE(o)->tp_name, type) != 0 ||
        PyTuple_GET_SIZE(o) != n)
        throw py::type_error(std::string("scalars must be a fusedopt._scalars.") + type +
                             " record, got " + Py_TYPE(o)->tp_name);
    FieldReader read{o, type};
    r.scalars.visit(read);
    r.flags.visit(read);
    return r;
}

template <template <typename> class S, typename F>
std::vector<std::string> field_names() {
    Record<S, F> r{};
    std::vector<std::string> out;
    const auto add = [&](const char* name, auto&) { out.push_back(name); };
    r.scalars.visit(add);
    r.flags.visit(add);
    return out;
}

py::dict scalar_fields() {
    namespace R = fusedopt::rules;
    py::dict d;
    d["SgdScalars"] = field_names<R::SgdScalars, R::SgdFlags>();
    d["AdagradScalars"] = field_names<R::AdagradScalars, R::AdagradFlags>();
    d["RmspropScalars"] = field_names<R::RmspropScalars, R::RmspropFlags>();
    d["AdamScalars"] = field_names<R::AdamScalars, R::AdamFlags>();
    d["AdamaxScalars"] = field_names<R::AdamaxScalars, R::AdamaxFlags>();
    return d;
}

// ---- calls --------------------------------------------------------------------------------------

// AMP's optional pair: grad_scale and found_inf, one float32 each (NumPy arrays of one element).
struct Amp {
    bool on = false;
    bool skip = false;  // found_inf != 0: the step changes nothing
    float grad_scale = 1.0f;
};

const Array check_amp_scalar(py::handle h, const char* name, bool written) {
    const Array a = check_array(h.ptr(), name, -1, written);
    if (a.dtype != DType::kFloat32 || a.size != 1)
        throw py::type_error(std::string(name) + " must hold one float32, got dtype " +
                             dtype_name(a.dtype) + " and size " + std::to_string(a.size));
    return a;
}

Amp amp_of(py::handle grad_scale, py::handle found_inf) {
    Amp amp;
    const bool gs = !grad_scale.is_none(), fi = !found_inf.is_none();
    if (gs != fi)
        throw py::value_error("grad_scale and found_inf go together: give both or neither");
    if (!gs) return amp;
    const Array s = check_amp_scalar(grad_scale, "grad_scale", false);
    const Array f = check_amp_scalar(found_inf, "found_inf", false);
    amp.on = true;
    amp.grad_scale = *static_cast<const float*>(s.data());
    amp.skip = *static_cast<const float*>(f.data()) != 0.0f;
    return amp;
}

// Checks the lists, then runs `fn(batch, grad_scale)` for the tensors of each dtype (float32,
// float64, float16, bfloat16: 16-bit params only where `half_ok`) without the GIL. The arrays
// stay referenced until the call returns.
template <typename Fn>
void run(const ListArgs& args, const Amp& amp, Fn&& fn, bool half_ok = false) {
    CallBatches b;
    collect(args, *b, half_ok);
    if (amp.skip) return;
    const float* gs = amp.on ? &amp.grad_scale : nullptr;
    fusedopt::NoGil nogil;
    for (int d = 0; d < kDTypes; ++d) {
        const Batch x = b->batch(static_cast<DType>(d));
        if (x.total) fn(x, gs);
    }
}

// The optional master weights of 16-bit params (float32, fusedopt/slots.h's kMaster).
void add_master(ListArgs& args, py::handle master_params) {
    if (!master_params.is_none())
        args.add({"master_params", master_params, true, fusedopt::kMaster});
}

namespace R = fusedopt::rules;

void sgd(py::handle params, py::handle grads, py::handle momentum_buffers, py::handle scalars,
         py::handle master_params, py::handle grad_scale, py::handle found_inf) {
    const auto r = from_python<R::SgdScalars, R::SgdFlags>(scalars, "SgdScalars");
    ListArgs args{{"params", params, true, fusedopt::kParam},
                  {"grads", grads, false, fusedopt::kGrad}};
    if (r.flags.has_momentum)
        args.add({"momentum_buffers", momentum_buffers, true, fusedopt::kState0});
    add_master(args, master_params);
    run(
        args, amp_of(grad_scale, found_inf),
        [&](const Batch& x, const float* gs) { kernels().sgd(x, r.scalars, r.flags, gs); }, true);
}

void adagrad(py::handle params, py::handle grads, py::handle state_sums, py::handle scalars,
             py::handle master_params, py::handle grad_scale, py::handle found_inf) {
    const auto r = from_python<R::AdagradScalars, R::AdagradFlags>(scalars, "AdagradScalars");
    ListArgs args{{"params", params, true, fusedopt::kParam},
                  {"grads", grads, false, fusedopt::kGrad},
                  {"state_sums", state_sums, true, fusedopt::kState0}};
    add_master(args, master_params);
    run(
        args, amp_of(grad_scale, found_inf),
        [&](const Batch& x, const float* gs) { kernels().adagrad(x, r.scalars, r.flags, gs); },
        true);
}

void rmsprop(py::handle params, py::handle grads, py::handle square_avgs, py::handle grad_avgs,
             py::handle momentum_buffers, py::handle scalars, py::handle master_params,
             py::handle grad_scale, py::handle found_inf) {
    const auto r = from_python<R::RmspropScalars, R::RmspropFlags>(scalars, "RmspropScalars");
    ListArgs args{{"params", params, true, fusedopt::kParam},
                  {"grads", grads, false, fusedopt::kGrad},
                  {"square_avgs", square_avgs, true, fusedopt::kState0}};
    if (r.flags.centered) args.add({"grad_avgs", grad_avgs, true, fusedopt::kState1});
    if (r.flags.has_momentum)
        args.add({"momentum_buffers", momentum_buffers, true, fusedopt::kState2});
    add_master(args, master_params);
    run(
        args, amp_of(grad_scale, found_inf),
        [&](const Batch& x, const float* gs) { kernels().rmsprop(x, r.scalars, r.flags, gs); },
        true);
}

void adam(py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs,
          py::handle max_exp_avg_sqs, py::handle scalars, py::handle master_params,
          py::handle grad_scale, py::handle found_inf) {
    const auto r = from_python<R::AdamScalars, R::AdamFlags>(scalars, "AdamScalars");
    ListArgs args{{"params", params, true, fusedopt::kParam},
                  {"grads", grads, false, fusedopt::kGrad},
                  {"exp_avgs", exp_avgs, true, fusedopt::kState0},
                  {"exp_avg_sqs", exp_avg_sqs, true, fusedopt::kState1}};
    if (r.flags.amsgrad) args.add({"max_exp_avg_sqs", max_exp_avg_sqs, true, fusedopt::kState2});
    add_master(args, master_params);
    run(
        args, amp_of(grad_scale, found_inf),
        [&](const Batch& x, const float* gs) { kernels().adam(x, r.scalars, r.flags, gs); }, true);
}

void adamax(py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_infs,
            py::handle scalars, py::handle master_params, py::handle grad_scale,
            py::handle found_inf) {
    const auto r = from_python<R::AdamaxScalars, R::AdamaxFlags>(scalars, "AdamaxScalars");
    ListArgs args{{"params", params, true, fusedopt::kParam},
                  {"grads", grads, false, fusedopt::kGrad},
                  {"exp_avgs", exp_avgs, true, fusedopt::kState0},
                  {"exp_infs", exp_infs, true, fusedopt::kState1}};
    add_master(args, master_params);
    run(
        args, amp_of(grad_scale, found_inf),
        [&](const Batch& x, const float* gs) { kernels().adamax(x, r.scalars, r.flags, gs); },
        true);
}

double sum_squares(py::handle arrays) {
    CallBatches b;
    collect({{"arrays", arrays, false, fusedopt::kParam}}, *b);
    const Batch b32 = b->batch(DType::kFloat32);
    const Batch b64 = b->batch(DType::kFloat64);
    fusedopt::NoGil nogil;
    // float32 tensors first, then float64: a fixed order whatever the list order.
    return kernels().sum_squares(b32) + kernels().sum_squares(b64);
}

void scale(py::handle arrays, double factor) {
    run({{"arrays", arrays, true, fusedopt::kParam}}, Amp{},
        [&](const Batch& x, const float*) { kernels().scale(x, factor); });
}

// found_inf[0] = 1 if any element of `arrays` is infinite or NaN; left as it is otherwise.
void found_inf(py::handle arrays, py::handle found) {
    const Array f = check_amp_scalar(found, "found_inf", true);
    CallBatches b;
    collect({{"arrays", arrays, false, fusedopt::kParam}}, *b, true);
    for (int d = 0; d < kDTypes; ++d) {
        const Batch x = b->batch(static_cast<DType>(d));
        for (const Segment* s = x.segs; s != x.segs + x.nsegs; ++s)
            if (f.lo() < reinterpret_cast<uintptr_t>(s->param) +
                             s->size * itemsize(static_cast<DType>(d)) &&
                reinterpret_cast<uintptr_t>(s->param) < f.hi())
                throw py::value_error("found_inf shares memory with an array of arrays");
    }
    bool bad = false;
    {
        fusedopt::NoGil nogil;
        for (int d = 0; d < kDTypes && !bad; ++d) {
            const Batch x = b->batch(static_cast<DType>(d));
            if (x.total) bad = kernels().nonfinite(x);
        }
    }
    if (bad) *static_cast<float*>(f.data()) = 1.0f;
}

void stream(py::handle a, py::handle b_, py::handle c, py::handle d, py::handle e, int reads,
            int writes) {
    if (reads < 1 || reads > 5) throw py::value_error("reads must be in 1..5");
    if (writes < 0 || writes > std::max(1, reads - 1))
        throw py::value_error("writes must be in 0..max(1, reads - 1): a, c, d, e are writable");
    ListArgs args{{"a", a, writes >= 1, fusedopt::kParam}};
    if (reads >= 2) args.add({"b", b_, false, fusedopt::kGrad});
    py::handle rest[3] = {c, d, e};
    const char* names[3] = {"c", "d", "e"};
    for (int k = 0; k + 2 < reads; ++k)
        args.add({names[k], rest[k], writes >= k + 2,
                  static_cast<fusedopt::Slot>(fusedopt::kState0 + k)});
    const StreamFn fn = g_stream;
    run(args, Amp{}, [&](const Batch& x, const float*) { fn(x, reads, writes); });
}

// A step with compact state or stochastic rounding (issue 10; csrc/cpu/compact*): the record
// picks the rule, the lists were checked by fusedopt.ops (and again, for memory safety, by
// collect_compact).
void compact_step(py::handle scalars, py::handle params, py::handle grads, py::handle states,
                  py::handle master_params, py::handle grad_scale, py::handle found_inf,
                  unsigned long long step, unsigned long long seed, bool stochastic_rounding) {
    const Amp amp = amp_of(grad_scale, found_inf);
    CompactArgs args;
    collect_compact(args, params, grads, states, master_params, step, seed, stochastic_rounding);
    if (amp.skip || args.call.total == 0) return;
    args.call.grad_scale = amp.on ? &amp.grad_scale : nullptr;
    const CompactTable& t = compact_table_for(kernels().name);
    const std::string type = Py_TYPE(scalars.ptr())->tp_name;
    const auto go = [&](auto fn, const auto& r) {
        fusedopt::NoGil nogil;
        fn(args.call, r.scalars, r.flags);
    };
    if (type == "SgdScalars")
        go(t.sgd, from_python<R::SgdScalars, R::SgdFlags>(scalars, "SgdScalars"));
    else if (type == "AdagradScalars")
        go(t.adagrad, from_python<R::AdagradScalars, R::AdagradFlags>(scalars, "AdagradScalars"));
    else if (type == "RmspropScalars")
        go(t.rmsprop, from_python<R::RmspropScalars, R::RmspropFlags>(scalars, "RmspropScalars"));
    else if (type == "AdamScalars")
        go(t.adam, from_python<R::AdamScalars, R::AdamFlags>(scalars, "AdamScalars"));
    else if (type == "AdamaxScalars")
        go(t.adamax, from_python<R::AdamaxScalars, R::AdamaxFlags>(scalars, "AdamaxScalars"));
    else
        throw py::type_error("scalars must be a fusedopt._scalars record, got " + type);
}

int get_num_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void set_num_threads(int n) {
    if (n < 1) throw py::value_error("n must be >= 1, got " + std::to_string(n));
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

}  // namespace

// The kernels' copy in use, for the other tables that follow it (lbfgs_compact.h).
const char* fusedopt::cpu::active_isa() { return kernels().name; }

PYBIND11_MODULE(_core, m) {
    m.doc() = "fusedopt compiled kernels (C++, a worker pool); use fusedopt.ops, not this module";
    const char* env = std::getenv("FUSEDOPT_ISA");
    set_isa(env && *env ? std::string(env) : std::string("auto"));

    // The update rules: the lists, the fusedopt._scalars record, the float32 master weights of
    // 16-bit params, AMP's optional pair.
    m.def("sgd", &sgd, py::arg("params"), py::arg("grads"), py::arg("momentum_buffers"),
          py::arg("scalars"), py::kw_only(), py::arg("master_params") = py::none(),
          py::arg("grad_scale") = py::none(),
          py::arg("found_inf") = py::none());
    m.def("adagrad", &adagrad, py::arg("params"), py::arg("grads"), py::arg("state_sums"),
          py::arg("scalars"), py::kw_only(), py::arg("master_params") = py::none(),
          py::arg("grad_scale") = py::none(),
          py::arg("found_inf") = py::none());
    m.def("rmsprop", &rmsprop, py::arg("params"), py::arg("grads"), py::arg("square_avgs"),
          py::arg("grad_avgs"), py::arg("momentum_buffers"), py::arg("scalars"), py::kw_only(),
          py::arg("master_params") = py::none(), py::arg("grad_scale") = py::none(),
          py::arg("found_inf") = py::none());
    m.def("adam", &adam, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
          py::arg("exp_avg_sqs"), py::arg("max_exp_avg_sqs"), py::arg("scalars"), py::kw_only(),
          py::arg("master_params") = py::none(), py::arg("grad_scale") = py::none(),
          py::arg("found_inf") = py::none());
    m.def("adamax", &adamax, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
          py::arg("exp_infs"), py::arg("scalars"), py::kw_only(),
          py::arg("master_params") = py::none(), py::arg("grad_scale") = py::none(),
          py::arg("found_inf") = py::none());
    m.def("compact_step", &compact_step, py::arg("scalars"), py::arg("params"), py::arg("grads"),
          py::arg("states"), py::kw_only(), py::arg("master_params") = py::none(),
          py::arg("grad_scale") = py::none(), py::arg("found_inf") = py::none(),
          py::arg("step"), py::arg("seed"), py::arg("stochastic_rounding"),
          "A rule's step with bfloat16 or 8-bit state or stochastic rounding (fusedopt.ops).");
    m.def("set_quant_tables", &set_quant_tables, py::arg("map_unsigned"),
          py::arg("thresholds_unsigned"), py::arg("map_signed"), py::arg("thresholds_signed"),
          py::arg("encode_unsigned"), py::arg("encode_signed"),
          py::arg("quantized_type") = py::none(),
          "The tables of fusedopt.quant (and its QuantizedState class), given once by "
          "fusedopt.ops.");
    m.def("quant_encode_mismatches",
          [](bool qsigned, uint32_t first, uint32_t last, uint32_t stride) {
              return quant_encode_mismatches(kernels().name, qsigned, first, last, stride);
          },
          py::arg("signed"), py::arg("first"), py::arg("last"), py::arg("stride") = 1,
          "How many float32 values with bits first, first + stride, ... <= last the current "
          "kernel copy's 8-bit block encoder (absmax 1) codes otherwise than the definition "
          "(fusedopt/compact.h fo_quant_encode); for |y| <= 1 + 2**-23.");
    m.def("found_inf_", &found_inf, py::arg("arrays"), py::arg("found_inf"),
          "found_inf[0] = 1 if any element of arrays is infinite or NaN (AMP's check).");
    m.def("scalar_fields", &scalar_fields,
          "{record name: field names} of the C++ scalar and flag structs, in order.");
    m.def("sum_squares", &sum_squares, py::arg("arrays"),
          "Sum of squares of every element of a list of arrays, float64, deterministic.");
    m.def("scale_", &scale, py::arg("arrays"), py::arg("factor"));
    m.def("stream", &stream, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("d"),
          py::arg("e"), py::arg("reads"), py::arg("writes"),
          "Bandwidth probe: reads `reads` lists elementwise, writes the first `writes`.");
    m.def("isa", []() { return std::string(kernels().name); },
          "The instruction set of the kernels in use ('avx512', 'avx2' or 'generic').");
    m.def("set_isa", &set_isa, py::arg("name"),
          "Select the kernel copy: 'auto', 'avx512', 'avx2' or 'generic' (same bits).");
    m.def("available_isas", &available_isas, "The kernel copies this CPU can run, best first.");
    m.def("get_num_threads", &get_num_threads);
    m.def("set_num_threads", &set_num_threads, py::arg("n"));
    m.attr("reduce_block") = kReduceBlock;
    m.attr("SLOTS") = fusedopt::kSlots;
    m.attr("THREADS") = fusedopt::kCudaThreads;
    register_lbfgs(m);
    register_partials(m);
    register_tensors(m);
}
