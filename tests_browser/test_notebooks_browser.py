"""The tutorials as a reader sees them: JupyterLab in headless Chromium (``make test-browser``).

Per tutorial notebook (every ``notebooks/*.ipynb`` but the papermill notebook 05) this test

1. opens it in JupyterLab (started once, on a free port of 127.0.0.1, with a token, windowed
   rendering off so that off-screen cells are drawn too) and runs all cells;
2. asserts that no cell has error output (``error`` outputs, tracebacks, stderr) and that no
   widget shows "Error displaying widget";
3. asserts that every plotly figure and every panel (ipywidgets) is drawn, and that no two text
   elements of any drawn figure overlap (bounding boxes of the SVG texts: titles, axis titles,
   tick labels, legend entries, annotations, colour-bar labels, heat-map cell values) or stick
   out of the figure;
4. moves one slider per panel with the keyboard (focus the handle, press an arrow key, as a
   reader would) and asserts that the panel's status line and its figure's data change;
5. saves a screenshot of the whole notebook (and one per figure) under ``artifacts/browser/``.

It needs Chromium at ``/usr/bin/chromium`` (Debian's ``chromium`` package; override with
``XDNB_CHROMIUM``) and Playwright for Python, which drives it through ``executable_path``: no
browser download. Without Chromium it fails; it never skips. Jupyter's config, data, runtime and
settings folders are temporary, and the notebooks run from a temporary copy, so neither the
user's Jupyter set-up nor the committed notebooks are touched. Kernels get ``XDNB_QUIET=1`` and
one thread.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb") if not p.name.startswith("05_"))
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = os.environ.get("XDNB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: seconds one notebook may take to run all its cells in the browser
RUN_TIMEOUT = float(os.environ.get("XDNB_BROWSER_TIMEOUT", "900"))
#: pixels two text boxes may share before they count as overlapping (anti-aliasing, rounding)
TOLERANCE = 1.0
VIEWPORT = {"width": 1280, "height": 900}

#: JupyterLab user settings for the test: windowed rendering off (it does not draw off-screen
#: cells), no autosave, no news or update checks (offline).
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server on 127.0.0.1 with a token, in temporary Jupyter folders."""

    def __init__(self, workdir: Path):
        self.root = workdir / "notebooks"
        shutil.copytree(ROOT / "notebooks", self.root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        self.port, self.token = _free_port(), secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PLOTLY_RENDERER"))}
        settings = workdir / "lab-settings"
        for name, value in SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(value))
        env.update({
            "JUPYTER_CONFIG_DIR": str(workdir / "config"), "JUPYTER_DATA_DIR": str(workdir / "data"),
            "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(workdir / "workspaces"), "IPYTHONDIR": str(workdir / "ipython"),
            # the kernels (children of the server) inherit these: quiet, one thread, this checkout
            "XDNB_QUIET": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
        })
        self.log = open(workdir / "jupyterlab.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
             f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={workdir / 'workspaces'}",
             "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=", "--ServerApp.open_browser=False"]
            + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),  # CI containers run as root
            cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.process.returncode}; see {self.log.name}")
            try:
                self.api("GET", "/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer within 120 s; see {self.log.name}") from None
                time.sleep(0.5)

    def api(self, method: str, path: str):
        request = urllib.request.Request(self.url + path, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        for kernel in self.api("GET", "/api/kernels"):
            self.api("DELETE", f"/api/kernels/{kernel['id']}")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    server = Lab(tmp_path_factory.mktemp("jupyterlab"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's package (apt-get install -y chromium) "
                    "or set XDNB_CHROMIUM; the browser test does not download a browser", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


# --- what the page is asked (JavaScript run in the browser) --------------------------------------

#: Per code cell of the current notebook: its execution count and outputs (the notebook model).
JS_CELLS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.model.cells, found = [];
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i).toJSON();
    if (c.cell_type === 'code') found.push({count: c.execution_count, outputs: c.outputs});
  }
  return found;
}"""

#: Is the current notebook's kernel idle with no cell queued or running?
JS_IDLE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;
  const busy = document.querySelectorAll('.jp-Notebook .jp-InputPrompt');
  const running = Array.from(busy).some(p => p.textContent.includes('*'));
  return !!kernel && kernel.status === 'idle' && !running;
}"""

#: The text boxes of one plotly figure (client rectangles), and the figure's own rectangle.
JS_TEXTS = """(gd) => {
  const boxes = [];
  for (const el of gd.querySelectorAll('svg text')) {
    if (el.closest('.hoverlayer') || !el.textContent.trim()) continue;
    const style = getComputedStyle(el);
    if (style.display === 'none' || style.visibility === 'hidden' || Number(style.opacity) === 0) continue;
    let hidden = false;
    for (let p = el.parentElement; p && p !== gd; p = p.parentElement) {
      const s = getComputedStyle(p);
      if (s.display === 'none' || s.visibility === 'hidden' || Number(s.opacity) === 0) { hidden = true; break; }
    }
    if (hidden) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    const g = el.closest('[class]');
    boxes.push({text: el.textContent.trim(), kind: (el.getAttribute('class') || '') + '@' + (g ? g.getAttribute('class') : ''),
                x0: r.left, y0: r.top, x1: r.right, y1: r.bottom});
  }
  const f = gd.getBoundingClientRect();
  return {boxes, figure: {x0: f.left, y0: f.top, x1: f.right, y1: f.bottom}};
}"""

#: The data of a plotly figure (its traces' x and y).
JS_DATA = "(gd) => JSON.stringify((gd.data || []).map(t => [t.x, t.y, t.z, t.name]))"


def overlaps(boxes: list[dict], tolerance: float = TOLERANCE) -> list[tuple[dict, dict]]:
    """Pairs of boxes whose intersection is wider and taller than ``tolerance`` pixels."""
    found = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            w = min(a["x1"], b["x1"]) - max(a["x0"], b["x0"])
            h = min(a["y1"], b["y1"]) - max(a["y0"], b["y0"])
            if w > tolerance and h > tolerance:
                found.append((a, b))
    return found


def outside(boxes: list[dict], figure: dict, tolerance: float = TOLERANCE) -> list[dict]:
    """Boxes that stick out of the figure's rectangle (text cut off at its edge)."""
    return [b for b in boxes if b["x0"] < figure["x0"] - tolerance or b["y0"] < figure["y0"] - tolerance
            or b["x1"] > figure["x1"] + tolerance or b["y1"] > figure["y1"] + tolerance]


def _describe(box: dict) -> str:
    return f"{box['text']!r} ({box['kind']}, x {box['x0']:.0f}-{box['x1']:.0f}, y {box['y0']:.0f}-{box['y1']:.0f})"


def _problems(cells: list[dict]) -> list[str]:
    """Error outputs, stderr and unexecuted cells, one line each."""
    problems = []
    for number, cell in enumerate(cells, start=1):
        if cell["count"] is None:
            problems.append(f"code cell {number} did not run")
        for output in cell["outputs"]:
            if output["output_type"] == "error":
                problems.append(f"code cell {number}: {output['ename']}: {output['evalue']}")
            elif output["output_type"] == "stream" and output["name"] == "stderr":
                problems.append(f"code cell {number} wrote to stderr: {''.join(output['text'])[:300]!r}")
    return problems


def _wait(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _settled(status, timeout: float = 120) -> str:
    """The panel's status line once it says "updated in" and stays the same for a second."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        text = status.inner_text()
        if text == last and "updated in" in text:
            return text
        last = text
        time.sleep(1.0)
    raise AssertionError(f"the status line did not settle within {timeout:.0f} s: {last!r}")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_in_browser(notebook: Path, lab: Lab, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shots = ARTIFACTS / notebook.stem
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir()
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    console_errors: list[str] = []
    page.on("pageerror", lambda error: console_errors.append(str(error)))
    try:
        page.goto(f"{lab.url}/doc/tree/{notebook.name}?token={lab.token}", wait_until="domcontentloaded")
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                               "&& window.jupyterapp.shell.currentWidget.sessionContext", timeout=120_000)
        page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.isReady", timeout=120_000)
        _wait(lambda: page.evaluate(JS_IDLE), 120, "the kernel to start")
        started = time.monotonic()
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        time.sleep(2)  # let the first cells enter the queue
        _wait(lambda: page.evaluate(JS_IDLE) and all(c["count"] is not None for c in page.evaluate(JS_CELLS)),
              RUN_TIMEOUT, f"{notebook.name} to run all cells")
        seconds = time.monotonic() - started
        cells = page.evaluate(JS_CELLS)
        problems = _problems(cells)
        assert not problems, f"{notebook.name}:\n" + "\n".join(problems)

        # every figure and every panel drawn
        notebook_el = page.locator(".jp-NotebookPanel:visible .jp-Notebook")
        expected_figures = sum("application/vnd.plotly.v1+json" in o.get("data", {}) for c in cells for o in c["outputs"])
        expected_panels = sum("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                              for c in cells for o in c["outputs"])
        _wait(lambda: page.locator(".jp-Notebook .js-plotly-plot .main-svg").count() >= 1
              or expected_figures + expected_panels == 0, 60, "the figures to draw")
        page.wait_for_timeout(1500)  # plotly finishes its layout (autosize, tick angles) asynchronously
        assert notebook_el.get_by_text("Error displaying widget").count() == 0, f"{notebook.name}: a widget failed to display"
        plotly_outputs = page.locator(".jp-OutputArea-output.jp-RenderedPlotly")  # jupyterlab-plotly's renderer
        assert plotly_outputs.count() == expected_figures, \
            f"{notebook.name}: {expected_figures} plotly outputs stored, {plotly_outputs.count()} rendered by the plotly extension"
        for i in range(expected_figures):
            assert plotly_outputs.nth(i).locator(".main-svg").count() >= 1, \
                f"{notebook.name}: plotly figure {i + 1} did not draw"
        panels = page.locator(".jp-OutputArea-output > .widget-vbox:has(.js-plotly-plot)")
        assert panels.count() == expected_panels, \
            f"{notebook.name}: {expected_panels} panels in the outputs, {panels.count()} drawn with a figure"

        # no overlapping or cut-off text in any drawn figure
        figures = page.locator(".jp-Notebook .js-plotly-plot")
        faults = []
        for i in range(figures.count()):
            figure = figures.nth(i)
            figure.scroll_into_view_if_needed()
            figure.screenshot(path=str(shots / f"figure-{i + 1:02d}.png"))
            texts = figure.evaluate(JS_TEXTS)
            title = next((b["text"] for b in texts["boxes"] if "gtitle" in b["kind"]), f"figure {i + 1}")
            for a, b in overlaps(texts["boxes"]):
                faults.append(f"{title}: {_describe(a)} overlaps {_describe(b)}")
            for b in outside(texts["boxes"], texts["figure"]):
                faults.append(f"{title}: {_describe(b)} sticks out of the figure")

        # one slider per panel: the status line and the figure's data change
        timings = []
        for i in range(panels.count()):
            panel = panels.nth(i)
            status = panel.locator(":scope > .widget-html").first
            figure = panel.locator(".js-plotly-plot").first
            # the status line may still be catching up with the notebook's own panel.update calls
            before_status = _settled(status)
            before_data = figure.evaluate(JS_DATA)
            handle = panel.locator(".widget-slider .noUi-handle").first
            handle.scroll_into_view_if_needed()
            handle.focus()
            key = "ArrowLeft" if handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax") else "ArrowRight"
            moved = time.monotonic()
            page.keyboard.press(key)
            _wait(lambda: "updated in" in status.inner_text() and status.inner_text() != before_status, 120,
                  f"panel {i + 1}'s status line to change after {key}")
            timings.append(time.monotonic() - moved)
            _settled(status)
            assert figure.evaluate(JS_DATA) != before_data, f"panel {i + 1}'s figure did not change after {key}"
            panel.screenshot(path=str(shots / f"panel-{i + 1:02d}-after-slider.png"))
        cells = page.evaluate(JS_CELLS)
        assert not _problems(cells), f"{notebook.name} after moving the sliders:\n" + "\n".join(_problems(cells))

        # the whole notebook in one picture: a viewport as tall as the notebook
        height = page.evaluate("() => document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer, "
                               ".jp-NotebookPanel .jp-Notebook').scrollHeight")
        page.set_viewport_size({"width": VIEWPORT["width"], "height": min(int(height) + 200, 30000)})
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / f"{notebook.stem}.png"))
        print(f"{notebook.name}: ran in {seconds:.0f} s, {expected_figures} figures, {expected_panels} panels, "
              f"slider to redraw {', '.join(f'{t:.2f} s' for t in timings) or '-'}")
        assert not faults, f"{notebook.name}: text in figures overlaps or is cut off:\n" + "\n".join(faults)
        assert not console_errors, f"{notebook.name}: errors in the page: {console_errors}"
    finally:
        context.close()
        lab.shutdown_kernels()
