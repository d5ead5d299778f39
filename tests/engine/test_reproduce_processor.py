"""reproduce.TransformersJudge preprocesses with transformers' Pillow image processor, never AutoImageProcessor's
choice: with torchvision installed (the GPU machine) AutoImageProcessor picks the torchvision backend, whose resize
is not Pillow's, and the oracle would silently change."""

from __future__ import annotations


def test_judge_loads_the_pillow_processor_by_class(tiny_ckpt, monkeypatch):
    import transformers

    from c4u_engine.reproduce import TransformersJudge

    def auto_refused(*args, **kwargs):
        raise AssertionError("AutoImageProcessor picks the torchvision backend where torchvision is installed")

    monkeypatch.setattr(transformers.AutoImageProcessor, "from_pretrained", auto_refused)
    judge = TransformersJudge(tiny_ckpt)
    assert isinstance(judge.image_processor, transformers.Qwen2VLImageProcessorPil)
    assert judge.image_processor.backend == "pil"

