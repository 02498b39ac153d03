"""End-to-end tests of ``python -m scribbleseg.lab.run`` on tiny notebooks, with real papermill."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
from jupyter_client.kernelspec import find_kernel_specs

from scribbleseg.lab import config, run
from scribbleseg.lab.config import REPLACE_KEY, freeze_parameters


@pytest.fixture(scope="module", autouse=True)
def python3_kernel():
    if "python3" not in find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix",
                        "--name", "python3"], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    for profile in ("cpu", "smoke"):
        (tmp_path / "params" / profile).mkdir(parents=True)
    monkeypatch.setenv("SCRIBBLESEG_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path.resolve()


def add_notebook(repo: Path, key: str, params: str, body: str, yaml: dict[str, str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    path = repo / "notebooks" / f"{key}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    for profile, text in yaml.items():
        (repo / "params" / profile / f"{key}.yaml").parent.mkdir(parents=True, exist_ok=True)
        (repo / "params" / profile / f"{key}.yaml").write_text(text)
    return path


def outputs(path: Path) -> str:
    nb = nbformat.read(str(path), as_version=4)
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


BODY = ('import os\n'
        'print(f"steps={steps} profile={profile} headless={headless} env={os.environ.get(\'SCRIBBLESEG_PROFILE\')} '
        'cwd={os.path.basename(os.getcwd())}")')
PARAMS = 'steps = 3\nprofile = "scratch"\nheadless = False\n'


def test_run_stamp_skip_force(repo, capsys):
    add_notebook(repo, "blpseg/t1", PARAMS, BODY, {"cpu": "profile: cpu\nsteps: 7\n"})
    executed = repo / "build" / "notebooks" / "cpu" / "blpseg" / "t1.ipynb"
    stamp = repo / "build" / "stamps" / "cpu" / "blpseg" / "t1.done"

    assert run.main(["--profile", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "[1/1] notebooks/blpseg/t1.ipynb (profile cpu)" in out
    # settings arrive as parameters (profile, headless), none through the environment
    assert "steps=7 profile=cpu headless=True env=None cwd=blpseg" in out  # streamed while running
    assert "steps=7 profile=cpu headless=True env=None cwd=blpseg" in outputs(executed)
    assert stamp.is_file()

    assert run.main(["--profile", "cpu", "notebooks/blpseg/t1.ipynb"]) == 0
    assert "skip (done)" in capsys.readouterr().out

    assert run.main(["--profile", "cpu", "--force"]) == 0
    out = capsys.readouterr().out
    assert "skip (done)" not in out and "steps=7" in out

    executed.unlink()  # a stamp without its executed copy does not count as done
    assert run.main(["--profile", "cpu"]) == 0
    assert "skip (done)" not in capsys.readouterr().out and executed.is_file()

    (repo / "params" / "cpu" / "blpseg" / "t1.yaml").write_text("steps: 8\n")  # params changed
    assert run.main(["--profile", "cpu"]) == 0
    assert "steps=8" in capsys.readouterr().out


def test_bad_params_fail_before_execution(repo, capsys):
    add_notebook(repo, "01_good", "steps = 3\n", "print(steps)", {"cpu": "steps: 4\n"})
    add_notebook(repo, "02_typo", "steps = 3\n", "print(steps)", {"cpu": "setps: 4\n"})
    add_notebook(repo, "03_type", "steps = 3\n", "print(steps)", {"cpu": "steps: [4]\n"})
    add_notebook(repo, "04_noyaml", "steps = 3\n", "print(steps)", {})
    assert run.main(["--profile", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "nothing was executed" in err and "did you mean steps" in err
    assert "expects int" in err and "04_noyaml.yaml" in err and "01_good" not in err
    assert not (repo / "build").exists()


def test_unknown_profile_is_reported_once(repo, capsys):
    for i in range(3):
        add_notebook(repo, f"0{i}_nb", "steps = 3\n", "print(steps)", {"cpu": "steps: 4\n"})
    assert run.main(["--profile", "gpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("unknown profile 'gpu'") == 1 and "nothing was executed" in err


def test_failure_reported_and_references_scrubbed(repo, capsys):
    add_notebook(repo, "01_ok", "steps = 3\n", "print(steps)", {"smoke": ""})
    add_notebook(repo, "02_boom", "steps = 3\n", "raise RuntimeError('boom')", {"smoke": ""})
    with pytest.raises(SystemExit):
        run.main(["--profile", "cpu", "--refresh-references"])
    assert run.main(["--profile", "smoke", "--refresh-references"]) == 1
    err = capsys.readouterr().err
    failed_copy = repo / "tests" / "nbval" / "02_boom.ipynb"
    assert "notebooks/02_boom.ipynb" in err and str(failed_copy) in err and "boom" in err
    assert failed_copy.is_file() and not (repo / "build/stamps/smoke/02_boom.done").exists()
    ref = nbformat.read(str(repo / "tests" / "nbval" / "01_ok.ipynb"), as_version=4)
    assert "start_time" not in ref.metadata.papermill and "duration" not in ref.metadata.papermill
    for cell in ref.cells:
        assert "execution" not in cell.metadata
        assert "start_time" not in cell.metadata.get("papermill", {})
    assert (repo / "build/stamps/smoke/01_ok.done").is_file()


def fake_papermill(monkeypatch) -> list[dict]:
    """Replace papermill.execute_notebook by a recorder of its arguments and of the environment it ran in."""
    calls = []

    def execute_notebook(input_path, output_path, **kw):
        calls.append({"input": input_path, "output": output_path, "environ": dict(os.environ), **kw})
        Path(output_path).write_bytes(Path(input_path).read_bytes())
    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    return calls


def test_kernel_option_reaches_papermill_and_settings_come_as_parameters(repo, monkeypatch, capsys):
    add_notebook(repo, "01_nb", PARAMS + 'variants = {"a": 1, "b": 2}\n', "print(steps)",
                 {"smoke": "profile: smoke\nsteps: 1\nvariants: {__replace__: {c: 3}}\n"})
    monkeypatch.setattr(run, "find_kernel_specs", lambda: {"python3": "/k/python3", "gpu-env": "/k/gpu-env"})
    calls = fake_papermill(monkeypatch)
    before = dict(os.environ)

    assert run.main(["--profile", "smoke", "--kernel", "gpu-env"]) == 0
    assert "(profile smoke, kernel gpu-env)" in capsys.readouterr().out
    (call,) = calls
    assert call["kernel_name"] == "gpu-env" and call["cwd"] == str(repo / "notebooks")
    assert call["parameters"] == {"profile": "smoke", "steps": 1, "variants": {REPLACE_KEY: {"c": 3}},
                                  "headless": True}
    assert call["environ"] == before == dict(os.environ)  # nothing set for the kernel, nothing left behind
    # the kernel side: what papermill injects gives the notebook the runner's parameters
    monkeypatch.setitem(config._RUN, "headless", False)
    P = freeze_parameters("P", repo / "notebooks" / "01_nb.ipynb", call["parameters"])
    assert (P.profile, P.steps, dict(P.variants)) == ("smoke", 1, {"c": 3}) and not hasattr(P, "headless")

    assert run.main(["--profile", "smoke", "--kernel", "gpu-env"]) == 0
    assert "skip (done)" in capsys.readouterr().out and len(calls) == 1
    assert run.main(["--profile", "smoke"]) == 0  # the default kernel: another kernel is another stamp
    assert calls[-1]["kernel_name"] == "python3" and len(calls) == 2


def test_unknown_kernel_fails_before_execution(repo, monkeypatch, capsys):
    add_notebook(repo, "01_nb", PARAMS, "print(steps)", {"smoke": ""})
    calls = fake_papermill(monkeypatch)
    assert run.main(["--profile", "smoke", "--kernel", "no-such-kernel"]) == 2
    err = capsys.readouterr().err
    assert "unknown kernel 'no-such-kernel'" in err and "python3" in err and "nothing was executed" in err
    assert not calls


def test_a_notebook_without_run_settings_gets_only_its_yaml(repo, monkeypatch):
    add_notebook(repo, "01_nb", "steps = 3\n", "print(steps)", {"smoke": "profile: smoke\nsteps: 1\n"})
    calls = fake_papermill(monkeypatch)
    assert run.main(["--profile", "smoke"]) == 0
    assert calls[0]["parameters"] == {"steps": 1}  # no unknown parameters for papermill to warn about


def test_committed_cpu_copy_reruns_into_scratch(repo):
    """The cpu run is written back to notebooks/ without its run settings: run by hand or by plain papermill without
    a profile, that copy keeps the notebook's default profile and so never writes over the committed results."""
    nb = add_notebook(repo, "01_nb", PARAMS, BODY, {"cpu": "profile: cpu\nsteps: 7\n"})
    assert run.main(["--profile", "cpu"]) == 0
    (injected,) = [c.source for c in nbformat.read(str(nb), as_version=4).cells
                   if "injected-parameters" in c.metadata.get("tags", [])]
    assigned = [t.id for n in ast.parse(injected).body for t in n.targets]
    assert assigned == ["steps"] and 'profile = "cpu"' in injected  # the latter in the comment saying what ran
    assert "steps=7 profile=cpu headless=True" in outputs(nb)      # the stored outputs are the cpu run's

    rerun = repo / "build" / "by_hand.ipynb"
    papermill.execute_notebook(str(nb), str(rerun), cwd=str(nb.parent), kernel_name="python3", progress_bar=False)
    assert "steps=7 profile=scratch headless=False" in outputs(rerun)


def test_under_torchrun_only_rank_zero_keeps_outputs_stamps_and_results(repo, monkeypatch):
    """``torchrun --nproc_per_node=N -m scribbleseg.lab.run``: every rank runs every notebook (their kernels
    inherit RANK, so the training inside is data-parallel); rank 0 alone writes the executed copy, the stamp, the
    cpu copy, the results JSON and the figures."""
    from scribbleseg.lab import plots, results

    nb = add_notebook(repo, "01_nb", "steps = 3\n", "print(steps)", {"cpu": "profile: cpu\n"})
    original = nb.read_bytes()
    calls = fake_papermill(monkeypatch)
    monkeypatch.setenv("RANK", "1"), monkeypatch.setenv("WORLD_SIZE", "2")
    assert run.main(["--profile", "cpu"]) == 0
    assert calls[0]["output"] == str(repo / "build/notebooks/cpu/rank1/01_nb.ipynb")
    assert not (repo / "build/stamps").exists() and nb.read_bytes() == original
    results.write_results(repo / "r.json", nb, "cpu", {}, [])
    fig = plots.bar_with_std(["a"], [1.0], [0.0])
    plots.save(fig, repo / "f.png")
    assert not (repo / "r.json").exists() and not (repo / "f.png").exists()
    monkeypatch.setenv("RANK", "0")
    assert run.main(["--profile", "cpu"]) == 0
    assert calls[-1]["output"] == str(repo / "build/notebooks/cpu/01_nb.ipynb")
    assert (repo / "build/stamps/cpu/01_nb.done").is_file()
