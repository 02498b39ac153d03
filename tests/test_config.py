"""Tests for scribbleseg.lab.config (parameters) and scribbleseg.lab.results (results schema)."""
import dataclasses
import json
import subprocess
from pathlib import Path

import nbformat
import pytest

from scribbleseg.lab import config
from scribbleseg.lab.config import (DEFAULT_PROFILE, REPLACE_KEY, FrozenDict, ParamsError, Replace, freeze,
                                    freeze_parameters, headless, injected, load_params, notebook_key,
                                    notebook_parameters, repo_root, thaw)
from scribbleseg.lab.results import Table, figures_dir, format_table, results_path, write_results

PARAMS_CELL = 'seeds = [0, 1, 2]\nsteps = 100\nlr = 0.01\nname = "base"\nmodel = None\nuse_crf = False\n'


def write_notebook(path: Path, params_source: str | None = PARAMS_CELL) -> Path:
    nb = nbformat.v4.new_notebook()
    if params_source is not None:
        nb.cells.append(nbformat.v4.new_code_cell(params_source, metadata={"tags": ["parameters"]}))
    nb.cells.append(nbformat.v4.new_code_cell("print(steps)"))
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def repo(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    for profile in ("cpu", "smoke"):
        (tmp_path / "params" / profile).mkdir(parents=True)
    monkeypatch.setenv("SCRIBBLESEG_ROOT", str(tmp_path))
    return tmp_path.resolve()


def write_yaml(repo: Path, profile: str, key: str, text: str) -> Path:
    path = repo / "params" / profile / f"{key}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- freeze -----------------------------------------------------------------------------------

def test_freeze_makes_frozen_hashable_dataclass():
    P = freeze("BaselineParams", seeds=[0, 1], steps=10, opt={"lr": 0.1, "betas": [0.9, 0.99]})
    assert type(P).__name__ == "BaselineParams" and dataclasses.is_dataclass(P)
    assert P.seeds == (0, 1) and P.steps == 10
    assert isinstance(P.opt, FrozenDict) and P.opt["betas"] == (0.9, 0.99)
    with pytest.raises(dataclasses.FrozenInstanceError):
        P.steps = 11
    with pytest.raises(TypeError):
        P.opt["lr"] = 1.0
    hash(P)
    assert thaw(P) == {"seeds": [0, 1], "steps": 10, "opt": {"lr": 0.1, "betas": [0.9, 0.99]}}
    assert {f.name: f.type for f in dataclasses.fields(P)}["steps"] is int


# --- notebook parameters -------------------------------------------------------------------------

def test_notebook_parameters(tmp_path):
    nb = write_notebook(tmp_path / "a.ipynb", PARAMS_CELL + "# a comment\nx: int = 3\n")
    assert notebook_parameters(nb) == {"seeds": [0, 1, 2], "steps": 100, "lr": 0.01,
                                       "name": "base", "model": None, "use_crf": False, "x": 3}


def test_notebook_parameters_non_literal(tmp_path):
    nb = write_notebook(tmp_path / "bad.ipynb", "steps = 100\nlr = 1 / steps\n")
    with pytest.raises(ParamsError, match=r"bad\.ipynb.*'lr'.*not a literal"):
        notebook_parameters(nb)


def test_notebook_parameters_missing_cell(tmp_path):
    nb = write_notebook(tmp_path / "none.ipynb", None)
    with pytest.raises(ParamsError, match="no cell tagged 'parameters'"):
        notebook_parameters(nb)


# --- load_params ---------------------------------------------------------------------------------

def test_load_params_ok_and_empty(repo):
    nb = write_notebook(repo / "notebooks" / "blpseg" / "t1_ablation.ipynb")
    assert notebook_key(nb) == "blpseg/t1_ablation"
    write_yaml(repo, "cpu", "blpseg/t1_ablation", "seeds: [0]\nlr: 1\nmodel: {depth: 3}\n")
    assert load_params(nb, "cpu") == {"seeds": [0], "lr": 1, "model": {"depth": 3}}
    write_yaml(repo, "smoke", "blpseg/t1_ablation", "")
    assert load_params(nb, "smoke") == {}


def test_load_params_unknown_key_suggests(repo):
    nb = write_notebook(repo / "notebooks" / "01_baselines.ipynb")
    path = write_yaml(repo, "cpu", "01_baselines", "setps: 5\n")
    with pytest.raises(ParamsError) as e:
        load_params(nb, "cpu")
    msg = str(e.value)
    assert "'setps'" in msg and str(path) in msg and "did you mean steps" in msg


@pytest.mark.parametrize("text, expected, got", [
    ("steps: 1.5\n", "int", "float"), ("seeds: 3\n", "list", "int"),
    ("use_crf: 1\n", "bool", "int"), ("name: 3\n", "str", "int")])
def test_load_params_wrong_type(repo, text, expected, got):
    nb = write_notebook(repo / "notebooks" / "01_baselines.ipynb")
    path = write_yaml(repo, "cpu", "01_baselines", text)
    with pytest.raises(ParamsError) as e:
        load_params(nb, "cpu")
    msg = str(e.value)
    assert str(path) in msg and text.split(":")[0] in msg
    assert f"expects {expected}" in msg and f"got {got}" in msg


DICT_CELL = ('data = {"n_train": 2000, "n_val": 400, "hue": 0.05}\ntrain = {"epochs": 4, "lr": 0.002}\n'
             'variants = {"a": {"t": 0.3}, "b": {"t": 0.45}}\n')


def test_dict_params_deep_merge_into_the_notebook_defaults(repo):
    nb = write_notebook(repo / "notebooks" / "01_baselines.ipynb", DICT_CELL)
    write_yaml(repo, "smoke", "01_baselines", "data: {n_train: 48}\ntrain: {epochs: 1, optimizer: sgd}\n"
                                              "variants: {b: {t: 0.5}}\n")
    assert load_params(nb, "smoke") == {"data": {"n_train": 48, "n_val": 400, "hue": 0.05},
                                        "train": {"epochs": 1, "lr": 0.002, "optimizer": "sgd"},  # any TrainConfig field
                                        "variants": {"a": {"t": 0.3}, "b": {"t": 0.5}}}
    write_yaml(repo, "smoke", "01_baselines", "variants: !replace {c: {t: 0.2}}\n")
    assert load_params(nb, "smoke") == {"variants": {"c": {"t": 0.2}}}


def test_unknown_nested_key_names_the_key_and_the_file(repo):
    nb = write_notebook(repo / "notebooks" / "01_baselines.ipynb", DICT_CELL)
    path = write_yaml(repo, "cpu", "01_baselines", "data: {n_trian: 48}\ntrain: {epoch: 2}\nvariants: {c: {t: 1}}\n")
    with pytest.raises(ParamsError) as e:
        load_params(nb, "cpu")
    msg = str(e.value)
    assert str(path) in msg and "data.'n_trian'" in msg and "did you mean n_train" in msg
    assert "train.'epoch'" in msg and "did you mean epochs" in msg     # a recipe dict: TrainConfig's fields
    assert "variants.'c'" in msg and "!replace" in msg


def test_freeze_parameters_reads_the_names_from_the_parameters_cell(repo):
    nb = write_notebook(repo / "notebooks" / "01_baselines.ipynb")
    namespace = {"seeds": [0], "steps": 7, "lr": 0.1, "name": "x", "model": None, "use_crf": True, "other": 1}
    P = freeze_parameters("BaselineParams", "notebooks/01_baselines.ipynb", namespace)
    assert type(P).__name__ == "BaselineParams" and P.steps == 7 and P.seeds == (0,)
    assert [f.name for f in dataclasses.fields(P)] == ["seeds", "steps", "lr", "name", "model", "use_crf"]
    with pytest.raises(ParamsError, match="'steps'.*not defined"):
        freeze_parameters("P", nb, {k: v for k, v in namespace.items() if k != "steps"})


def test_replace_has_a_plain_yaml_spelling(repo):
    nb = write_notebook(repo / "notebooks" / "01_baselines.ipynb", DICT_CELL)
    write_yaml(repo, "smoke", "01_baselines", "variants: {__replace__: {c: {t: 0.2}}}\n")
    got = load_params(nb, "smoke")
    assert got == {"variants": {"c": {"t": 0.2}}} and isinstance(got["variants"], Replace)
    assert injected(got) == {"variants": {REPLACE_KEY: {"c": {"t": 0.2}}}}  # what papermill gets


def test_yaml_profile_must_be_its_folder(repo):
    nb = write_notebook(repo / "notebooks" / "01_baselines.ipynb", 'profile = "scratch"\n' + PARAMS_CELL)
    write_yaml(repo, "smoke", "01_baselines", "profile: smoke\nsteps: 3\n")
    assert load_params(nb, "smoke") == {"profile": "smoke", "steps": 3}
    path = write_yaml(repo, "cpu", "01_baselines", "profile: smoke\nsteps: 3\n")  # copied from smoke, not fixed
    with pytest.raises(ParamsError) as e:
        load_params(nb, "cpu")
    assert str(path) in str(e.value) and "'smoke'" in str(e.value) and "profile: cpu" in str(e.value)
    plain = write_notebook(repo / "notebooks" / "02_plain.ipynb")  # no profile parameter: the line sets nothing
    write_yaml(repo, "cpu", "02_plain", "profile: cpu\n")
    assert load_params(plain, "cpu") == {}


def test_freeze_parameters_merges_what_plain_papermill_injects(repo):
    """``papermill -f params/<profile>/x.yaml`` injects the yaml as it is: the kernel merges it as the runner does."""
    nb = write_notebook(repo / "notebooks" / "01_baselines.ipynb", DICT_CELL)
    write_yaml(repo, "smoke", "01_baselines", "data: {n_train: 48}\ntrain: {epochs: 1, optimizer: sgd}\n"
                                              "variants: {__replace__: {c: {t: 0.2}}}\n")
    defaults = notebook_parameters(nb)
    plain = freeze_parameters("P", nb, {**defaults, "data": {"n_train": 48}, "train": {"epochs": 1, "optimizer": "sgd"},
                                        "variants": {REPLACE_KEY: {"c": {"t": 0.2}}}})
    runner = freeze_parameters("P", nb, {**defaults, **injected(load_params(nb, "smoke"))})
    assert thaw(plain) == thaw(runner) == {"data": {"n_train": 48, "n_val": 400, "hue": 0.05},
                                           "train": {"epochs": 1, "lr": 0.002, "optimizer": "sgd"},
                                           "variants": {"c": {"t": 0.2}}}
    with pytest.raises(ParamsError) as e:
        freeze_parameters("P", nb, {**defaults, "data": {"n_trian": 48}, "train": 3})
    assert "data.'n_trian'" in str(e.value) and "'train' expects dict" in str(e.value)


def test_headless_is_a_run_setting(repo, monkeypatch):
    monkeypatch.delenv("SCRIBBLESEG_BATCH", raising=False)
    monkeypatch.setitem(config._RUN, "headless", False)
    nb = write_notebook(repo / "notebooks" / "01_baselines.ipynb", PARAMS_CELL + "headless = False\n")
    defaults = notebook_parameters(nb)
    assert not headless()
    P = freeze_parameters("P", nb, {**defaults, "headless": True})  # as the runner injects it
    assert headless() and "headless" not in thaw(P)                 # applied, not frozen (nor in results files)
    freeze_parameters("P", nb, defaults)                            # by hand: interactive again
    assert not headless()
    monkeypatch.setenv("SCRIBBLESEG_BATCH", "1")                    # make test's nbval runs
    assert headless()


def test_load_params_missing_yaml_and_unknown_profile(repo):
    nb = write_notebook(repo / "notebooks" / "01_baselines.ipynb")
    with pytest.raises(ParamsError, match="params/cpu/01_baselines.yaml"):
        load_params(nb, "cpu")
    with pytest.raises(ParamsError, match="unknown profile 'gpu'.*cpu, smoke"):
        load_params(nb, "gpu")


def test_repo_root_walks_up_to_pyproject(tmp_path, monkeypatch):
    monkeypatch.delenv("SCRIBBLESEG_ROOT", raising=False)
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks" / "blpseg").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "notebooks" / "blpseg")
    assert repo_root() == tmp_path.resolve()
    assert notebook_key("t1_ablation.ipynb") == "blpseg/t1_ablation"


# --- results -------------------------------------------------------------------------------------

def test_table_mean_std():
    t = Table("t1", "mIoU")
    row = t.add_row("baseline", [1, 2, 3], paper=2.5)
    assert row["mean"] == 2.0 and row["std"] == 1.0 and row["paper"] == 2.5
    assert t.add_row("one seed", [4.0])["std"] == 0.0
    text = format_table(t)
    assert "baseline" in text and "2.00 ± 1.00 (3 seeds)" in text and "2.50" in text
    assert "4.00 ± 0.00 (1 seed)" in text


def test_results_schema_round_trip(repo):
    nb = repo / "notebooks" / "blpseg" / "t1_ablation.ipynb"
    t = Table("Table 1", "mIoU")
    t.add_row("ours", [1, 2, 3])
    P = freeze("P", seeds=[0, 1, 2], opt={"lr": 0.1})
    out = results_path(nb)
    write_results(out, nb, "cpu", P, [t], extra={"notes": "x"})
    data = json.loads(out.read_text())
    assert set(data) == {"notebook", "profile", "commit", "device", "torch", "params", "tables",
                         "notes"}
    assert data["notebook"] == "notebooks/blpseg/t1_ablation.ipynb" and data["profile"] == "cpu"
    assert data["commit"] == "unknown"  # tmp_path is not a git repository
    assert data["device"].startswith(("cpu: ", "cuda: "))
    assert data["params"] == {"seeds": [0, 1, 2], "opt": {"lr": 0.1}}
    (table,) = data["tables"]
    assert set(table) == {"name", "metric", "rows"}
    (row,) = table["rows"]
    assert set(row) == {"setting", "values", "mean", "std", "paper"}
    assert row == {"setting": "ours", "values": [1.0, 2.0, 3.0], "mean": 2.0, "std": 1.0,
                   "paper": None}
    assert format_table(table) == format_table(t)
    with pytest.raises(ValueError, match="schema"):
        write_results(out, nb, "cpu", {}, [], extra={"params": {}})


def test_results_and_figures_paths(repo):
    assert results_path("notebooks/blpseg/t1_ablation.ipynb") == \
        repo / "results" / "blpseg" / "t1_ablation.json"
    assert results_path("notebooks/01_baselines.ipynb") == repo / "results" / "01_baselines.json"
    assert figures_dir("notebooks/blpseg/t1_ablation.ipynb") == repo / "figures" / "blpseg"
    assert figures_dir("notebooks/01_baselines.ipynb") == repo / "figures"
    assert (repo / "figures" / "blpseg").is_dir()


def test_default_profile_never_writes_the_committed_outputs(repo):
    """A notebook run without a profile (JupyterLab, plain papermill) writes to build/scratch/, which git ignores."""
    real = Path(__file__).resolve().parents[1]
    nb = "notebooks/blpseg/01_table1_ablation.ipynb"
    for profile in (DEFAULT_PROFILE, "smoke", "paper"):
        res, fig = results_path(nb, profile), figures_dir(nb, profile)
        assert res != results_path(nb, "cpu") and fig != figures_dir(nb, "cpu")
        for path in (res, fig / "x.png"):
            rel = path.relative_to(repo).as_posix()
            assert rel.startswith(f"build/{profile}/")
            ignored = subprocess.run(["git", "check-ignore", "-q", rel], cwd=real).returncode
            assert ignored == 0, f"{rel} is not git-ignored"
    for path in (results_path(nb, "cpu"), figures_dir(nb, "cpu") / "x.png"):  # the committed ones are not ignored
        assert subprocess.run(["git", "check-ignore", "-q", path.relative_to(repo).as_posix()], cwd=real).returncode == 1


def test_commit_is_dirty_only_for_code_changes(tmp_path):
    from scribbleseg.lab.results import _git_commit

    def git(*a):
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "lib").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "lib" / "a.py").write_text("x = 1\n")
    (tmp_path / "results" / "r.json").write_text("{}\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    sha = _git_commit(tmp_path)
    assert len(sha) == 40
    (tmp_path / "results" / "r.json").write_text('{"a": 1}\n')  # an output a run writes itself
    assert _git_commit(tmp_path) == sha
    (tmp_path / "lib" / "a.py").write_text("x = 2\n")  # a code change
    assert _git_commit(tmp_path) == sha + "+dirty"
