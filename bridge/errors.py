"""The bridge's exception family. Every error the bridge raises on bad input or a lost peer is one of these."""


class BridgeError(Exception):
    """Base of every error raised by the bridge package. The message is one line naming the thing and the fix."""


class PortError(BridgeError):
    """A MIDI port or MIDI API that cannot be found or opened. The message lists what exists."""


class ConfigError(BridgeError):
    """A bad setting: unknown mode, CC number out of range, unreadable config file."""


class EngineSlow(BridgeError):
    """The engine did not answer one request in time but is still there (its connection holds): that answer is
    skipped, the session kept."""


class EngineLost(BridgeError):
    """The engine server stopped answering, announced it is stopping, or dropped our session."""
