// The differentiable op set: every function here records itself on the
// autograd tape when an input needs a gradient, and is a plain backend call
// otherwise. Include this one header to get them all.
#pragma once
#include "strata/autograd/ops_linalg.h"
#include "strata/autograd/ops_loss.h"
#include "strata/autograd/ops_math.h"
#include "strata/autograd/ops_nn.h"
#include "strata/autograd/ops_view.h"
