// The one pybind11 module, c4u_engine._C. Bindings take raw pointers (as ints), shapes and a stream
// handle; argument checking happens in c4u_engine/ops/*.py before any call lands here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "c4u/build_info.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "c4u_engine native core: CPU kernels, and CUDA kernels when built with CUDA";
#ifdef C4U_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.attr("cuda_archs") = std::string(C4U_CUDA_ARCHS);
  m.def("cuda_device_count", &c4u::cuda_device_count, "CUDA devices visible (0 without CUDA build or driver)");
  m.def("cuda_device_name", &c4u::cuda_device_name, py::arg("index"));
}
