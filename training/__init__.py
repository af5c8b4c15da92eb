"""Data loading, networks, training, calibration, evaluation and ONNX export (needs torch)."""
