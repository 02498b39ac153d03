"""Where the repository is, the stable short hashes that name dataset folders and cached runs, and the atomic
writes and careful reads of every file a later run reads back.

Core: every layer may import this module (it imports nothing of scribbleseg).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator


def stable_hash(obj: Any, length: int = 10) -> str:
    """Short SHA-1 of ``obj`` as sorted-key JSON: the names of dataset folders and cached runs."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:length]


def repo_root() -> Path:
    """``$SCRIBBLESEG_ROOT`` if set, else the closest folder above cwd with a pyproject.toml."""
    env = os.environ.get("SCRIBBLESEG_ROOT")
    if env:
        return Path(env).resolve()
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    raise RuntimeError(f"no pyproject.toml above {cwd}: run from inside the scribbleseg "
                       "repository or set SCRIBBLESEG_ROOT to its path")


# --- atomic writes and careful reads ---------------------------------------------------------------------------
#
# Every file a later run reads (results, configs, checkpoints, model weights, pseudo-label stores) is written
# whole or not at all: into a temporary file beside it (a unique name: host, pid, random part), flushed to disk,
# then renamed over the target with ``os.replace`` (atomic on POSIX and Windows). A kill at any moment leaves the
# old file or the new one, never half of one; what it may leave is a temporary, which no reader looks at and
# :func:`remove_stale_temps` deletes. Readers go through :func:`read_json` / :func:`torch_load`, which turn a
# truncated or unreadable file into :class:`UnreadableFile` (the caller treats the run as unfinished), and refuse
# a torch file that holds anything but tensors and plain containers (:class:`UnsafeFile`).

_TEMP_SUFFIX = ".tmp"


class UnreadableFile(Exception):
    """A file that exists but cannot be read back (truncated, corrupt, wrong content): treat its run as unfinished."""


class UnsafeFile(RuntimeError):
    """A torch file holding pickled objects other than tensors and plain data (it could run code when loaded)."""


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path`` (``.<name>.<host>.<pid>.<random>.tmp``): no two writers share one,
    and :func:`remove_stale_temps` recognises those of killed writers."""
    path = Path(path)
    host = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())[:40] or "host"
    return path.with_name(f".{path.name}.{host}.{os.getpid()}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every platform or filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: on leaving the block the data are flushed to disk and renamed
    over ``path`` in one step; on an exception the temporary is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps_kw) -> None:
    """Write ``json.dumps(obj, **dumps_kw)`` to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, **dumps_kw))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, atomically."""
    import torch

    with atomic_open(path) as f:
        torch.save(obj, f)


def atomic_np_save(path: str | os.PathLike, array) -> None:
    """``np.save(path, array)`` (no pickled objects), atomically."""
    import numpy as np

    with atomic_open(path) as f:
        np.save(f, array, allow_pickle=False)


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``; :class:`UnreadableFile` when it cannot be read or parsed (e.g. truncated).
    A missing file raises FileNotFoundError, as usual."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UnreadableFile(f"{path} is unreadable ({type(e).__name__}: {e})") from e


def torch_load(path: str | os.PathLike, map_location=None) -> Any:
    """``torch.load(path, weights_only=True)``: tensors, numbers, strings and plain containers only.

    Raises :class:`UnsafeFile` for a file that holds other pickled objects (a callable, a class instance: it
    could run code when loaded), :class:`UnreadableFile` for one that is truncated or corrupt, and
    FileNotFoundError for a missing one."""
    import pickle

    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower() and "unsupported" in str(e).lower():
            found = re.search(r"[Uu]nsupported (?:global: |operand: )?(?:GLOBAL )?([\w.]+)", str(e))
            raise UnsafeFile(
                f"refusing to load {path}: it holds pickled objects other than tensors and plain data "
                f"({found.group(1) if found else 'an unsupported object'}), which could run code when loaded. "
                "Files written by scribbleseg never do: delete it to retrain, or load it yourself with "
                "torch.load(weights_only=False) only if you trust whoever wrote it") from None
        raise UnreadableFile(f"{path} is unreadable ({type(e).__name__}: {e})") from e
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UnreadableFile(f"{path} is unreadable ({type(e).__name__}: {first})") from e


def remove_stale_temps(folder: str | os.PathLike) -> None:
    """Delete the temporaries that writers on this host killed mid-write left in ``folder`` (those of live
    processes, or of other hosts sharing the folder, are kept)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    host = temp_path(folder / "x").name.split(".")[2]
    for p in folder.iterdir():
        parts = p.name.split(".")
        if not (p.name.startswith(".") and p.name.endswith(_TEMP_SUFFIX) and len(parts) >= 6):
            continue
        h, pid = parts[-4], parts[-3]
        if h != host or not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            p.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True
