"""Exceptions that carry a message fit to show a user as it is."""


class BrainsegError(Exception):
    """Base class: the message says what is wrong and what was expected."""


class InputError(BrainsegError):
    """A scan, label map or array given by the user cannot be used."""


class CheckpointError(BrainsegError):
    """A checkpoint file cannot be loaded as a brainseg model."""


def describe_error(exc: Exception) -> str:
    """One line for a user: an OSError as "FILE: reason" when it names its file, else its text."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)
