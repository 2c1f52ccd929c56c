"""A page as a person sees it: Debian's headless Chromium renders it to a screenshot and to
its DOM, and says what the page wrote to its console."""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
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


def boxes(page: Path, selector: str, folder: Path, *, size: str) -> dict[str, list[float]]:
    """Where the elements of `page` that match `selector` are laid out in a window of `size`
    (x, y, width, height in CSS pixels, by element id). A copy of the page gets a script that
    writes them into its DOM; the page itself stays as it is (it has no script)."""
    probe = folder / f"boxes-{page.name}"
    script = (
        "<script>const found = {};"
        f"document.querySelectorAll({selector!r}).forEach(e => {{"
        "const r = e.getBoundingClientRect(); found[e.id] = [r.x, r.y, r.width, r.height];});"
        "const out = document.createElement('pre'); out.id = 'boxes';"
        "out.textContent = JSON.stringify(found); document.body.appendChild(out);</script>"
    )
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    dom = render(probe.as_uri(), folder, size=size).dom
    found = re.search(r'<pre id="boxes">(.*?)</pre>', dom)
    assert found, "the probe's script wrote no boxes"
    return json.loads(html.unescape(found.group(1)))


def pixels(png: bytes) -> list[list[tuple[int, ...]]]:
    """The rows of pixels of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes)."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG"
    at, idat, header = 8, b"", b""
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, body = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    channels = 3 if color == 2 else 4
    data, stride = zlib.decompress(idat), width * channels
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = data[start], bytearray(data[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                guess = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + guess) & 0xFF
        rows.append(line)
        previous = line
    return [[tuple(row[x : x + 3]) for x in range(0, stride, channels)] for row in rows]
