// fusedopt/scalars.h -- how a rule's per-step scalars and flags are declared: once, as a list.
//
// A rule header writes its fields once, as an X-macro list of (type, name):
//   #define FUSEDOPT_ADAM_SCALARS(X) X(T, lr) X(T, beta1) ...
//   template <typename T>
//   struct AdamScalars { FUSEDOPT_SCALARS(AdamScalars, FUSEDOPT_ADAM_SCALARS) };
// and gets the members, `cast<U>()` (each field cast once, e.g. from the float64 host values to
// the math type) and `visit(f)` (f(name, field&) in order: the bindings convert the Python
// record with it and export the names, which a test compares with fusedopt._scalars). The Python
// record (a NamedTuple of fusedopt._scalars) has the scalar fields, then the flag fields, in
// these orders.
#pragma once
#include "hd.h"

#define FUSEDOPT_FIELD_DECLARE(type, name) type name;
#define FUSEDOPT_FIELD_CAST(type, name) out.name = static_cast<decltype(out.name)>(name);
#define FUSEDOPT_FIELD_VISIT(type, name) f(#name, name);

// Members of a scalar struct template `Name<T>` whose fields are listed by LIST.
#define FUSEDOPT_SCALARS(Name, LIST)                                         \
    LIST(FUSEDOPT_FIELD_DECLARE)                                             \
    template <typename U>                                                    \
    FUSEDOPT_HD Name<U> cast() const {                                       \
        Name<U> out;                                                         \
        LIST(FUSEDOPT_FIELD_CAST)                                            \
        return out;                                                          \
    }                                                                        \
    template <typename F>                                                    \
    void visit(F&& f) {                                                      \
        LIST(FUSEDOPT_FIELD_VISIT)                                           \
    }

// Members of a flag struct (host only: the flags select the template instance).
#define FUSEDOPT_FLAGS(LIST)                                                 \
    LIST(FUSEDOPT_FIELD_DECLARE)                                             \
    template <typename F>                                                    \
    void visit(F&& f) {                                                      \
        LIST(FUSEDOPT_FIELD_VISIT)                                           \
    }
