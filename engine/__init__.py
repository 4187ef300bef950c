"""The model runtime: event codec, ONNX session, sampler, sessions, ZeroMQ server and client.

Needs numpy + onnxruntime (+ pyzmq for the server). Owns the vocabulary. Importing it does nothing else.
"""
