"""JupyterLab and the formgrader in a real browser (Debian's chromium driven by the playwright package).

As a student: open a released notebook, run its first cells, press Validate and read the result; open the
Assignments panel and see the released assignments (the exchange works). As an instructor: the formgrader lists all
six assignments with their points right after `tasks.py release`, and shows an autograded submission. No JavaScript
errors in the console. Screenshots go to build/browser/ for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from coursetools.course import ROOT, assignment_names, generate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="needs Debian's chromium: `apt-get install -y chromium` "
        "(.ci/run installs it); Playwright's own browser download is not used",
    ),
]
SHOTS = ROOT / "build" / "browser"
NAME = "00_orientation"
TOKEN = "sccourse-browser-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nbgrader(args, root, env):
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={root}"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A course folder after `release`, with one autograded submission, served by JupyterLab."""
    root = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
    for name in assignment_names():
        shutil.copytree(ROOT / "solutions" / name, root / "solutions" / name)
    generate(root, assignment_names(), db=root / "gradebook.db")  # what `tasks.py release` does
    env = {
        **os.environ,
        "SCCOURSE_QUICK": "1",
        "SCCOURSE_GRADING_MODE": "quick",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("MPLBACKEND", None)
    _nbgrader(["release_assignment", NAME], root, env)
    sub = root / "submitted" / "alice" / NAME
    sub.mkdir(parents=True)
    shutil.copy(root / "solutions" / NAME / f"{NAME}.ipynb", sub / f"{NAME}.ipynb")
    _nbgrader(["autograde", NAME, "--create"], root, env)
    port = _free_port()
    log = open(root / "jupyter.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            f"--ServerApp.port={port}",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.ip=127.0.0.1",
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        proc.terminate()
        pytest.fail("JupyterLab did not start: " + (root / "jupyter.log").read_text()[-2000:])
    yield {"url": url, "root": root}
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    p = context.new_page()
    p.set_default_timeout(120_000)
    p.errors = []
    p.on("pageerror", lambda err: p.errors.append(f"page error: {err}"))
    p.on("console", lambda msg: p.errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    yield p
    context.close()


def _dismiss_news(page):
    """JupyterLab asks once whether to fetch its news (a network call): answer no. A dialog left from restoring
    the previous session's workspace (e.g. about a kernel) is closed first, with a screenshot of it."""
    dialog = page.locator(".jp-Dialog")
    try:
        dialog.first.wait_for(state="visible", timeout=3_000)
        page.screenshot(path=str(SHOTS / "dialog-on-open.png"))
        page.keyboard.press("Escape")
        dialog.first.wait_for(state="hidden", timeout=10_000)
    except Exception:  # noqa: BLE001  (no dialog)
        pass
    button = page.get_by_role("button", name="No")
    try:
        button.click(timeout=5_000)
    except Exception:  # noqa: BLE001  (the question did not come)
        pass


# nbgrader's grading page loads MathJax from a public CDN; offline (as here) that request fails and the page's MathJax
# set-up script raises. Those two messages are expected without internet (equations then show as LaTeX source, as
# the README says); every other error fails the test.
OFFLINE_CDN = ("Failed to load resource: net::ERR_NAME_NOT_RESOLVED", "MathJax is not defined")


def _no_js_errors(page, *, offline_cdn: bool = False):
    errors = [e for e in page.errors if not (offline_cdn and any(o in e for o in OFFLINE_CDN))]
    assert not errors, "JavaScript errors:\n" + "\n".join(errors[:10])


def test_student_runs_cells_and_validates(server, page):
    page.goto(f"{server['url']}/lab/tree/assignments/{NAME}/{NAME}.ipynb?token={TOKEN}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", state="visible")
    _dismiss_news(page)
    # the kernel is up when the status bar says Idle
    page.wait_for_function(
        "() => /\\| Idle/.test(document.querySelector('#jp-main-statusbar')?.innerText || '')",
        timeout=300_000,
    )
    # run the first cells (parameters, set-up, data, a first look) with Shift+Enter from the top
    page.locator(".jp-Notebook .jp-Cell").first.click()
    for _ in range(7):
        page.keyboard.press("Shift+Enter")
        page.wait_for_timeout(300)
    page.locator(".jp-OutputArea-output").filter(has_text="cells x").first.wait_for(
        state="visible", timeout=600_000
    )
    page.screenshot(path=str(SHOTS / "student-notebook.png"))
    page.get_by_role("button", name="Validate").first.click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(state="visible", timeout=600_000)
    page.wait_for_function(
        "() => !/Validating/.test(document.querySelector('.jp-Dialog').textContent)", timeout=600_000
    )
    text = dialog.inner_text()
    page.screenshot(path=str(SHOTS / "student-validate.png"))
    assert "NotImplementedError" in text or "failed" in text.lower(), text[:500]
    _no_js_errors(page)


def test_student_sees_released_assignments(server, page):
    page.goto(f"{server['url']}/lab?reset&token={TOKEN}")  # a fresh workspace, not the previous test's
    page.wait_for_selector("#jp-main-dock-panel", state="visible")
    _dismiss_news(page)
    page.get_by_text("Nbgrader", exact=True).click()
    page.get_by_text("Assignment List", exact=True).click()
    released = page.locator("#released_assignments_list")
    released.get_by_text(NAME).first.wait_for(state="visible")
    page.screenshot(path=str(SHOTS / "student-assignments.png"))
    assert "sccourse" in released.inner_text()
    body = page.locator("body").inner_text()
    assert "Error fetching courses" not in body and "exchange directory does not exist" not in body
    _no_js_errors(page)


def test_formgrader_lists_all_assignments_with_points(server, page):
    import re

    page.goto(f"{server['url']}/formgrader/manage_assignments?token={TOKEN}")
    page.get_by_text(NAME).first.wait_for(state="visible")
    page.screenshot(path=str(SHOTS / "formgrader-manage.png"), full_page=True)
    body = page.locator("body").inner_text()
    assert "does not exist" not in body, "the exchange is missing"
    page.goto(f"{server['url']}/formgrader/gradebook")
    page.get_by_text(NAME).first.wait_for(state="visible")
    page.wait_for_function("() => document.body !== null && / \\/ [1-9]/.test(document.body.innerText)")
    page.screenshot(path=str(SHOTS / "formgrader-assignments.png"), full_page=True)
    body = page.locator("body").inner_text()
    for name in assignment_names():
        m = re.search(rf"{name}\s+\S+\s+\d+\s+[\d.]+ / ([\d.]+)", body)
        assert m and float(m.group(1)) > 0, (
            f"{name}: no points in the formgrader right after release:\n{body}"
        )
    _no_js_errors(page)


def test_formgrader_shows_an_autograded_submission(server, page):
    page.goto(f"{server['url']}/formgrader?token={TOKEN}")  # logs in (the token becomes a cookie)
    page.get_by_text(NAME).first.wait_for(state="visible")
    page.goto(f"{server['url']}/formgrader/gradebook/{NAME}/{NAME}")
    link = page.locator("#main-table td.name a.name-hidden").first
    try:
        link.wait_for(state="visible")
    finally:
        page.screenshot(path=str(SHOTS / "formgrader-submissions.png"), full_page=True)
    link.click()
    page.wait_for_load_state()
    # the body is briefly null while the submission page replaces the list: wait for it, then for the notebook
    page.wait_for_function("() => document.body !== null && document.body.innerText.includes('qc_table')")
    page.screenshot(path=str(SHOTS / "formgrader-submission.png"), full_page=True)
    body = page.locator("body").inner_text()
    assert "Quality metrics" in body and "/ 3" in body
    _no_js_errors(page, offline_cdn=True)
