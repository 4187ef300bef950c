"""Running the model: the model file and its checksum, the ONNX runtime and KV cache, the backend interface,
sampling, the catalog of what the model knows."""
