"""Release tooling: ONNX export, TensorRT readiness checks and engine builds. Never imported by the runtime."""
