"""Look at an HTML page as a person would: headless Chromium (Debian's `chromium`) driven through the
DevTools protocol (`websocket-client`), collecting console errors and taking screenshots.

Used by the report's test and to refresh the README's screenshots:
    python -m lcopt.browser results/report.html docs/report.png
    python -m lcopt.browser results/report.html docs/report-figure.png \
        results/plots/lcopt-demo/retrieval/quality_vs_memory.png
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "/usr/bin/chromium", "/usr/lib/chromium/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)


def find_chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Page:
    """One tab of a headless Chromium; every console error and uncaught exception lands in `errors`."""

    def __init__(self, chromium: str | None = None, width: int = 1400, height: int = 900, timeout: float = 60):
        import websocket

        chromium = chromium or find_chromium()
        if chromium is None:
            raise BrowserError("no Chromium found (Debian: apt-get install chromium)")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="lcopt-chromium-")
        self._proc = subprocess.Popen(
            [chromium, *FLAGS, f"--user-data-dir={self._profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port = self._port()
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
            page = next(t for t in targets if t["type"] == "page")
            self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
        except Exception:
            self.close()
            raise
        self._ids = itertools.count(1)
        self.errors: list[str] = []
        self._events: list[dict] = []
        self.frames: dict[str, str] = {}  # session id -> url of each out-of-process frame (e.g. a data: iframe)
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.send(method)
        # iframes with an opaque origin run in their own process: attach to each, so that their console
        # errors count too
        self.send("Target.setAutoAttach", autoAttach=True, waitForDebuggerOnStart=False, flatten=True)
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _port(self) -> int:
        active = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrowserError(f"Chromium exited at start with code {self._proc.returncode}")
            if active.is_file() and active.read_text().strip():
                return int(active.read_text().split()[0])
            time.sleep(0.1)
        raise BrowserError(f"Chromium did not open its DevTools port within {self.timeout} s")

    def _record(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Target.attachedToTarget":
            session = params["sessionId"]
            self.frames[session] = params.get("targetInfo", {}).get("url", "")[:80]
            for enable in ("Runtime.enable", "Log.enable"):
                self._ws.send(json.dumps({"id": next(self._ids), "method": enable, "sessionId": session}))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.errors.append(f"uncaught exception: {text}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
        self._events.append(message)

    def send(self, method: str, session: str | None = None, **params) -> dict:
        """One DevTools command (to the page, or to an attached frame's `session`); its result."""
        call_id = next(self._ids)
        command = {"id": call_id, "method": method, "params": params} | ({"sessionId": session} if session else {})
        self._ws.send(json.dumps(command))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._record(message)

    def _wait_event(self, method: str) -> None:
        if any(m.get("method") == method for m in self._events):
            return
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv())
            self._record(message)
            if message.get("method") == method:
                return
        raise BrowserError(f"no {method} within {self.timeout} s")

    def open(self, url: str, settle: float = 1.0) -> None:
        """Navigate and wait for the load event, then `settle` seconds for scripts to render. `errors`
        starts empty for each page."""
        self._events.clear()
        self.errors = []
        self.send("Page.navigate", url=url)
        self._wait_event("Page.loadEventFired")
        self.wait(settle)

    def wait(self, seconds: float) -> None:
        """Let the page run, still collecting its console messages."""
        self._ws.settimeout(0.2)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                try:
                    self._record(json.loads(self._ws.recv()))
                except Exception as exc:  # the socket's timeout: nothing arrived
                    if "timed out" not in str(exc).lower():
                        raise
        finally:
            self._ws.settimeout(self.timeout)

    def eval(self, expression: str, session: str | None = None):
        """The value of a JavaScript expression (awaited if it is a promise), in the page or in an attached
        frame's `session` (see `frames`)."""
        result = self.send(
            "Runtime.evaluate", session=session, expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}...: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def eval_in_frame(self, url_prefix: str, expression: str, timeout: float = 30.0):
        """The value of `expression` in the page's first child frame whose URL starts with `url_prefix`
        (e.g. a data: iframe), once that frame exists; evaluated in an isolated world (same DOM)."""
        deadline = time.monotonic() + timeout
        while True:
            children = self.send("Page.getFrameTree")["frameTree"].get("childFrames", [])
            frame = next((c["frame"] for c in children if c["frame"].get("url", "").startswith(url_prefix)), None)
            if frame is not None:
                break
            if time.monotonic() > deadline:
                raise BrowserError(f"no frame loading {url_prefix}... within {timeout} s")
            self.wait(0.5)
        context = self.send("Page.createIsolatedWorld", frameId=frame["id"], worldName="lcopt-check")
        result = self.send(
            "Runtime.evaluate", expression=expression, contextId=context["executionContextId"], returnByValue=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}...: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = True) -> None:
        """A PNG of the page; `full_page` first grows the viewport to the tallest content, so that pages
        which scroll inside a pane of the window's height (like Snakemake's report) show all of it."""
        if full_page:
            metrics = self.send("Page.getLayoutMetrics")["cssLayoutViewport"]
            tallest = self.eval("Math.max(...[...document.querySelectorAll('*')].map(e => e.scrollHeight))")
            height = max(int(tallest or 0), int(metrics["clientHeight"]))
            self.send(
                "Emulation.setDeviceMetricsOverride",
                width=int(metrics["clientWidth"]),
                height=min(height, 16000),
                deviceScaleFactor=1,
                mobile=False,
            )
            self.wait(0.5)
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=full_page)["data"]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            ws.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv: list[str]) -> int:
    """`python -m lcopt.browser PAGE.html SCREENSHOT.png [RESULT]`: a full-page screenshot of a page; for a
    Snakemake report, RESULT (a path as listed in the report, e.g. results/plots/m/retrieval/quality_vs_memory.png)
    opens that result first, as a reader clicking it would. Exits 1 on console errors (printed)."""
    if len(argv) not in (2, 3):
        print(main.__doc__, file=sys.stderr)
        return 2
    page_path, png = Path(argv[0]).resolve(), Path(argv[1])
    with Page() as page:
        page.open(page_path.as_uri(), settle=3)
        if len(argv) == 3:
            result = json.dumps(argv[2])
            kind = "img" if argv[2].endswith((".png", ".svg", ".jpg")) else "html"
            # the result in the main pane and its caption in the side bar, as after a click on it
            view = f"{{content: '{kind}', contentPath: results[{result}].data_uri, resultPath: {result}"
            view += ", navbarMode: 'resultinfo'}"
            page.eval(f"app.setView({view})")
            page.wait(3)
        page.screenshot(png)
        for error in page.errors:
            print(error, file=sys.stderr)
        return 1 if page.errors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
