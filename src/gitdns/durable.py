"""Making writes durable: the one fsync-by-path the journal, git writes and repacks share."""

from __future__ import annotations

import os


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file or a directory by path: for a directory this makes the names in it (a new
    object file, a ref or pack renamed into place, a journal marker) durable, which fsync of
    the file alone does not."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
