"""Atomic file writing: every file kdpose_tf writes goes through here.

A file is written to a temporary sibling and moved into place with `os.replace`, so a
crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path beside `path`; on success move it onto `path`.

    Use for writers that want a file name (Keras `save`, TFLite bytes, matplotlib).
    The temporary keeps the target's suffix so writers that check extensions work.
    """
    path = Path(path)
    _make_parent(path)
    suffix = "".join(path.suffixes) if suffix is None else suffix  # keeps ".weights.h5" whole
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:len(path.name) - len(suffix)]}.", suffix=".tmp" + suffix,
                               dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        yield Path(tmp)
        if os.path.isdir(tmp):
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    except OSError as e:  # a full disk or a write error names the file being written, not its temporary
        if e.filename not in (None, tmp):
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.unlink(tmp)


def _make_parent(path):
    """Create `path`'s folder; a file in the way is NotADirectoryError naming it (mkdir says "File exists")."""
    for parent in (path.parent, *path.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a folder, cannot write inside it", str(parent))
            break
    path.parent.mkdir(parents=True, exist_ok=True)


def write_bytes(path, data: bytes):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text(path, text: str):
    return write_bytes(path, text.encode("utf-8"))


def jsonable(obj):
    """`obj` with numpy arrays / scalars turned into lists / Python numbers and keys into str (for json.dumps).

    >>> import numpy as np
    >>> jsonable({1: np.float32(0.5), "a": (np.arange(2), [np.int64(3)])})
    {'1': 0.5, 'a': [[0, 1], [3]]}
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars
        return obj.tolist()
    return obj


def write_json(path, obj, indent=2):
    """Write `obj` as JSON, atomically; numpy arrays and scalars are written as lists and numbers."""
    return write_text(path, json.dumps(jsonable(obj), indent=indent, sort_keys=False) + "\n")


def _new_dir(parent, prefix):
    """A new, empty directory `parent/<prefix><random>.tmp` made with the umask's permissions
    (`tempfile.mkdtemp` makes 0700: a preset directory would stay private to its writer)."""
    while True:
        tmp = Path(parent) / f"{prefix}{secrets.token_hex(6)}.tmp"
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary directory beside `path`; on success replace `path` with it."""
    path = Path(path)
    _make_parent(path)
    tmp = _new_dir(path.parent, f".{path.name}.")
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
