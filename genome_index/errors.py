"""The one error type for mistakes a user can cause; the CLI prints it as one line, exit 1."""


class GenomeIndexError(Exception):
    """A user-facing error: bad input, wrong model, locked or damaged store."""


class StoreBusy(GenomeIndexError):
    """Another process held the store longer than a reader would wait (a server answers 503)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
