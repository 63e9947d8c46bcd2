"""Runtimes: the torch and ONNX Runtime backends that execute the model's steps on a batch."""
