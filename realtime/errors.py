"""Errors shared by more than one stage module, so that no stage imports another to raise them."""


class DetectorError(RuntimeError):
    """The detector cannot be built, the boxes file cannot be read, or tracking cannot run; one line for the user."""
