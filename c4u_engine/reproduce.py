"""Replaying c4u_engine's prompts with transformers: the oracle in tests and the baseline in benchmarks.

`Engine.comparison_messages(...)` hands out (messages, assistant_prefix); `transformers_inputs` turns them into the
inputs Qwen2_5_VLForConditionalGeneration takes, the way transformers' own processor would (chat template,
Pillow image processor, loaded explicitly so torchvision's never stands in; one <|image_pad|> per image expanded to
its token count). transformers is imported here
only; the runtime never imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pillow_image_processor(model_dir: str | Path) -> Any:
    """The checkpoint's Qwen2-VL image processor on transformers' Pillow backend, whatever else is installed.

    AutoImageProcessor would pick the torchvision backend wherever torchvision is installed (transformers 5: "when
    backend is omitted, torchvision is picked if it's installed"), whose resize is not Pillow's, so the same test or
    benchmark would compare against other pixels on a machine with torchvision (the GPU machine has it). Loaded by
    class: Qwen2VLImageProcessorPil (transformers 5), or Qwen2VLImageProcessor where that is still the Pillow/numpy one
    (transformers 4)."""
    import transformers

    cls = getattr(transformers, "Qwen2VLImageProcessorPil", None) or transformers.Qwen2VLImageProcessor
    return cls.from_pretrained(model_dir)


class TransformersJudge:
    """A checkpoint loaded the way a user would with transformers, with the Pillow image processor (explicitly: see
    pillow_image_processor)."""

    def __init__(self, model_dir: str | Path, dtype: Any = None, device: str = "cpu") -> None:
        import torch
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        self.torch = torch
        self.model_dir = Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.image_processor = pillow_image_processor(self.model_dir)
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            self.model_dir, dtype=dtype or torch.float32).to(device).eval()
        self.device = device

    @classmethod
    def from_model(cls, model_dir: str | Path, model: Any, device: str) -> "TransformersJudge":
        """A judge over an already-built Qwen2_5_VLForConditionalGeneration (random weights made on the device by
        benchmarks/bench_gpu_end_to_end.py), with model_dir's tokenizer and image processor."""
        import torch
        from transformers import AutoTokenizer

        judge = cls.__new__(cls)
        judge.torch, judge.model_dir, judge.device = torch, Path(model_dir), device
        judge.tokenizer = AutoTokenizer.from_pretrained(judge.model_dir)
        judge.image_processor = pillow_image_processor(judge.model_dir)
        judge.model = model.eval()
        return judge

    def inputs(self, messages: list[dict], assistant_prefix: str = "") -> dict:
        from c4u_engine.imaging import load_image

        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        text += assistant_prefix
        images = [load_image(item["image"]).pixels for m in messages if isinstance(m["content"], list)
                  for item in m["content"] if item.get("type") == "image"]
        batch: dict = {}
        if images:
            processed = self.image_processor(images=images, return_tensors="pt")
            batch["pixel_values"] = processed["pixel_values"].to(self.device)
            batch["image_grid_thw"] = processed["image_grid_thw"].to(self.device)
            merge = self.image_processor.merge_size ** 2
            parts = text.split("<|image_pad|>")
            if len(parts) != len(images) + 1:
                raise ValueError(f"{len(parts) - 1} image placeholders for {len(images)} images")
            text = parts[0]
            for grid, part in zip(batch["image_grid_thw"], parts[1:]):
                text += "<|placeholder|>" * int(grid.prod() // merge) + part
            text = text.replace("<|placeholder|>", "<|image_pad|>")
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        batch["input_ids"] = ids.to(self.device)
        batch["attention_mask"] = self.torch.ones_like(batch["input_ids"])
        # transformers 5 computes M-RoPE positions from the processor's token types (1 = image token)
        image_token_id = self.model.config.image_token_id
        batch["mm_token_type_ids"] = (batch["input_ids"] == image_token_id).to(self.torch.int32)
        return batch

    def next_logits(self, messages: list[dict], assistant_prefix: str = ""):
        """float32 numpy [vocab]: logits after the prompt, one full forward pass."""
        with self.torch.inference_mode():
            out = self.model(**self.inputs(messages, assistant_prefix))
        return out.logits[0, -1].float().cpu().numpy()

    def generate(self, messages: list[dict], assistant_prefix: str = "", max_new_tokens: int = 64,
                 **kwargs) -> list[int]:
        """Greedy new token ids (transformers' generate with its KV cache)."""
        batch = self.inputs(messages, assistant_prefix)
        with self.torch.inference_mode():
            out = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, **kwargs)
        return out[0, batch["input_ids"].shape[1]:].tolist()
