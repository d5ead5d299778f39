"""The usability classes (RF1M's six), in the order of the screening model's outputs. The one list: the data
generators, training, the model directory's check and the runtime import it from here."""

CLASSES = ("available", "space_mismatch", "size_mismatch", "indistinctiveness", "shape_hallucination", "unsuitable")
