"""Training the built-in model: the Creative4U recipe (CoT-SFT, then GRPO) on synthetic CreativePair data.

- tokenizer_training: byte-level BPE with Qwen2.5-VL's added tokens and plain-text <think>/<answer> tags
- model_spec: the small Qwen2.5-VL (sizes, 112 px images, compact prompt, initialisation)
- checkpoint_writer: the Hugging Face-layout checkpoint directory, without transformers
- batching: training sequences from pair records in both orders; forward: the differentiable forward pass
- engine_bridge: the serving engine's tokenization and decoding over the in-training weights
- sft, grpo, rewards: the two training stages; train_state: schedule, resumable states, progress, logs
- evaluate: pairwise / order-consistency / group accuracy through c4u_engine.Engine
- pipeline, __main__: `python -m c4u_engine.train data|tokenizer|sft|grpo|eval|all`
"""
