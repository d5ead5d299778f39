"""The targets every kernel test runs on: the CPU twin, the CUDA source under the SIMT emulator in three thread
orders (skipped, with the reason, where the emulator was not built), and the GPU (marked `cuda`)."""

from __future__ import annotations

import pytest

from c4u_engine.ops.dispatch import emulated_why_not

NO_EMULATOR = pytest.mark.skipif(emulated_why_not() is not None, reason=f"{emulated_why_not()}")
# "emulated:<order>" runs the CUDA source under the SIMT emulator with that thread order.
TARGETS = [
    "cpu",
    pytest.param("emulated:forward", marks=NO_EMULATOR),
    pytest.param("emulated:reverse", marks=NO_EMULATOR),
    pytest.param("emulated:shuffled", marks=NO_EMULATOR),
    pytest.param("cuda", marks=pytest.mark.cuda),
]


@pytest.fixture(params=TARGETS)
def device(request):
    """The device to pass to an op; for the emulator, its schedule is set for the test and reset after it."""
    name, _, order = request.param.partition(":")
    if name != "emulated":
        yield name
        return
    from c4u_engine.ops.dispatch import emulated_module

    emulated_module().set_schedule(order, 3)
    yield name
    emulated_module().set_schedule("forward", 0)
