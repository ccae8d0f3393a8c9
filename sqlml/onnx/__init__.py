"""Fitted pipelines to ONNX, the parity check, and the split scoring core."""
