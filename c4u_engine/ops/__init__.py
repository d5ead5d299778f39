"""Python faces of the native kernels in c4u_engine._C: argument checks, device dispatch, reference twins."""

from c4u_engine.ops.preprocess import PreprocessParams, grid_thw_for, preprocess, preprocess_cuda, smart_resize

__all__ = ["PreprocessParams", "grid_thw_for", "preprocess", "preprocess_cuda", "smart_resize"]
