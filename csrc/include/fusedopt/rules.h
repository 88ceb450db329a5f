// fusedopt/rules.h -- every elementwise update rule, one header each.
#pragma once
#include "rules/adagrad.h"
#include "rules/adam.h"
#include "rules/adamax.h"
#include "rules/rmsprop.h"
#include "rules/sgd.h"
