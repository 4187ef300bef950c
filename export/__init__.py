"""The torch side: corpus, dataset, model, training, evaluation, ONNX export. Nothing imports this package."""
