"""The checkpoint error type."""


class CheckpointError(ValueError):
    """A checkpoint file is truncated, corrupted, malformed, or does not match ``like``.

    The message names the file and, for a mismatch, the first path in the tree that
    differs. Nothing is returned when this is raised: restoring never half-loads.
    """
