"""Notebook parameters: freezing, discovery and per-profile overrides.

Every notebook starts with a cell tagged ``parameters`` holding literal
assignments only (``seeds = [0, 1, 2]``, ``steps = 2000``...). Papermill
injects the overrides of ``params/<profile>/<notebook>.yaml`` after it, and the
notebook then freezes its parameters::

    P = freeze_parameters("BaselineParams", NB, globals())

which reads the names from the notebook's parameters cell (no hand-written list to drift from it).

A profile yaml overrides only what it changes: a dict-valued parameter deep-merges into the notebook's
default (``dataset: {n_train: 48}`` changes one knob), and an unknown nested key is an error naming the
key and the file. Nested keys are those of the notebook's default, except that a training-recipe dict
(every default key a :class:`~scribbleseg.train.TrainConfig` field) accepts any TrainConfig field. A
mapping ``{__replace__: {...}}`` (``variants: {__replace__: {...}}``; for the runner also the tag
``variants: !replace {...}``) replaces the default instead of merging.

Each profile yaml states its profile (``profile: paper`` in ``params/paper/...``; another value is an
error), so a yaml given to plain papermill (``papermill nb.ipynb out.ipynb -f params/paper/x.yaml``) sets
the profile too, and :func:`freeze_parameters` does the deep merge in the kernel: plain papermill and
``python -m scribbleseg.lab.run`` give the notebook the same parameters. A notebook run without a profile
keeps its default :data:`DEFAULT_PROFILE` (``"scratch"``), whose results and figures go to the git-ignored
``build/scratch/``: only ``--profile cpu`` (or a params/cpu yaml) writes the committed ones.

Run settings (:data:`RUN_SETTINGS`: ``headless``) are notebook parameters too, so that they reach any
kernel, local, named or remote (no environment variables): the runner injects ``headless = True``;
:func:`freeze_parameters` applies them (:func:`headless`) and leaves them out of ``P``, so results do not
depend on how a notebook was run.

``freeze`` builds a frozen dataclass: lists/tuples become tuples, sets become
frozensets and dicts become :class:`FrozenDict` (a hashable read-only
mapping), recursively, so ``P`` is immutable and hashable. ``thaw(P)`` gives
back plain JSON-able dicts and lists.

Paths are relative to :func:`repo_root`: ``$SCRIBBLESEG_ROOT`` if set, else the
nearest folder above the working directory holding ``pyproject.toml`` (papermill runs a notebook in its
folder, so a kernel finds the repository without any environment variable).
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat
import yaml

from scribbleseg.files import repo_root, stable_hash  # noqa: F401  (re-exported: the notebooks' config.*)
from scribbleseg.train import TrainConfig

__all__ = ["ParamsError", "FrozenDict", "Replace", "freeze", "freeze_parameters", "thaw", "repo_root", "notebook_key",
           "notebook_parameters", "load_params", "injected", "headless", "DEFAULT_PROFILE", "RUN_SETTINGS",
           "REPLACE_KEY"]

DEFAULT_PROFILE = "scratch"
"""The ``profile`` default of every notebook's parameters cell: a run without a profile (JupyterLab, plain
papermill) writes to the git-ignored ``build/scratch/``, never over the committed cpu results."""
RUN_SETTINGS = ("headless",)
"""Parameters that say how a notebook runs, not what it computes: applied by :func:`freeze_parameters`,
not frozen into ``P`` (nor written to results files)."""
REPLACE_KEY = "__replace__"
"""``{REPLACE_KEY: {...}}``: the plain-yaml (and injected) spelling of ``!replace {...}``."""
_RUN = {"headless": False}


def headless() -> bool:
    """True when nobody watches the kernel: the notebook's ``headless`` parameter (``True`` under
    ``python -m scribbleseg.lab.run``, set by :func:`freeze_parameters`) or ``$SCRIBBLESEG_BATCH=1``
    (``make test``'s nbval runs). Then no widgets and no progress bars that would fill the stored outputs."""
    return bool(_RUN["headless"]) or os.environ.get("SCRIBBLESEG_BATCH") == "1"


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


def freeze(name: str, /, **values: Any) -> Any:
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


class Replace(dict):
    """A yaml mapping tagged ``!replace`` (or ``{__replace__: {...}}``): it replaces the notebook's dict instead
    of merging into it. :func:`injected` writes it as ``{"__replace__": {...}}`` for papermill."""


def _replacement(value: Any) -> Replace | None:
    """``value`` as a :class:`Replace` if it is one or spells one (``{REPLACE_KEY: mapping}``), else None."""
    if isinstance(value, Replace):
        return value
    if isinstance(value, dict) and set(value) == {REPLACE_KEY} and isinstance(value[REPLACE_KEY], dict):
        return Replace(value[REPLACE_KEY])
    return None


def injected(value: Any) -> Any:
    """``value`` as papermill should inject it: every :class:`Replace` (which papermill would write as a plain
    dict, to be merged again by :func:`freeze_parameters`) spelt ``{REPLACE_KEY: {...}}``."""
    if isinstance(value, Replace):
        return {REPLACE_KEY: {k: injected(v) for k, v in value.items()}}
    if isinstance(value, dict):
        return {k: injected(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [injected(v) for v in value]
    return value


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!replace", lambda loader, node: Replace(loader.construct_mapping(node, deep=True)))
RECIPE_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def merge_override(default: Any, value: Any, where: str, problems: list[str]) -> Any:
    """``value`` deep-merged into ``default`` (dicts merge key by key; anything else, or a :class:`Replace` or its
    ``{REPLACE_KEY: ...}`` spelling, replaces). Merging a merged value again changes nothing. Unknown nested keys
    are appended to ``problems`` as "unknown key 'a.b' ..." lines."""
    if (replacement := _replacement(value)) is not None:
        return replacement
    if not (isinstance(default, dict) and isinstance(value, dict)):
        return value
    allowed = set(default) | (RECIPE_FIELDS if default and set(default) <= RECIPE_FIELDS else set())
    out = dict(default)
    for key, v in value.items():
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"valid keys: {', '.join(sorted(allowed))}"
            problems.append(f"unknown key {where}.{key!r} ({hint}; to replace {where} whole, write "
                            f"{where}: {{{REPLACE_KEY}: {{...}}}} or tag the mapping !replace)")
        else:
            out[key] = merge_override(default.get(key), v, f"{where}.{key}", problems)
    return out


def freeze_parameters(name: str, notebook: str | os.PathLike, namespace: Mapping[str, Any]) -> Any:
    """:func:`freeze` of the parameters a notebook declares in its ``parameters`` cell, with their current
    values in ``namespace`` (the notebook's ``globals()``, after papermill's injected overrides).

    The values are checked and merged as :func:`load_params` does with a profile yaml: a dict value
    deep-merges into the cell's default (so ``papermill -f params/<profile>/x.yaml`` gives the notebook what
    the runner gives it; the runner's values are merged already and stay as they are), ``{__replace__: ...}``
    replaces it, and a wrong type or an unknown nested key is a :class:`ParamsError`.
    :data:`RUN_SETTINGS` (``headless``) are applied (see :func:`headless`) and left out of the result.
    """
    path = Path(notebook)
    if not path.is_absolute() and path.parts[:1] == ("notebooks",):
        path = repo_root() / path
    defaults = notebook_parameters(path)
    missing = [n for n in defaults if n not in namespace]
    if missing:
        raise ParamsError(f"{notebook}: parameter(s) {missing} are not defined: run the parameters cell first")
    problems, values = [], {}
    for key, default in defaults.items():
        value = namespace[key]
        if (why := _type_error(key, default, value)) is not None:
            problems.append(f"wrong type: {why}")
        else:
            values[key] = merge_override(default, value, key, problems)
    if problems:
        raise ParamsError(f"{notebook}: parameters given to the notebook (papermill's injected cell, or an unsaved "
                          "edit of the parameters cell: defaults are read from the saved file):\n  "
                          + "\n  ".join(problems))
    for key in RUN_SETTINGS:
        if key in values:
            _RUN[key] = values.pop(key)
    return freeze(name, **values)


def _type_error(key: str, default: Any, value: Any) -> str | None:
    """Why ``value`` cannot override ``default``, or None if it can."""
    if default is None or type(value) is type(default):
        return None
    if isinstance(default, float) and type(value) is int:
        return None
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return None
    if isinstance(default, dict) and isinstance(value, dict):
        return None
    expected = "list" if isinstance(default, tuple) else type(default).__name__
    return f"{key!r} expects {expected} (default {default!r}), got {type(value).__name__} {value!r}"


def check_profile(profile: str, params_root: str | os.PathLike = Path("params")) -> Path:
    """The params root (absolute) if ``params/<profile>/`` exists; else :class:`ParamsError` naming the known ones."""
    params_root = Path(params_root)
    if not params_root.is_absolute():
        params_root = repo_root() / params_root
    if not (params_root / profile).is_dir():
        known = sorted(p.name for p in params_root.iterdir() if p.is_dir()) \
            if params_root.is_dir() else []
        raise ParamsError(f"unknown profile {profile!r}: no folder {params_root / profile} "
                          f"(known profiles: {', '.join(known) or 'none'})")
    return params_root


def load_params(notebook: str | os.PathLike, profile: str,
                params_root: str | os.PathLike = Path("params")) -> dict[str, Any]:
    """Validated overrides of ``params/<profile>/<notebook key>.yaml`` for ``notebook``.

    Returns only the overrides (what papermill injects, after :func:`injected`), not the defaults; a dict-valued
    override comes back merged into the notebook's default dict (see the module docstring).
    Raises :class:`ParamsError` for an unknown profile, a missing file, a ``profile:`` other than the folder's,
    an unknown key (with the closest valid names) or a value of the wrong type.
    """
    params_root = check_profile(profile, params_root)
    yaml_path = params_root / profile / f"{notebook_key(notebook)}.yaml"
    if not yaml_path.is_file():
        raise ParamsError(f"{notebook}: missing params file {yaml_path} for profile {profile!r}; "
                          "create it (an empty file means: use the notebook's defaults)")
    try:
        overrides = yaml.load(yaml_path.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{yaml_path}: invalid yaml: {e}") from None
    if not isinstance(overrides, dict):
        raise ParamsError(f"{yaml_path}: expected a mapping `name: value`, "
                          f"got {type(overrides).__name__}")
    defaults = notebook_parameters(notebook)
    problems, merged = [], {}
    if "profile" in overrides and overrides["profile"] != profile:
        raise ParamsError(f"{yaml_path}: says profile: {overrides['profile']!r} but lies in {params_root / profile}; "
                          f"a yaml states the profile of its folder (profile: {profile})")
    for key, value in overrides.items():
        if key == "profile" and key not in defaults:
            continue  # the notebook has no profile parameter: nothing to set
        if key not in defaults:
            close = difflib.get_close_matches(str(key), defaults, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else \
                f"valid names: {', '.join(defaults)}"
            problems.append(f"unknown parameter {key!r} ({hint})")
        elif (why := _type_error(key, defaults[key], value)) is not None:
            problems.append(f"wrong type: {why}")
        else:
            merged[key] = merge_override(defaults[key], value, key, problems)
    if problems:
        raise ParamsError(f"{yaml_path} (for {notebook}):\n  " + "\n  ".join(problems))
    return merged
