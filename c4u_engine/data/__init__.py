"""Synthetic ad creatives and the CreativePair data format, for training and evaluating a small Creative4U judge.

- creatives: CreativeSpec (JSON-serializable scene) and render(spec, size) -> PIL RGB image
- catalog: products (category, title, texts) and user profiles (high-frequency queries)
- appeal: the hidden click appeal of a creative for a title and queries
- reasoning: the comparative chain of thought that argues for the label
- pairs: pair / group sampling and make_dataset (images + JSONL)
- creative_pair: PairRecord / GroupRecord, load_pairs / load_groups / write_pairs / write_groups
- splits: train/val/test assignment and re-splitting
"""

from c4u_engine.data.appeal import appeal_breakdown, click_appeal
from c4u_engine.data.creative_pair import GroupRecord, PairRecord, load_groups, load_pairs, write_groups, write_pairs
from c4u_engine.data.creatives import CreativeSpec, render
from c4u_engine.data.pairs import DatasetSummary, make_dataset, sample_group, sample_pair
from c4u_engine.data.reasoning import make_reasoning
from c4u_engine.data.splits import split_dataset

__all__ = [
    "CreativeSpec", "DatasetSummary", "GroupRecord", "PairRecord", "appeal_breakdown", "click_appeal",
    "load_groups", "load_pairs", "make_dataset", "make_reasoning", "render", "sample_group", "sample_pair",
    "split_dataset", "write_groups", "write_pairs",
]
