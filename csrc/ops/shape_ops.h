// The fake kernels' C++ half (shape_ops.cpp), exported by pylibnn._C.
#pragma once

#include <pybind11/pybind11.h>

namespace pylibnn {

// _C.fake_<op> for the six ops, and _C.mlp_hidden_shape.
void add_fake_kernel_functions(pybind11::module_& m);

}  // namespace pylibnn
