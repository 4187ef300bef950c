"""The engine as a server: the protocol and its note format, the service over sessions, the ZeroMQ and direct
transports, the connection file, the client."""
