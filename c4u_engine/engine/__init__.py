"""The engine layer: prompts, tokens, caches, scheduling and the generation loop (no knowledge of which runner runs)."""
