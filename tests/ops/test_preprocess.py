"""ops.preprocess against transformers' Qwen2VLImageProcessorPil (the oracle) and the numpy/Pillow reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from c4u_engine.errors import BackendUnavailableError, InvalidImageError, InvalidInputError, KernelArgumentError
from c4u_engine.errors import ModelFormatError
from c4u_engine.ops.dispatch import cuda_why_not
from c4u_engine.ops.preprocess import PreprocessParams, grid_thw_for, pillow_runs_vertical_first, preprocess
from c4u_engine.ops.preprocess import preprocess_cuda, smart_resize
from c4u_engine.ops.preprocess_reference import normalize, patchify, reference_preprocess

DEFAULT = PreprocessParams()
SMALL = PreprocessParams(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 48)  # cheap, and forces big downscales


def random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    # Smooth gradients plus noise: values near 0 and 255 exercise the clipping, noise the rounding.
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) % 256], axis=2)
    noise = rng.integers(-60, 61, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def oracle(images: list[np.ndarray], params: PreprocessParams) -> tuple[np.ndarray, np.ndarray]:
    processor = Qwen2VLImageProcessorPil(
        min_pixels=params.min_pixels,
        max_pixels=params.max_pixels,
        patch_size=params.patch_size,
        temporal_patch_size=params.temporal_patch_size,
        merge_size=params.merge_size,
        image_mean=list(params.image_mean),
        image_std=list(params.image_std),
    )
    out = processor(images=images, return_tensors="np")
    return out["pixel_values"], out["image_grid_thw"]


def max_level_diff(a: np.ndarray, b: np.ndarray, params: PreprocessParams) -> float:
    """Largest difference in uint8 levels (normalization undone per channel; columns are (channel, t, py, px))."""
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    if a.size == 0:
        return 0.0
    per_channel = np.abs(a - b).reshape(len(a), 3, -1).max(axis=(0, 2)).astype(np.float64)
    return float((per_channel * np.array(params.image_std) / params.rescale_factor).max())


CASES = [
    pytest.param(DEFAULT, [(448, 448)], id="no-resize-448"),
    pytest.param(DEFAULT, [(224, 336), (56, 56)], id="no-resize-mixed"),
    pytest.param(DEFAULT, [(30, 200)], id="tiny-30x200"),
    pytest.param(DEFAULT, [(7, 9)], id="tiny-upscale-7x9"),
    pytest.param(DEFAULT, [(1301, 977)], id="downscale-odd"),
    pytest.param(DEFAULT, [(57, 91), (333, 501), (448, 224)], id="batch-3-mixed"),
    pytest.param(SMALL, [(601, 403)], id="large-downscale"),
    pytest.param(SMALL, [(35, 4001)], id="thin-downscale"),
    pytest.param(SMALL, [(45, 61), (113, 29)], id="upscale-odd"),
    pytest.param(SMALL, [(112, 140), (999, 17)], id="no-resize-and-thin"),
    pytest.param(SMALL, [(700, 150), (317, 13)], id="vertical-pass-first"),  # Pillow 13 order, see below
]


@pytest.mark.parametrize(("params", "sizes"), CASES)
def test_matches_transformers_within_one_level(params: PreprocessParams, sizes: list[tuple[int, int]]) -> None:
    rng = np.random.default_rng(sum(h * 7 + w for h, w in sizes))
    images = [random_image(rng, h, w) for h, w in sizes]
    ours, grid = preprocess(images, params)
    theirs, their_grid = oracle(images, params)
    ref, ref_grid = reference_preprocess(images, params)
    np.testing.assert_array_equal(grid, their_grid)
    np.testing.assert_array_equal(grid, ref_grid)
    assert grid.dtype == np.int64 and ours.dtype == np.float32
    assert max_level_diff(ours, theirs, params) <= 1.001
    assert max_level_diff(ours, ref, params) <= 1.001
    assert [tuple(g) for g in grid] == [grid_thw_for(h, w, params) for h, w in sizes]


def test_random_batches_match_transformers() -> None:
    rng = np.random.default_rng(2024)
    for _ in range(12):
        sizes = [(int(rng.integers(3, 700)), int(rng.integers(3, 700))) for _ in range(int(rng.integers(1, 4)))]
        images = [random_image(rng, h, w) for h, w in sizes]
        ours, grid = preprocess(images, SMALL)
        theirs, their_grid = oracle(images, SMALL)
        np.testing.assert_array_equal(grid, their_grid)
        assert max_level_diff(ours, theirs, SMALL) <= 1.001, sizes


@pytest.mark.parametrize("sizes", [[(448, 448)], [(56, 84), (28, 112)], [(1120, 28 * 30)]])
def test_exact_when_no_resize_is_needed(sizes: list[tuple[int, int]]) -> None:
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]
    for h, w in sizes:
        assert smart_resize(h, w) == (h, w)
    ours, _ = preprocess(images)
    theirs, _ = oracle(images, DEFAULT)
    np.testing.assert_array_equal(ours, theirs)  # bit-exact floats, not just uint8 levels


@pytest.mark.parametrize("vertical_first", [True, False])
def test_both_pillow_pass_orders(vertical_first: bool) -> None:
    # Pillow 13 runs the vertical pass first when height shrinks > 2x more than width; older Pillow never did.
    # Each order is checked against Pillow doing the two passes as two separate resizes.
    from PIL import Image

    from c4u_engine import _C

    bicubic = Image.Resampling.BICUBIC
    rng = np.random.default_rng(9)
    for (h, w), (new_h, new_w) in [((317, 13), (280, 28)), ((400, 90), (112, 56)), ((90, 400), (56, 112))]:
        image = random_image(rng, h, w)
        pil = Image.fromarray(image)
        if vertical_first and h - new_h > 2 * (w - new_w):
            expected = pil.resize((w, new_h), bicubic).resize((new_w, new_h), bicubic)
        else:
            expected = pil.resize((new_w, h), bicubic).resize((new_w, new_h), bicubic)
        out = np.empty((new_h // 14 * (new_w // 14), DEFAULT.patch_dim), np.float32)
        _C.preprocess_cpu([image.ctypes.data], [h, w], [new_h, new_w], out.ctypes.data, len(out),
                          **DEFAULT.native_kwargs(), pillow_vertical_first=vertical_first)
        np.testing.assert_array_equal(out, patchify(normalize(np.asarray(expected), DEFAULT), DEFAULT))



def test_pass_order_probe_agrees_with_pillow() -> None:
    from PIL import Image

    bicubic = Image.Resampling.BICUBIC
    pil = Image.fromarray(random_image(np.random.default_rng(4), 400, 90))
    direct = np.asarray(pil.resize((56, 112), bicubic))
    vertical_first = np.asarray(pil.resize((90, 112), bicubic).resize((56, 112), bicubic))
    horizontal_first = np.asarray(pil.resize((56, 400), bicubic).resize((56, 112), bicubic))
    assert not np.array_equal(vertical_first, horizontal_first)
    expected = vertical_first if pillow_runs_vertical_first() else horizontal_first
    np.testing.assert_array_equal(direct, expected)


def test_accepts_read_only_views_and_keeps_inputs() -> None:
    image = random_image(np.random.default_rng(5), 90, 130)
    image.flags.writeable = False
    before = image.copy()
    ours, _ = preprocess([image, image])
    half = len(ours) // 2
    np.testing.assert_array_equal(ours[:half], ours[half:])
    np.testing.assert_array_equal(image, before)


def test_empty_batch() -> None:
    pixel_values, grid = preprocess([])
    assert pixel_values.shape == (0, DEFAULT.patch_dim) and grid.shape == (0, 3)


SIDES = [1, 2, 13, 14, 27, 28, 29, 41, 55, 56, 57, 83, 100, 223, 333, 448, 641, 1000, 1999, 4000, 9000]


NARROW = PreprocessParams(min_pixels=56 * 56, max_pixels=56 * 56 * 2)  # min near max: tiny sides overshoot


@pytest.mark.parametrize("params", [DEFAULT, SMALL, NARROW, PreprocessParams(min_pixels=1, max_pixels=28 * 28 * 4)])
def test_smart_resize_matches_transformers(params: PreprocessParams) -> None:
    for h in SIDES:
        for w in SIDES:
            try:
                expected = hf_smart_resize(h, w, params.factor, params.min_pixels, params.max_pixels)
            except ValueError:
                with pytest.raises(InvalidImageError, match="aspect ratio"):
                    smart_resize(h, w, params)
                continue
            tiny = round(h / params.factor) == 0 or round(w / params.factor) == 0
            if tiny and expected[0] * expected[1] > params.max_pixels:  # transformers skips its max check: we refuse
                with pytest.raises(InvalidImageError, match="max_pixels"):
                    smart_resize(h, w, params)
                continue
            assert smart_resize(h, w, params) == expected, (h, w)


def test_smart_resize_refuses_bad_sizes() -> None:
    with pytest.raises(InvalidImageError, match="201.0.*200"):
        smart_resize(1, 201)
    with pytest.raises(InvalidImageError, match="empty"):
        smart_resize(0, 10)
    with pytest.raises(InvalidImageError):
        smart_resize(10.0, 10)  # type: ignore[arg-type]
    assert hf_smart_resize(2, 333, 28, NARROW.min_pixels, NARROW.max_pixels) == (28, 728)  # 20384 > 6272 pixels
    with pytest.raises(InvalidImageError, match="max_pixels=6272"):
        smart_resize(2, 333, NARROW)


def bad_argument_cases() -> list:
    good = np.zeros((28, 28, 3), np.uint8)
    return [
        pytest.param([good.astype(np.float32)], "uint8", id="dtype"),
        pytest.param([np.zeros((28, 28, 4), np.uint8)], r"\[height, width, 3\]", id="4-channels"),
        pytest.param([np.zeros((28, 28), np.uint8)], r"\[height, width, 3\]", id="2d"),
        pytest.param([np.zeros((28, 0, 3), np.uint8)], "empty", id="zero-width"),
        pytest.param([np.zeros((28, 56, 3), np.uint8)[:, ::2]], "C-contiguous", id="strided"),
        pytest.param([good.tolist()], "numpy array", id="list-image"),
        pytest.param(good, "sequence", id="bare-array"),
    ]


@pytest.mark.parametrize(("images", "match"), bad_argument_cases())
def test_bad_arguments_raise_before_native_code(images, match: str) -> None:
    with pytest.raises(KernelArgumentError, match=match):
        preprocess(images)


def test_bad_device_params_and_ratio() -> None:
    image = np.zeros((28, 28, 3), np.uint8)
    with pytest.raises(KernelArgumentError, match="device"):
        preprocess([image], device="tpu")
    with pytest.raises(KernelArgumentError, match="PreprocessParams"):
        preprocess([image], {"min_pixels": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidImageError, match="aspect ratio"):
        preprocess([np.zeros((1, 300, 3), np.uint8)])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patch_size": 0}, "patch_size"),
        ({"merge_size": True}, "merge_size"),
        ({"min_pixels": 10_000, "max_pixels": 100}, "min_pixels"),
        ({"image_std": (1.0, 0.0, 1.0)}, "image_std"),
        ({"image_mean": (0.5, 0.5)}, "image_mean"),
        ({"rescale_factor": float("nan")}, "rescale_factor"),
    ],
)
def test_params_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        PreprocessParams(**kwargs)


QWEN25_CONFIG = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2_5_VLProcessor",
}


def test_from_preprocessor_config_variants(tmp_path) -> None:
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(QWEN25_CONFIG))
    from_dir = PreprocessParams.from_preprocessor_config(tmp_path)
    from_file = PreprocessParams.from_preprocessor_config(str(tmp_path / "preprocessor_config.json"))
    assert from_dir == from_file and from_dir.max_pixels == 12845056 and from_dir.min_pixels == 3136
    assert from_dir.image_mean == DEFAULT.image_mean and from_dir.factor == 28
    size_pixels = {"size": {"min_pixels": 100, "max_pixels": 200_000}, "rescale_factor": 0.00392156862745098}
    assert PreprocessParams.from_preprocessor_config(size_pixels).max_pixels == 200_000
    edges = PreprocessParams.from_preprocessor_config({"size": {"shortest_edge": 50, "longest_edge": 90_000}})
    assert (edges.min_pixels, edges.max_pixels) == (50, 90_000)
    both = {"size": {"shortest_edge": 50, "longest_edge": 90_000}, "max_pixels": 70_000}
    assert PreprocessParams.from_preprocessor_config(both).max_pixels == 70_000  # top level wins, like transformers
    assert PreprocessParams.from_preprocessor_config({}) == DEFAULT
    assert hash(DEFAULT.key()) == hash(PreprocessParams().key()) and DEFAULT.key() != edges.key()


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"patch_size": -14}, "'patch_size'"),
        ({"size": {"shortest_edge": 0, "longest_edge": 10}}, "'size.shortest_edge'"),
        ({"size": {"height": 448, "width": 448}}, "'size'"),
        ({"size": 448}, "'size'"),
        ({"image_std": [0.2, 0.2]}, "'image_std'"),
        ({"min_pixels": 5000, "max_pixels": 4000}, "min_pixels"),
        ({"do_normalize": False}, "'do_normalize'"),
        ({"resample": 2}, "'resample'"),
    ],
)
def test_from_preprocessor_config_errors_name_the_key(tmp_path, config: dict, match: str) -> None:
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ModelFormatError, match=match) as info:
        PreprocessParams.from_preprocessor_config(path)
    assert str(path) in str(info.value)


def test_from_preprocessor_config_unreadable(tmp_path) -> None:
    with pytest.raises(ModelFormatError, match="cannot read"):
        PreprocessParams.from_preprocessor_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        PreprocessParams.from_preprocessor_config(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ModelFormatError, match="JSON object"):
        PreprocessParams.from_preprocessor_config(tmp_path / "list.json")


def test_cuda_unavailable_says_why() -> None:
    reason = cuda_why_not()
    if reason is None:
        pytest.skip("CUDA is available here; the unavailable path cannot be exercised")
    with pytest.raises(BackendUnavailableError, match="cannot run here"):
        preprocess([np.zeros((28, 28, 3), np.uint8)], device="cuda")


@pytest.mark.cuda
def test_cuda_kernel_matches_cpu_kernel() -> None:
    reason = cuda_why_not()
    if reason is not None:
        pytest.skip(reason)
    import torch

    rng = np.random.default_rng(11)
    for params, sizes in [(DEFAULT, [(448, 448), (57, 91), (1301, 977), (30, 200)]),
                          (SMALL, [(601, 403), (35, 4001), (112, 140), (45, 61)])]:
        images = [random_image(rng, h, w) for h, w in sizes]
        cpu, cpu_grid = preprocess(images, params)
        via_cuda, cuda_grid = preprocess(images, params, device="cuda")
        np.testing.assert_array_equal(cuda_grid, cpu_grid)
        np.testing.assert_array_equal(via_cuda, cpu)  # same plan, same integer math, same table: same bits
        tensors = [torch.from_numpy(image).cuda() for image in images]
        pixel_values, grid = preprocess_cuda(tensors, params)
        assert pixel_values.is_cuda and grid.is_cuda and pixel_values.dtype == torch.float32
        np.testing.assert_array_equal(pixel_values.cpu().numpy(), cpu)
    with pytest.raises(KernelArgumentError, match="CUDA device"):
        preprocess_cuda([torch.zeros((28, 28, 3), dtype=torch.uint8)])
    with pytest.raises(KernelArgumentError, match="contiguous"):
        preprocess_cuda([torch.zeros((28, 56, 3), dtype=torch.uint8, device="cuda")[:, ::2]])
