#pragma once
#include "strata/core/tensor.h"
