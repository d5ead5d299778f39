"""Small in-place edits of an ONNX graph shared by the export passes (quantization, smoothing, Q/DQ)."""

from __future__ import annotations

from collections.abc import Iterable

import onnx


def replace_nodes(graph: onnx.GraphProto, nodes: Iterable[onnx.NodeProto],
                  initializers: Iterable[onnx.TensorProto] = ()) -> None:
    """The graph's nodes become `nodes` (in order), `initializers` are added, and initializers no node reads any
    more are dropped."""
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    drop_unused_initializers(graph)


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Remove the initializers no node reads (weights a rewrite replaced)."""
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
