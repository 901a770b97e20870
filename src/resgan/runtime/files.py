"""Files on a local disk or in an object store, written so that no reader sees half of one.

``ray.storage_path`` (checkpoints, run records) may be a local path or a URI (``s3://``,
``gs://``, ...): both go through pyarrow's filesystem layer, as Ray's own storage does.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path


def filesystem(location: str | Path):
    """(pyarrow filesystem, path in it) of a local path or a URI (s3://, gs://, ...)."""
    import pyarrow.fs

    loc = str(location)
    return pyarrow.fs.FileSystem.from_uri(loc if "://" in loc else Path(loc).resolve().as_uri())


def atomic_write(location: str | Path, data: bytes | str, fs=None) -> None:
    """Write ``data`` to ``location`` whole: under a name of this writer's own beside it
    (host, pid, a random part), then moved over it. A reader, a kill mid-write, or a second
    writer of the same file never leaves half a file under the name.

    Args:
        location: a local path or a URI; with ``fs``, a path inside that filesystem.
        data: the content (str is written as UTF-8).
        fs: a pyarrow filesystem (default: the one ``location`` names).
    """
    if fs is None:
        fs, location = filesystem(location)
    location = str(location)
    payload = data.encode() if isinstance(data, str) else data
    fs.create_dir(location.rsplit("/", 1)[0], recursive=True)
    part = f"{location}.{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.part"
    with fs.open_output_stream(part) as f:
        f.write(payload)
    fs.move(part, location)
