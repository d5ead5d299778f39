// The Python signature of batched sampling, defined once for c4u_engine._C (CPU twin, CUDA) and
// c4u_engine._C_emulated. Raw addresses as ints; stream 0 on host.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "c4u/sampling.h"

namespace c4u {

template <class Run>
void bind_sample(pybind11::module_& m, const char* suffix, Run run) {
  namespace py = pybind11;
  m.def(
      ("sample" + std::string(suffix)).c_str(),
      [run](uintptr_t logits, int64_t batch, int64_t vocab, uintptr_t temperature, uintptr_t top_k, uintptr_t top_p,
            uintptr_t offsets, uintptr_t ban_row, uintptr_t banned, int64_t n_banned, uint64_t seed, uintptr_t out,
            uintptr_t stream) {
        SamplingArgs a;
        a.logits = reinterpret_cast<const float*>(logits);
        a.temperature = reinterpret_cast<const float*>(temperature);
        a.top_k = reinterpret_cast<const int32_t*>(top_k);
        a.top_p = reinterpret_cast<const float*>(top_p);
        a.offsets = reinterpret_cast<const uint64_t*>(offsets);
        a.ban_row = reinterpret_cast<const int32_t*>(ban_row);
        a.banned = reinterpret_cast<const int32_t*>(banned);
        a.out = reinterpret_cast<int32_t*>(out);
        a.batch = batch;
        a.vocab = vocab;
        a.n_banned = n_banned;
        a.seed = seed;
        py::gil_scoped_release release;
        run(a, stream);
      },
      "Batched sampling: argmax / temperature / top-k / top-p / banned first tokens, Philox (c4u/sampling.h)",
      py::arg("logits"), py::arg("batch"), py::arg("vocab"), py::arg("temperature"), py::arg("top_k"),
      py::arg("top_p"), py::arg("offsets"), py::arg("ban_row"), py::arg("banned"), py::arg("n_banned"),
      py::arg("seed"), py::arg("out"), py::arg("stream"));
}

}  // namespace c4u
