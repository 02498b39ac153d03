"""Where the repository is, and the stable short hashes that name dataset folders and cached runs.

Core: every layer may import this module (it imports nothing of scribbleseg).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


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
