"""Every notebook has valid params for each profile, a frozen-dataclass cell covering exactly its
parameters, and an nbval reference (tests/nbval/) so that `make test` re-executes and compares it."""
import ast
from pathlib import Path

import nbformat
import pytest

from papermill.iorw import read_yaml_file

from scribbleseg.lab import config
from scribbleseg.lab.config import DEFAULT_PROFILE, RUN_SETTINGS, freeze_parameters, load_params, notebook_key, \
    notebook_parameters, thaw
from scribbleseg.lab.run import run_parameters

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def test_there_are_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {"00_dataset.ipynb", "01_baselines.ipynb"}


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=notebook_key)
@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_params_files_validate(nb, profile):
    load_params(nb, profile, ROOT / "params")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=notebook_key)
def test_parameters_are_frozen_from_the_parameters_cell(nb):
    """One ``P = freeze_parameters(name, NB, globals())`` (no hand-written list of names to drift from the
    parameters cell), with NB the notebook's own path."""
    cells = nbformat.read(str(nb), as_version=4).cells
    calls = [n for c in cells if c.cell_type == "code" for n in ast.walk(ast.parse(c.source))
             if isinstance(n, ast.Call) and getattr(n.func, "id", None) in ("freeze", "freeze_parameters")]
    assert [getattr(n.func, "id") for n in calls] == ["freeze_parameters"], f"{nb.name}: expected one freeze_parameters"
    setup = next(c.source for c in cells if "freeze_parameters(" in c.source)
    assert f'NB = "notebooks/{notebook_key(nb)}.ipynb"' in setup


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=notebook_key)
def test_nbval_reference_exists_and_is_current(nb):
    ref = ROOT / "tests" / "nbval" / f"{notebook_key(nb)}.ipynb"
    assert ref.exists(), f"no nbval reference for {nb.name}: run `make references`"
    src = [c.source for c in nbformat.read(str(nb), as_version=4).cells
           if "injected-parameters" not in c.metadata.get("tags", [])]
    got = [c.source for c in nbformat.read(str(ref), as_version=4).cells
           if "injected-parameters" not in c.metadata.get("tags", [])]
    assert src == got, f"{ref} is stale (the notebook's code changed): run `make references`"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=notebook_key)
def test_a_run_without_profile_keeps_the_committed_outputs(nb):
    """The parameters cell defaults to the scratch profile (build/scratch/, git-ignored) and to interactive use, and
    the committed copy's injected cell (the cpu run's) sets neither: JupyterLab or plain papermill without a profile
    never writes over results/ and figures/."""
    cells = nbformat.read(str(nb), as_version=4).cells
    params = notebook_parameters(nb)
    assert params["profile"] == DEFAULT_PROFILE and params["headless"] is False
    for cell in cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            assigned = {t.id for n in ast.parse(cell.source).body if isinstance(n, ast.Assign) for t in n.targets}
            assert not assigned & {"profile", *RUN_SETTINGS}, f"{nb.name}: its injected cell sets {assigned}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=notebook_key)
@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_plain_papermill_with_a_profile_yaml_matches_the_runner(nb, profile, monkeypatch):
    """``papermill nb.ipynb out.ipynb -f params/<profile>/x.yaml`` (papermill's own yaml loader, no merging) gives the
    notebook the parameters ``python -m scribbleseg.lab.run --profile <profile>`` gives it, profile included."""
    monkeypatch.setenv("SCRIBBLESEG_ROOT", str(ROOT))
    monkeypatch.setitem(config._RUN, "headless", False)  # freeze_parameters applies the runner's headless = True
    yaml_path = ROOT / "params" / profile / f"{notebook_key(nb)}.yaml"
    plain = read_yaml_file(str(yaml_path)) or {}
    assert plain.get("profile") == profile, f"{yaml_path} must state `profile: {profile}`"
    defaults = notebook_parameters(nb)
    by_papermill = freeze_parameters("P", nb, {**defaults, **plain})
    by_runner = freeze_parameters("P", nb, {**defaults, **run_parameters(nb, profile)})
    assert by_papermill.profile == profile
    assert thaw(by_papermill) == thaw(by_runner)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=notebook_key)
def test_committed_outputs_hold_no_widget_view(nb):
    """A widget view stored without its widget state shows "Error displaying widget" when JupyterLab opens the
    notebook: the committed (headless) runs must store plain figures only (tests/test_browser.py opens them all
    in a real browser)."""
    cells = nbformat.read(str(nb), as_version=4).cells
    views = [i for i, c in enumerate(cells) if c.cell_type == "code" for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert not views, f"{nb.name}: cells {views} store widget views; run it headless (python -m scribbleseg.lab.run)"
