"""The report in a real headless browser (Debian's chromium): it renders, every image loads, no console errors.

The page's own script sets ``data-images``, ``data-images-broken`` and ``data-images-loaded`` on <body> at the load
event; ``--dump-dom`` reads them back. Console messages (errors and uncaught exceptions included) go to chromium's
stderr log as ``CONSOLE`` lines; the page logs nothing itself, so any such line is a failure. The screenshot is kept
in the test's tmp dir and copied to results/report-screenshot.png.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from masseg_search.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed: `apt-get update && apt-get install -y chromium` (scripts/bootstrap --test does it)",
)
SCREENSHOT_WIDTH = 1280
MAX_SCREENSHOT_HEIGHT = 12000


def _chromium(page: Path, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *arguments, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _body_attributes(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def test_report_renders_in_headless_chromium(results_dir: Path, tmp_path: Path) -> None:
    page = build_report(results_dir, tmp_path / "site" / "report.html")
    image_count = page.read_text().count("<img ")

    loaded = _chromium(page, tmp_path / "profile", "--dump-dom")
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    attributes = _body_attributes(loaded.stdout)
    assert attributes.get("images") == str(image_count) and image_count >= 7, attributes
    assert attributes.get("images-broken") == "0" and attributes.get("images-loaded") == "true", attributes
    assert _console_lines(loaded.stderr) == []

    height = min(int(attributes["page-height"]), MAX_SCREENSHOT_HEIGHT)
    screenshot = tmp_path / "report-screenshot.png"
    shot = _chromium(page, tmp_path / "profile", f"--screenshot={screenshot}", f"--window-size={SCREENSHOT_WIDTH},{height}")
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert pixels.shape[:2] == (height, SCREENSHOT_WIDTH)
    assert pixels.std() > 20  # text, plots and overlays, not a blank page
    (REPO_ROOT / "results").mkdir(exist_ok=True)
    shutil.copyfile(screenshot, REPO_ROOT / "results" / "report-screenshot.png")


def test_the_browser_check_catches_broken_images_and_script_errors(results_dir: Path, tmp_path: Path) -> None:
    page = build_report(results_dir, tmp_path / "site" / "report.html", overlays=False)
    next((page.parent / "report_files").glob("*.png")).unlink()
    page.write_text(page.read_text().replace("</body>", "<script>notDefinedAnywhere();</script></body>"))
    loaded = _chromium(page, tmp_path / "profile", "--dump-dom")
    attributes = _body_attributes(loaded.stdout)
    assert attributes["images-broken"] == "1" and attributes["images-loaded"] == "false"
    assert any("notDefinedAnywhere" in line for line in _console_lines(loaded.stderr))
