"""MuseBridge: a real-time AI accompaniment server (engine, bridge, export)."""

__version__ = "0.1.0"
