"""The one exception type of gan_ext.data."""
from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A problem with the data or a data argument that the user can fix.

    The message is one line: what is wrong, naming the path or argument, and
    what to do about it. A ValueError, so callers that catch ValueError for
    bad input (the CLI does) need nothing new."""
