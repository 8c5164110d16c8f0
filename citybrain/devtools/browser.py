"""The operations view in a real browser, as its tests and `make bench` drive it: `citybrain ui` as a process,
Debian's Chromium headless through Playwright (its executable path: Playwright's own download is not used)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from citybrain.devtools.accounts import DemoAccount

#: Each page's charts, by element id.
PAGES = {"city": ["chart-map"], "hotline": ["chart-stages", "chart-rates", "chart-departments", "chart-hotspots",
                                                  "chart-districts"],
         "data": ["chart-throughput", "chart-quality"], "security": ["chart-findings", "chart-days"]}
#: Per chart id, how many data items its series drew (zeros and gaps left out).
DRAWN = """(ids) => ids.map((id) => {
  const c = window.cb.charts[id];
  const series = c ? c.getOption().series : [];
  return [id, series.reduce((n, s) => n + ((s.data || []).filter((d) => d != null && (d.value ?? d) !== 0).length), 0)];
})"""


def chromium() -> str:
    """Debian's Chromium; the error says how to install it."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if not found:
        raise FileNotFoundError("Debian's chromium is not installed. Fix: `bash infra/browser.sh` (run by `make test`) "
                                "installs chromium and fonts-noto-cjk.")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(env: dict[str, str], log: Path) -> Iterator[str]:
    """`citybrain ui` on a free port with ``env`` (its CITYBRAIN_ settings); yields its URL once it answers."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")} | env | {"CITYBRAIN_UI_PORT": str(port)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("citybrain")), "ui"], env=full, stdout=out,
                                stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:   # up, and done with its start-up read of the lake
                try:
                    with urllib.request.urlopen(url + "/health", timeout=2) as r:
                        if json.loads(r.read()).get("warm_ms") is not None:
                            break
                    time.sleep(0.3)
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"citybrain ui did not come up: {log.read_text()[-2000:]}") from None
                    time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=20)


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def login(b: Any, url: str, account: DemoAccount, lang: str = "zh") -> tuple[Any, list[str], float]:
    """A new page logged in as ``account`` (password and a fresh one-time code); (page, the page's script errors, ms
    from submitting the login to the City page drawn)."""
    page = b.new_context(viewport={"width": 1440, "height": 900}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # What the view's Content-Security-Policy refused: the page as served must keep to its own policy.
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Content Security Policy" in m.text
            else None)
    page.add_init_script(f"localStorage.setItem('cb-lang', '{lang}')")
    page.goto(url + "/")
    page.fill("input[name=principal]", account.name)
    page.fill("input[name=password]", account.password)
    page.fill("input[name=code]", account.code())
    started = time.perf_counter()
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("body[data-rendered=city]", timeout=30_000)
    return page, errors, (time.perf_counter() - started) * 1000


def wait_until(page: Any, expression: str, timeout_s: float) -> Any:
    """Poll ``expression`` in the page until it is truthy; its value. Playwright's ``wait_for_function`` evaluates its
    predicate with ``eval`` inside the page, which the view's CSP (no 'unsafe-eval') refuses, as it should;
    ``evaluate`` goes through the browser's protocol and keeps the page's policy intact."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expression!r} still false after {timeout_s:.0f} s")
        page.wait_for_timeout(100)


def open_page(page: Any, name: str) -> tuple[dict[str, int], float]:
    """Click a page's tab; (items drawn per chart, ms from the click to the page drawn)."""
    started = time.perf_counter()
    page.click(f"#tabs button[data-page={name}]")
    page.wait_for_selector(f"body[data-rendered={name}]", timeout=30_000)
    ms = (time.perf_counter() - started) * 1000
    page.wait_for_timeout(400)   # ECharts animates in; a screenshot shows the settled chart
    return dict(page.evaluate(DRAWN, PAGES[name])), ms


def first_screens(env: dict[str, str], log: Path, account: DemoAccount) -> dict[str, float]:
    """ms to each page's first screen for a fresh server and session (nothing cached): the City page from the
    login, the others from their tab's click."""
    with serve(env, log) as url, browser() as b:
        page, errors, city_ms = login(b, url, account)
        out = {"city": round(city_ms)}
        for name in PAGES:
            if name != "city":
                out[name] = round(open_page(page, name)[1])
        if errors:
            raise RuntimeError(f"the pages raised errors: {errors[:3]}")
        return out
