"""Live MIDI: ports, input capture, clock follower, output scheduler, held-note tracking, play modes.

Talks to the engine only through the engine's client.
"""
