"""Open a report in headless Chromium and read back what the page saw (for the browser tests).

The report has no script of its own; the check is a script this helper adds to a
copy of the page (``_check.html`` beside it, so relative paths resolve the same).
After ``load`` it waits for every ``<audio>`` to load its metadata (or fail),
then writes what it found into the DOM, which ``--dump-dom`` prints.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHECK = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push('error: ' + (e.message || (e.target && (e.target.src || e.target.currentSrc)) || 'unknown')), true);
for (const level of ['error', 'warn']) {
  const orig = console[level];
  console[level] = function (...a) { window.__errors.push(level + ': ' + a.join(' ')); orig.apply(console, a); };
}
window.addEventListener('load', () => {
  let written = false;
  const audios = [...document.querySelectorAll('audio')];
  const done = () => {
    if (written) return; written = true;
    const r = {images: [...document.images].map(i => [i.getAttribute('src'), i.naturalWidth, i.complete]),
               audio: audios.map(a => [a.getAttribute('src'), a.readyState, a.duration, a.error ? a.error.code : null]),
               errors: window.__errors};
    const pre = document.createElement('pre'); pre.id = '__check'; pre.textContent = JSON.stringify(r);
    document.body.appendChild(pre);
  };
  let pending = audios.filter(a => a.readyState < 1);
  if (!pending.length) return done();
  let left = pending.length;
  for (const a of pending) {
    const f = () => { if (--left === 0) done(); };
    a.addEventListener('loadedmetadata', f, {once: true});
    a.addEventListener('error', f, {once: true});
  }
  setTimeout(done, 15000);
});
</script>"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--mute-audio",
         "--autoplay-policy=no-user-gesture-required", "--enable-logging=stderr", "--v=0"]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def check_page(index: Path, timeout: float = 240) -> tuple[dict, str]:
    """``(what the page saw, Chromium's stderr)`` for ``index`` (an HTML file)."""
    html = index.read_text()
    page = index.with_name("_check.html")
    page.write_text(html.replace("<head>", "<head>" + CHECK, 1))
    with tempfile.TemporaryDirectory() as prof:
        proc = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={prof}", "--virtual-time-budget=30000",
                               "--dump-dom", page.resolve().as_uri()], check=False, capture_output=True, text=True,
                              timeout=timeout)
    page.unlink()
    m = re.search(r'<pre id="__check">(.*?)</pre>', proc.stdout, re.DOTALL)
    if not m:
        raise AssertionError(f"the check did not run; chromium said:\n{proc.stderr[-3000:]}")
    import html as _html

    return json.loads(_html.unescape(m.group(1))), proc.stderr


def screenshot(index: Path, png: Path, width: int = 1200, height: int = 4000, timeout: float = 240) -> Path:
    """A full-length screenshot of the page."""
    with tempfile.TemporaryDirectory() as prof:
        subprocess.run([chromium(), *FLAGS, f"--user-data-dir={prof}", "--virtual-time-budget=10000", "--hide-scrollbars",
                        f"--window-size={width},{height}", f"--screenshot={png.resolve()}", index.resolve().as_uri()],
                       capture_output=True, text=True, timeout=timeout, check=True)
    return png


def console_errors(stderr: str) -> list[str]:
    """Lines of Chromium's log that report a page's console error or an uncaught exception."""
    return [ln for ln in stderr.splitlines()
            if ("CONSOLE" in ln and ("error" in ln.lower() or "uncaught" in ln.lower())) or "Uncaught" in ln]
