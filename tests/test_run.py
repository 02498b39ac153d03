"""End-to-end tests of ``python -m scribbleseg.lab.run`` on tiny notebooks, with real papermill."""
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import find_kernel_specs

from scribbleseg.lab import run


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
        'print(f"steps={steps} profile={profile} env={os.environ[\'SCRIBBLESEG_PROFILE\']} '
        'cwd={os.path.basename(os.getcwd())}")')


def test_run_stamp_skip_force(repo, capsys):
    add_notebook(repo, "blpseg/t1", 'steps = 3\nprofile = "paper"\n', BODY, {"cpu": "steps: 7\n"})
    executed = repo / "build" / "notebooks" / "cpu" / "blpseg" / "t1.ipynb"
    stamp = repo / "build" / "stamps" / "cpu" / "blpseg" / "t1.done"

    assert run.main(["--profile", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "[1/1] notebooks/blpseg/t1.ipynb (profile cpu)" in out
    assert "steps=7 profile=cpu env=cpu cwd=blpseg" in out  # streamed while running
    assert "steps=7 profile=cpu env=cpu cwd=blpseg" in outputs(executed)
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
