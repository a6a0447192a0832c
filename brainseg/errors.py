"""Exceptions that carry a message fit to show a user as it is."""


class BrainsegError(Exception):
    """Base class: the message says what is wrong and what was expected."""


class InputError(BrainsegError):
    """A scan, label map or array given by the user cannot be used."""


class CheckpointError(BrainsegError):
    """A checkpoint file cannot be loaded as a brainseg model."""
