"""The one error type for mistakes a user can cause; the CLI prints it as one line, exit 1."""


class GenomeIndexError(Exception):
    """A user-facing error: bad input, wrong model, locked or damaged store."""
