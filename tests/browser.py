"""A page as a person sees it: Debian's headless Chromium renders it to a screenshot and to
its DOM, and says what the page wrote to its console."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
]


@dataclass(frozen=True)
class Rendered:
    dom: str
    console: list[str]
    screenshot: bytes


def render(url: str, folder: Path, *, size: str = "1100,1800") -> Rendered:
    """Load `url` in headless Chromium: its DOM after load, its console lines, a screenshot
    (kept in `folder` as screenshot.png, beside Chromium's profiles)."""
    screenshot = folder / "screenshot.png"
    chromium = shutil.which("chromium")
    assert chromium, (
        "Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
    )
    runs = []
    for action in ("--dump-dom", f"--screenshot={screenshot}"):
        profile = tempfile.mkdtemp(prefix="chromium-", dir=folder)  # a new, empty one each time
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", action]
        command += [f"--window-size={size}", url]
        runs.append(subprocess.run(command, capture_output=True, text=True, timeout=120))
    console = [
        line for run in runs for line in run.stderr.splitlines() if re.search(r":CONSOLE[:(]", line)
    ]
    with open(screenshot, "rb") as f:
        return Rendered(runs[0].stdout, console, f.read())
