"""The engine's exception family. Every error the engine raises on bad input is one of these."""


class EngineError(Exception):
    """Base of every error raised by the engine package."""


class CodecError(EngineError):
    """A token or event the codec cannot handle (out-of-range token, bad time, wrong type)."""


class MidiFileError(EngineError):
    """A MIDI file that cannot be read or written. The message names the file and the problem."""


class ModelError(EngineError):
    """A model file that is missing, unreadable, or made for another vocabulary or graph format."""


class EngineBug(EngineError):
    """An engine invariant broken (a bug, not bad input): the server answers `internal` and logs it."""
