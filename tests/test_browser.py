"""The playground in a real browser (issue 17): JupyterLab on 127.0.0.1 with a random port and token, the
notebook (smoke parameters) opened in headless Chromium, all cells run, one stroke drawn by mouse events, and
the panels must change. Every committed notebook must also open without a widget error.

The browser is Debian's ``chromium`` (``make browser`` installs it as root, as .ci/run does), driven by
Playwright with ``executable_path``: no browser download. Without it the test is skipped with the command that
installs it. Screenshots go to ``build/browser/``.
"""
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import papermill
import pytest

from scribbleseg.lab.config import load_params

ROOT = Path(__file__).resolve().parents[1]
PLAYGROUND = ROOT / "notebooks" / "04_scribble_playground.ipynb"
SHOTS = ROOT / "build" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the project's test extra)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium: install it with `sudo apt-get install "
                                "chromium` (Debian / Ubuntu) or `make browser` as root")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(base url, token) of a JupyterLab serving a folder with the playground prepared for the smoke profile and
    the committed notebooks; the kernel sees no SCRIBBLESEG_BATCH (so it is interactive) and trains into
    make test's cache when there is one."""
    root = tmp_path_factory.mktemp("lab")
    papermill.execute_notebook(str(PLAYGROUND), str(root / PLAYGROUND.name), prepare_only=True, progress_bar=False,
                               parameters={**load_params(PLAYGROUND, "smoke", ROOT / "params"), "profile": "smoke"})
    os.symlink(ROOT / "notebooks", root / "committed")
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "SCRIBBLESEG_BATCH"}
    env.update(SCRIBBLESEG_ROOT=str(ROOT), SCRIBBLESEG_CACHE=env.get("SCRIBBLESEG_CACHE", str(root / "cache")),
               SCRIBBLESEG_DATA=env.get("SCRIBBLESEG_DATA", str(root / "data")),
               **{v: str(root / "jupyter" / v.lower()) for v in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR",
                                                                 "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR")})
    quiet = root / "jupyter" / "jupyterlab_settings_dir" / "@jupyterlab" / "apputils-extension"
    quiet.mkdir(parents=True)
    (quiet / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    log = open(root / "jupyter.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                               f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
                               f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
                               "--LabApp.news_url=", "--ServerApp.port_retries=0",
                               "--ServerApp.allow_root=True"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f"jupyter lab exited: {(root / 'jupyter.log').read_text()[-2000:]}")
                time.sleep(0.5)
        else:
            raise RuntimeError(f"jupyter lab did not answer on {url}: {(root / 'jupyter.log').read_text()[-2000:]}")
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1800, "height": 1200})
        yield pg
        browser.close()


def _open(page, lab, path: str):
    url, token = lab
    page.goto(f"{url}/lab/tree/{path}?token={token}&reset")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
    page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget", timeout=60_000)


def _widget_errors(page) -> list[str]:
    return [t for t in ("Error displaying widget", "Failed to load model class", "Error creating widget")
            if page.get_by_text(t).count()]


def test_drawing_a_stroke_redraws_the_panels(page, lab):
    SHOTS.mkdir(parents=True, exist_ok=True)
    _open(page, lab, PLAYGROUND.name)
    page.evaluate("""async () => {
        const nb = window.jupyterapp.shell.currentWidget;
        await nb.context.ready;
        await nb.sessionContext.ready;                              // the kernel is up
        await window.jupyterapp.commands.execute('notebook:run-all-cells');
    }""")
    try:
        page.get_by_text("redraw 1").wait_for(timeout=600_000)      # trains the smoke runs unless cached
    finally:
        page.screenshot(path=str(SHOTS / "playground_ran.png"), full_page=True)
    assert not _widget_errors(page)
    board = page.locator(".jp-OutputArea-output canvas").last
    board.scroll_into_view_if_needed()
    panels = page.locator(".jp-OutputArea-output img").last
    before = panels.get_attribute("src")
    strokes_before = int(page.get_by_text("redraw 1").inner_text().split(": ")[-1].split(" strokes")[0])
    page.screenshot(path=str(SHOTS / "playground_before.png"), full_page=True)
    box = board.bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(x0 + box["width"] * 0.04 * i, y0 + box["height"] * 0.03 * i)
    page.mouse.up()
    page.get_by_text("redraw 2").wait_for(timeout=120_000)
    text = page.get_by_text("redraw 2").inner_text()
    assert f"{strokes_before + 1} strokes" in text
    page.wait_for_function("([el, old]) => el.getAttribute('src') !== old", arg=[panels.element_handle(), before],
                           timeout=60_000)
    assert panels.get_attribute("src") != before
    board.screenshot(path=str(SHOTS / "playground_canvas.png"))
    widget = page.locator(".jp-OutputArea-output").filter(has=page.locator("canvas")).last
    widget.screenshot(path=str(SHOTS / "playground_widget.png"))            # the README's picture
    page.screenshot(path=str(SHOTS / "playground_after.png"), full_page=True)
    assert not _widget_errors(page)


def test_every_committed_notebook_opens_without_a_widget_error(page, lab):
    notebooks = sorted(p.relative_to(ROOT / "notebooks").as_posix() for p in (ROOT / "notebooks").rglob("*.ipynb")
                       if ".ipynb_checkpoints" not in p.parts)
    bad = {}
    for nb in notebooks:
        _open(page, lab, f"committed/{nb}")
        page.wait_for_timeout(300)
        errors = _widget_errors(page)
        if errors:
            bad[nb] = errors
        page.evaluate("window.jupyterapp.commands.execute('application:close-all')")
        page.evaluate("window.jupyterapp.serviceManager.sessions.shutdownAll()")  # no kernel per notebook
    assert not bad, bad
