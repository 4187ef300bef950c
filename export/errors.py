"""The export package's exception family: every error export/ raises on bad input or bad files is one of these."""


class ExportError(Exception):
    """Base of every error raised by the export package."""


class CheckpointError(ExportError):
    """A checkpoint that cannot be read, or that belongs to another vocabulary."""


class DataError(ExportError):
    """A corpus or token split that is missing, empty or inconsistent. The message says how to make it."""
