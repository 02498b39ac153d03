"""Notebook parameters: freezing, discovery and per-profile overrides.

Every notebook starts with a cell tagged ``parameters`` holding literal
assignments only (``seeds = [0, 1, 2]``, ``steps = 2000``...). Papermill
injects the overrides of ``params/<profile>/<notebook>.yaml`` after it, and the
notebook then freezes its parameters::

    P = freeze("BaselineParams", seeds=seeds, steps=steps)

``freeze`` builds a frozen dataclass: lists/tuples become tuples, sets become
frozensets and dicts become :class:`FrozenDict` (a hashable read-only
mapping), recursively, so ``P`` is immutable and hashable. ``thaw(P)`` gives
back plain JSON-able dicts and lists.

Paths are relative to :func:`repo_root`: ``$SCRIBBLESEG_ROOT`` if set, else the
nearest folder above the working directory holding ``pyproject.toml``.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat
import yaml

__all__ = ["ParamsError", "FrozenDict", "freeze", "thaw", "repo_root", "notebook_key",
           "notebook_parameters", "load_params"]


class ParamsError(ValueError):
    """A notebook's parameters or a params yaml file is invalid."""


class FrozenDict(Mapping):
    """A read-only, hashable dict (the frozen form of a nested dict)."""

    __slots__ = ("_d",)

    def __init__(self, *args, **kwargs):
        object.__setattr__(self, "_d", dict(*args, **kwargs))

    def __getitem__(self, key):
        return self._d[key]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)

    def __hash__(self):
        return hash(frozenset(self._d.items()))

    def __setattr__(self, name, value):
        raise AttributeError("FrozenDict is read-only")

    def __reduce__(self):
        return (FrozenDict, (self._d,))

    def __repr__(self):
        return f"FrozenDict({self._d!r})"


def _freeze_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return FrozenDict({k: _freeze_value(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_value(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze_value(v) for v in value)
    return value


def freeze(name: str, **values: Any) -> Any:
    """Return an instance of a new frozen dataclass ``name`` with ``values`` as fields."""
    frozen = {k: _freeze_value(v) for k, v in values.items()}
    cls = dataclasses.make_dataclass(
        name, [(k, type(v)) for k, v in frozen.items()], frozen=True)
    return cls(**frozen)


def thaw(obj: Any) -> Any:
    """Inverse of :func:`freeze`: plain dicts/lists, ready for JSON or yaml."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: thaw(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: thaw(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [thaw(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(thaw(v) for v in obj)
    return obj


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


def notebook_key(notebook: str | os.PathLike) -> str:
    """Path of a notebook relative to ``notebooks/``, without suffix: ``blpseg/t1_ablation``.

    A relative path starting with ``notebooks/`` is taken from the repo root,
    any other relative path from the working directory.
    """
    path, root = Path(notebook), repo_root()
    if not path.is_absolute():
        path = (root if path.parts[:1] == ("notebooks",) else Path.cwd()) / path
    try:
        rel = path.resolve().relative_to(root / "notebooks")
    except ValueError:
        raise ParamsError(f"{notebook} is not inside {root / 'notebooks'}: notebooks must live "
                          "there (or set SCRIBBLESEG_ROOT to the repository)") from None
    return rel.with_suffix("").as_posix()


def notebook_parameters(path: str | os.PathLike) -> dict[str, Any]:
    """Defaults of the notebook's ``parameters``-tagged cell, which must be literal assignments."""
    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ParamsError(f"{path}: no cell tagged 'parameters'; add one with the notebook's "
                          "literal defaults (cell toolbar > Tags > parameters)")
    try:
        tree = ast.parse(cells[0].source)
    except SyntaxError as e:
        raise ParamsError(f"{path}: parameters cell does not parse: {e}") from None
    params: dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            raise ParamsError(f"{path}: line {stmt.lineno} of the parameters cell is not a "
                              "`name = literal` assignment; move other code to a later cell")
        if not isinstance(target, ast.Name):
            raise ParamsError(f"{path}: line {stmt.lineno} of the parameters cell must assign "
                              "one plain name (`name = literal`)")
        try:
            params[target.id] = ast.literal_eval(value)
        except ValueError:
            raise ParamsError(
                f"{path}: parameter {target.id!r} = {ast.unparse(value)} is not a literal; "
                "parameters must be literals (numbers, strings, lists, dicts, None...): "
                "compute derived values in a later cell") from None
    return params


def _type_error(key: str, default: Any, value: Any) -> str | None:
    """Why ``value`` cannot override ``default``, or None if it can."""
    if default is None or type(value) is type(default):
        return None
    if isinstance(default, float) and type(value) is int:
        return None
    if isinstance(default, (list, tuple)) and isinstance(value, list):
        return None
    if isinstance(default, dict) and isinstance(value, dict):
        return None
    expected = "list" if isinstance(default, tuple) else type(default).__name__
    return f"{key!r} expects {expected} (default {default!r}), got {type(value).__name__} {value!r}"


def load_params(notebook: str | os.PathLike, profile: str,
                params_root: str | os.PathLike = Path("params")) -> dict[str, Any]:
    """Validated overrides of ``params/<profile>/<notebook key>.yaml`` for ``notebook``.

    Returns only the overrides (what papermill injects), not the defaults.
    Raises :class:`ParamsError` for an unknown profile, a missing file, an unknown
    key (with the closest valid names) or a value of the wrong type.
    """
    root = repo_root()
    params_root = Path(params_root)
    if not params_root.is_absolute():
        params_root = root / params_root
    if not (params_root / profile).is_dir():
        known = sorted(p.name for p in params_root.iterdir() if p.is_dir()) \
            if params_root.is_dir() else []
        raise ParamsError(f"unknown profile {profile!r}: no folder {params_root / profile} "
                          f"(known profiles: {', '.join(known) or 'none'})")
    yaml_path = params_root / profile / f"{notebook_key(notebook)}.yaml"
    if not yaml_path.is_file():
        raise ParamsError(f"{notebook}: missing params file {yaml_path} for profile {profile!r}; "
                          "create it (an empty file means: use the notebook's defaults)")
    try:
        overrides = yaml.safe_load(yaml_path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{yaml_path}: invalid yaml: {e}") from None
    if not isinstance(overrides, dict):
        raise ParamsError(f"{yaml_path}: expected a mapping `name: value`, "
                          f"got {type(overrides).__name__}")
    defaults = notebook_parameters(notebook)
    problems = []
    for key, value in overrides.items():
        if key not in defaults:
            close = difflib.get_close_matches(str(key), defaults, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else \
                f"valid names: {', '.join(defaults)}"
            problems.append(f"unknown parameter {key!r} ({hint})")
        elif (why := _type_error(key, defaults[key], value)) is not None:
            problems.append(f"wrong type: {why}")
    if problems:
        raise ParamsError(f"{yaml_path} (for {notebook}):\n  " + "\n  ".join(problems))
    return dict(overrides)
