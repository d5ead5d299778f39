"""A deliberate out-of-bounds read in one of c4u's own kernels, for benchmarks/gpu_suite.sh to run under
compute-sanitizer memcheck with the suite's kernel filter and PYTORCH_NO_CUDA_MEMORY_CACHING=1: the sanitizer must
report it. If it does not, the filter selects none of our kernels (or torch's caching allocator hides the overrun)
and a clean sanitizer run of the kernel tests would mean nothing.

The read: the sampling kernel is told a row has 1,024 logits where the tensor holds 1,000, so it reads 96 bytes past
the end of a 4,000-byte allocation (through the raw _C entry point; ops.sampling would refuse the call). Outside a
sanitizer the overrun usually goes unnoticed; the token it prints is meaningless. Needs the CUDA build and a GPU.
"""

from __future__ import annotations

import sys

import torch

from c4u_engine import _C


def main() -> int:
    if not getattr(_C, "with_cuda", False) or not torch.cuda.is_available():
        print("sanitizer canary: needs c4u_engine._C built with CUDA and a CUDA device", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    logits = torch.zeros((1, 1000), dtype=torch.float32, device=dev)
    temperature = torch.zeros(1, dtype=torch.float32, device=dev)  # argmax: one pass over the row
    top_k = torch.zeros(1, dtype=torch.int32, device=dev)
    top_p = torch.ones(1, dtype=torch.float32, device=dev)
    offsets = torch.zeros(1, dtype=torch.int64, device=dev)
    ban_row = torch.zeros(1, dtype=torch.int32, device=dev)
    banned = torch.zeros(1, dtype=torch.int32, device=dev)
    out = torch.empty(1, dtype=torch.int32, device=dev)
    stream = int(torch.cuda.current_stream(dev).cuda_stream)
    _C.sample_cuda(logits.data_ptr(), 1, 1024, temperature.data_ptr(), top_k.data_ptr(), top_p.data_ptr(),
                   offsets.data_ptr(), ban_row.data_ptr(), banned.data_ptr(), 0, 0, out.data_ptr(), stream)
    torch.cuda.synchronize()
    print(f"sanitizer canary: launched c4u::sampling::sample_kernel over 1024 of 1000 logits (token {int(out[0])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
