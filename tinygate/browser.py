"""ONNX Runtime Web in headless Chromium: an ONNX artifact served over http from 127.0.0.1, loaded by
onnxruntime-web's WebAssembly build in a real browser page, run, timed and downloaded under network emulation.

The browser is Debian's (or any) Chromium driven by Playwright; onnxruntime-web comes from npm, pinned by the
lock file in tinygate/web/. `tinygate web-setup` installs both; nothing is downloaded at run time.
"""

from __future__ import annotations

import gzip
import http.server
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinygate.errors import GateError

BACKEND = "ort-web-wasm"
HERE = Path(__file__).parent / "web"
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
SETUP = "install them with `tinygate web-setup` (Chromium from Debian's packages, onnxruntime-web from npm)"


@dataclass(frozen=True)
class Network:
    """A network profile: download bandwidth and round-trip latency, as Chrome DevTools emulates them."""

    name: str
    kbit_s: float
    latency_ms: float

    def seconds(self, transfer_bytes: int) -> float:
        """Download time computed from the bytes on the wire: one round trip, then the bytes at the bandwidth."""
        return self.latency_ms / 1000 + transfer_bytes * 8 / (self.kbit_s * 1000)


NETWORKS = {n.name: n for n in (
    Network("slow_3g", 400, 400),  # the ONNX seed's checklist: 400 kbit/s, 400 ms
    Network("fast_3g", 1600, 150),
    Network("4g", 9000, 85),
)}


def ort_web_dir() -> Path:
    """Where onnxruntime-web's dist/ files are: $TINYGATE_ORT_WEB, else what `tinygate web-setup` installed."""
    given = os.environ.get("TINYGATE_ORT_WEB")
    return Path(given) if given else cache_home() / "node_modules" / "onnxruntime-web" / "dist"


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tinygate" / "ort-web"


def chromium_path() -> Path | None:
    given = os.environ.get("TINYGATE_CHROMIUM")
    if given:
        return Path(given)
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    return Path(found) if found else None


def missing() -> str | None:
    """What the web backend lacks on this machine, in one line, or None."""
    lacking = []
    found = chromium_path()
    if found is None:
        lacking.append("no Chromium (chromium, chromium-browser or google-chrome on PATH, or $TINYGATE_CHROMIUM)")
    elif not found.is_file():
        lacking.append(f"no Chromium ($TINYGATE_CHROMIUM {found} is not a file)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        lacking.append("no Playwright (pip install 'tinygate[web]')")
    absent = [f for f in ORT_FILES if not (ort_web_dir() / f).is_file()]
    if absent:
        lacking.append(f"no onnxruntime-web in {ort_web_dir()} ({', '.join(absent)})")
    return f"the web runtime needs a browser: {'; '.join(lacking)}; {SETUP}" if lacking else None


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str, bool]] = {}  # path -> (body, content type, gzip-encoded)
        self.posted: dict[str, bytes] = {}  # path -> body: the outputs the page sends back
        super().__init__(("127.0.0.1", 0), _Handler)

    def serve(self, path: str, body: bytes, content_type: str, compress: bool = False) -> None:
        self.files[path] = (gzip.compress(body, 9, mtime=0) if compress else body, content_type, compress)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        found = self.server.files.get(self.path.split("?")[0])
        if found is None:
            self.send_error(404)
            return
        body, content_type, compressed = found
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        # cross-origin isolation: SharedArrayBuffer for threads, and fine-grained performance.now() for timing
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        if compressed:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        if not self.path.startswith("/out/") or length > 1 << 31:
            self.send_error(400)
            return
        self.server.posted[self.path] = self.rfile.read(length)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:  # quiet
        pass


def _feeds(server: _Server, names: tuple[str, ...], inputs: tuple[np.ndarray, ...]) -> list[dict]:
    """Input tensors as the page takes them: name, shape, and where to fetch their float32 bytes."""
    feeds = []
    for i, (name, x) in enumerate(zip(names, inputs, strict=True)):
        server.serve(f"/in/{i}", np.ascontiguousarray(x, np.float32).tobytes(), "application/octet-stream")
        feeds.append({"name": name, "dims": list(x.shape), "src": f"/in/{i}"})
    return feeds


class Browser:
    """One headless Chromium page with onnxruntime-web loaded, a session per model.

        with Browser() as web:
            web.load(path)                          # {"create_ms": ..., ...}
            outputs = web.run(path, (x,), ("image",))   # numpy arrays, in the model's output order
    """

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._server: _Server | None = None
        self._pw = self._browser = self.page = None
        self._urls: list[tuple] = []  # models served, by index: (path, size, mtime)
        self._loaded: set[str] = set()
        self._outputs: dict[tuple, list[np.ndarray]] = {}  # (model url, input hash) -> outputs: quality, fidelity and
        self._kept = 0  # the web-vs-Python check each run the same inputs; up to KEEP_BYTES are kept, not rerun

    def __enter__(self) -> Browser:
        problem = missing()
        if problem:
            raise GateError(BACKEND, None, problem)
        from playwright.sync_api import sync_playwright

        self._server = _Server()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._server.serve("/", (HERE / "page.html").read_bytes(), "text/html")
        for name in ORT_FILES:
            kind = "text/javascript" if name.endswith(".mjs") else "application/wasm"
            self._server.serve(f"/ort/{name}", (ort_web_dir() / name).read_bytes(), kind)
        self._pw = sync_playwright().start()
        args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # root: no sandbox
        self._browser = self._pw.chromium.launch(executable_path=str(chromium_path()), headless=True, args=args)
        self.page = self._browser.new_page()
        self.page.goto(self.url("/"))
        self.page.wait_for_function("window.tinygateReady === true", timeout=30_000)
        return self

    def __exit__(self, *exc) -> None:
        for close in (getattr(self._browser, "close", None), getattr(self._pw, "stop", None),
                      getattr(self._server, "shutdown", None), getattr(self._server, "server_close", None)):
            if close is not None:
                close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    @property
    def version(self) -> str:
        return self.page.evaluate("window.tinygate.version")

    def load(self, model: Path) -> dict:
        """Serve the model and create a session from it in the page (again if it was loaded before: a fresh session,
        its creation timed). A model the web runtime refuses raises a GateError with the runtime's own message (the op
        or type it names)."""
        from tinygate.safety import onnx_files

        if onnx_files(model) != [model]:
            raise GateError(model, BACKEND, "keeps weights in external data files; the web runtime here loads "
                                            "single-file models")
        url = self._serve_model(model)
        try:
            return self.page.evaluate("([url, threads]) => window.tinygate.load(url, threads)", [url, self.threads])
        except Exception as exc:
            raise GateError(model, BACKEND, f"onnxruntime-web refuses the model: {_message(exc)}") from None
        finally:
            self._loaded.add(url)

    def _serve_model(self, model: Path) -> str:
        """The model's url in the page: one per file and version (its size and modification time)."""
        stat = model.stat()
        identity = (model.resolve(), stat.st_size, stat.st_mtime_ns)
        if identity not in self._urls:
            self._urls.append(identity)
            self._server.serve(f"/models/{len(self._urls) - 1}.onnx", model.read_bytes(), "application/octet-stream")
        return f"/models/{self._urls.index(identity)}.onnx"

    KEEP_BYTES = 512 << 20

    def run(self, model: Path, inputs: tuple[np.ndarray, ...], names: tuple[str, ...]) -> list[np.ndarray]:
        """Every output of the model on one set of inputs, computed in the page (once per process for the same
        inputs, while the outputs kept stay under KEEP_BYTES)."""
        import hashlib

        url = self._serve_model(model)
        key = (url, hashlib.sha256(b"".join(np.ascontiguousarray(x).tobytes() + str(x.shape).encode()
                                            for x in inputs)).hexdigest())
        if key not in self._outputs:
            arrays = self._run(url, model, inputs, names)
            self._kept += sum(a.nbytes for a in arrays)
            if self._kept <= self.KEEP_BYTES:
                self._outputs[key] = arrays
            return [a.copy() for a in arrays]
        return [a.copy() for a in self._outputs[key]]

    def _run(self, url: str, model: Path, inputs: tuple[np.ndarray, ...], names: tuple[str, ...]) -> list[np.ndarray]:
        if url not in self._loaded:
            self.load(model)
        try:
            outputs = self.page.evaluate("([url, inputs]) => window.tinygate.run(url, inputs)",
                                         [url, _feeds(self._server, names, inputs)])
        except Exception as exc:
            raise GateError(model, BACKEND, f"onnxruntime-web failed to run the model: {_message(exc)}") from None
        arrays = []
        for i, out in enumerate(outputs):
            if out["type"] != "float32":
                raise GateError(model, f"output {out['name']}",
                                f"is {out['type']} in the web runtime; the gate compares float32 outputs")
            body = self._server.posted.pop(f"/out/{i}")
            arrays.append(np.frombuffer(body, np.float32).reshape(out["dims"]).copy())
        return arrays

    def times_ms(self, model: Path, inputs: tuple[np.ndarray, ...], names: tuple[str, ...], warmup: int,
                 rounds: int) -> np.ndarray:
        """Per-call inference times (ms) measured in the page: performance.now() around session.run."""
        url = self._serve_model(model)
        if url not in self._loaded:
            self.load(model)
        return np.array(self.page.evaluate("([url, f, w, r]) => window.tinygate.time(url, f, w, r)",
                                           [url, _feeds(self._server, names, inputs), warmup, rounds]))

    def download_s(self, model: Path, network: Network) -> tuple[float, int]:
        """Seconds to fetch the model gzip-encoded under Chrome's network emulation of the profile (cache off), and
        the bytes on the wire."""
        self._server.serve("/download.onnx", model.read_bytes(), "application/octet-stream", compress=True)
        cdp = self.page.context.new_cdp_session(self.page)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        cdp.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": network.latency_ms, "downloadThroughput": network.kbit_s * 1000 / 8,
            "uploadThroughput": network.kbit_s * 1000 / 8})
        try:
            got = self.page.evaluate("(url) => window.tinygate.download(url)", "/download.onnx")
        finally:
            cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                          "uploadThroughput": -1})
            cdp.detach()
        return got["ms"] / 1000, len(self._server.files["/download.onnx"][0])


_shared: Browser | None = None


def shared(threads: int = 1) -> Browser:
    """The process's one browser, started on first use and closed at exit."""
    global _shared
    if _shared is None or _shared.threads != threads:
        if _shared is not None:
            _shared.__exit__(None, None, None)
        _shared = Browser(threads).__enter__()
        import atexit

        atexit.register(_shared.__exit__, None, None, None)
    return _shared


def web_artifact(art):
    """The ONNX artifact as the web runtime runs it: the same file, marked, under a digest of its own (so its scores
    are never the Python runtime's)."""
    from dataclasses import replace

    from tinygate.cache import key_of

    return replace(art, meta=(*art.meta, ("runtime", "web"), ("native", art.digest)),
                   digest=key_of(web=art.digest, runtime=BACKEND))


def native_artifact(art):
    """The artifact a web_artifact was made from, as ONNX Runtime in Python runs it."""
    from dataclasses import replace

    meta = dict(art.meta)
    return replace(art, meta=tuple((k, v) for k, v in art.meta if k not in ("runtime", "native")),
                   digest=meta["native"])


def runner_all(art, threads: int = 1):
    """A function from input arrays to every output, computed by onnxruntime-web in the shared page."""
    import onnx

    graph = onnx.load(str(art.path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    names = tuple(i.name for i in graph.input if i.name not in weights)
    web = shared(threads)
    web.load(art.path)
    return lambda *xs: web.run(art.path, xs, names)


def _message(exc: Exception) -> str:
    """The runtime's words from a Playwright error, on one line: without Playwright's prefix, the JavaScript stack,
    or the C++ source location and signature ONNX Runtime puts before its message."""
    import re

    text = str(exc).split("\n    at ")[0].strip()
    text = re.sub(r"^(Page\.evaluate: )?(Error: )?", "", text)
    text = re.sub(r"ERROR_MESSAGE: \S+:\d+ [^(]*\([^)]*\) ", "ERROR_MESSAGE: ", text)
    text = " ".join(text.split())
    return text if len(text) <= 600 else text[:597] + "..."
