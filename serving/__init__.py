"""Services and adapters; runs on ONNX Runtime alone (never imports torch or MONAI)."""
