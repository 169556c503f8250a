"""Exceptions raised for problems a user must fix (bad input files, bad config)."""


class InputError(ValueError):
    """Bad input data or configuration; the message names the file or key and the problem."""
