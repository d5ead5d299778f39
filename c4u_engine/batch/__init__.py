"""Offline selection over many groups: Engine.select_many's stream, and `c4u batch` (locally or on Ray Data)."""

from c4u_engine.batch.stream import BatchItem, BatchResult, FailedItem, SelectionStream

__all__ = ["BatchItem", "BatchResult", "FailedItem", "SelectionStream"]
