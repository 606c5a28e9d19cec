"""ONNX Runtime Web in headless Chromium: an ONNX artifact served over http from 127.0.0.1, loaded by
onnxruntime-web's WebAssembly build in a real browser page, run, timed and downloaded under network emulation.

The browser is Debian's (or any) Chromium, launched and driven by Playwright over a pipe; a call running past
--gate-max-call-seconds is stopped by killing Chromium's browser process (its id asked of Chromium over CDP).
onnxruntime-web comes from npm, pinned by the lock file in tinygate/web/. `tinygate web-setup` installs both;
nothing is downloaded at run time.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import secrets
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinygate.errors import GateError

BACKEND = "ort-web-wasm"
HERE = Path(__file__).parent / "web"
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
SETUP = "install them with `tinygate web-setup` (Chromium from Debian's packages, onnxruntime-web from npm)"
START_SECONDS = 60.0  # Chromium's start and the page's load of onnxruntime-web


@dataclass(frozen=True)
class Network:
    """A network profile: download bandwidth and round-trip latency, as DevTools network emulation takes them."""

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


@functools.cache
def runtime_digest() -> str:
    """What the web runtime's results depend on besides the model: onnxruntime-web's files and the page. Part of
    every web artifact's digest, so an upgrade never reuses old scores."""
    h = hashlib.sha256((HERE / "page.html").read_bytes())
    for name in ORT_FILES:
        path = ort_web_dir() / name
        h.update(name.encode() + (hashlib.sha256(path.read_bytes()).digest() if path.is_file() else b"absent"))
    return h.hexdigest()


class _Server(http.server.ThreadingHTTPServer):
    """Serves the page, onnxruntime-web, models and inputs under a random per-run prefix to the browser only (the
    Host header must be this server's), and takes back the outputs the page posts, only those expected, capped."""

    daemon_threads = True

    def __init__(self) -> None:
        self.prefix = f"/{secrets.token_hex(16)}"
        self.files: dict[str, tuple[bytes, str, bool]] = {}  # path -> (body, content type, gzip-encoded)
        self.expected: dict[str, int] = {}  # output path -> largest body accepted
        self.posted: dict[str, bytes] = {}
        super().__init__(("127.0.0.1", 0), _Handler)
        self.host = f"127.0.0.1:{self.server_address[1]}"

    def serve(self, path: str, body: bytes, content_type: str, compress: bool = False) -> str:
        self.files[self.prefix + path] = (gzip.compress(body, 9, mtime=0) if compress else body, content_type,
                                          compress)
        return self.prefix + path

    def drop(self, path: str) -> None:
        self.files.pop(self.prefix + path, None)


class _Handler(http.server.BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # TCP_NODELAY: with Nagle, each tensor's last segment waited ~40 ms for an ACK

    def _foreign(self) -> bool:
        if self.headers.get("Host") != self.server.host:
            self.send_error(403)
            return True
        return False

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self._foreign():
            return
        found = self.server.files.get(self.path.split("?")[0])
        if found is None:
            self.send_error(404)
            return
        body, content_type, compressed = found
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        # cross-origin isolation: fine-grained performance.now() for timing (and SharedArrayBuffer for threads)
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        if compressed:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        if self._foreign():
            return
        cap = self.server.expected.pop(self.path, None)
        try:
            length = int(self.headers.get("Content-Length", "-1"))
        except ValueError:
            length = -1
        if cap is None or not 0 <= length <= cap:
            self.send_error(400)
            return
        self.server.posted[self.path] = self.rfile.read(length)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:  # quiet
        pass


class Browser:
    """One headless Chromium page with onnxruntime-web loaded, one model session at a time.

        with Browser() as web:
            web.load(path, digest)                              # {"create_ms": ..., ...}
            outputs = web.run(path, digest, (x,), ("image",))   # numpy arrays, in the model's output order
    """

    KEEP_BYTES = 512 << 20  # outputs kept per browser: quality, fidelity and the web-vs-Python check share them

    def __init__(self, threads: int = 1) -> None:
        # WebAssembly threads need cross-origin isolation, which many sites lack: one for timing, as most users get;
        # an evaluation (outputs, not times) takes the cores it may use (Chromium fixes the count per page)
        self.threads = threads
        self._server: _Server | None = None
        self._pid: int | None = None  # Chromium's browser process
        self._profile: Path | None = None  # its --user-data-dir
        self._pw = self._browser = self.page = None
        self._current: tuple[str, str] | None = None  # (digest, url) of the model whose session the page holds
        self._outputs: dict[tuple, list[np.ndarray]] = {}  # (model digest, input hash) -> outputs
        self._kept = 0
        self._crashed = False
        self._io: dict[str, tuple] = {}  # model digest -> (input names and types, output names and shapes)
        self.version = ""  # onnxruntime-web's
        self._progress: Callable[[], None] | None = None  # restarts the running call's time limit
        self.chromium = ""

    def __enter__(self) -> Browser:
        problem = missing()
        if problem:
            raise GateError(BACKEND, None, problem)
        try:
            self._start()
        except GateError:
            self.__exit__(None, None, None)
            raise
        except Exception as exc:
            self.__exit__(None, None, None)
            raise GateError(chromium_path(), BACKEND, f"the browser did not start: {_message(exc)}") from None
        return self

    def _start(self) -> None:
        self._server = _Server()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        html = (HERE / "page.html").read_bytes().replace(b"/PREFIX", self._server.prefix.encode())
        page = self._server.serve("/", html, "text/html")
        for name in ORT_FILES:
            kind = "text/javascript" if name.endswith(".mjs") else "application/wasm"
            self._server.serve(f"/ort/{name}", (ort_web_dir() / name).read_bytes(), kind)
        args = ["--disable-dev-shm-usage"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # Chromium refuses to run as root with its sandbox
            args.append("--no-sandbox")
        self._pw = _playwright_acquire()
        # Playwright talks to Chromium over a pipe: no DevTools port that another local process could drive
        self._browser = self._pw.chromium.launch(executable_path=str(chromium_path()), headless=True, args=args,
                                                 timeout=START_SECONDS * 1000)
        cdp = self._browser.new_browser_cdp_session()
        self._pid = next(p["id"] for p in cdp.send("SystemInfo.getProcessInfo")["processInfo"]
                         if p["type"] == "browser")  # what the watchdog kills
        cdp.detach()
        self._profile = _profile_of(self._pid)  # Playwright's own, left behind when Chromium is killed
        self.page = self._browser.new_page()
        # the page says when each inference of a chunk ends: the time limit starts afresh for the next (_evaluate)
        self.page.expose_function("tinygateProgress", lambda: self._progress and self._progress())
        self.page.on("crash", lambda _: setattr(self, "_crashed", True))
        self.page.goto(f"http://{self._server.host}{page}")
        self.page.wait_for_function("window.tinygateReady === true", timeout=START_SECONDS * 1000)
        self.version = self.page.evaluate("window.tinygate.version")
        self.chromium = self._browser.version
        self._warm()

    def _warm(self) -> None:
        """Create and drop one session of a one-op model, so the first model's session creation is not also
        WebAssembly's start-up (hundreds of ms that a model's own load time must not include)."""
        from onnx import TensorProto, helper

        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "warm",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
        url = self._server.serve("/warm.onnx", model.SerializeToString(), "application/octet-stream")
        self._evaluate("([url, threads]) => window.tinygate.load(url, threads)", [url, self.threads], "warm-up")
        self._evaluate("(url) => window.tinygate.release(url)", url, "warm-up")

    def __exit__(self, *exc) -> None:
        for close in (getattr(self._browser, "close", None), self._kill, self._pw and _playwright_release,
                      getattr(self._server, "shutdown", None), getattr(self._server, "server_close", None)):
            if close is not None:
                try:
                    close()
                except Exception:  # closing what is half started or already gone: go on with the rest
                    pass
        if self._profile is not None and self._profile.name.startswith("playwright_"):
            shutil.rmtree(self._profile, ignore_errors=True)
        self._browser = self._pw = self._server = self._pid = self._profile = None

    def _kill(self) -> None:
        if self._pid is not None:
            try:
                os.kill(self._pid, 9)
            except ProcessLookupError:
                pass

    @property
    def alive(self) -> bool:
        """The connection to Chromium holds and the page has not crashed or closed."""
        return (self._browser is not None and self._browser.is_connected() and self.page is not None
                and not self.page.is_closed() and not self._crashed)

    def _evaluate(self, script: str, arg, what: str, calls: int = 1, limit: float | None = None):
        """page.evaluate under --gate-max-call-seconds per inference it makes (`calls`), or `limit` seconds: past it
        the browser is killed (a model looping in WebAssembly cannot be interrupted otherwise), a GateError names the
        limit, and the next check starts a fresh browser. A page function that runs several inferences and calls
        tinygateProgress() after each (run) gets the limit afresh for each one."""
        import time

        from tinygate.safety import max_call_seconds

        each = max_call_seconds()
        limit = limit if limit is not None else each * calls
        fired, done = threading.Event(), threading.Event()
        deadline = [time.monotonic() + limit]

        def watch() -> None:
            while not done.wait(max(0.01, min(0.25, deadline[0] - time.monotonic()))):
                if time.monotonic() >= deadline[0]:
                    fired.set()
                    self._kill()
                    return
        self._progress = lambda: deadline.__setitem__(0, time.monotonic() + each)
        watchdog = threading.Thread(target=watch, daemon=True)
        watchdog.start()
        try:
            return self.page.evaluate(script, arg)
        except Exception:
            if fired.is_set():
                raise GateError(what, BACKEND, f"ran past {limit:g} s in the browser and was stopped "
                                               f"(--gate-max-call-seconds{f' x {calls} calls' if calls > 1 else ''})"
                                ) from None
            raise
        finally:
            done.set()
            self._progress = None

    def load(self, model: Path, digest: str) -> dict:
        """Serve the model and create a session from it in the page (a fresh one, its creation timed), releasing
        the previous model's. A model the web runtime refuses raises a GateError with the runtime's own message
        (the op, opset or type it names)."""
        from tinygate.safety import onnx_files

        if onnx_files(model) != [model]:
            raise GateError(model, BACKEND, "keeps weights in external data files; the web runtime here loads "
                                            "single-file models (an ort_optimize step first writes one under 1 GB)")
        if digest not in self._io:
            self._io[digest] = (self._check_inputs(model), self._session_outputs(model))
        if self._current is not None:
            self._evaluate("(url) => window.tinygate.release(url)", self._current[1], model)
            self._server.files.pop(self._current[1], None)
            self._current = None
        url = self._server.serve(f"/models/{digest}.onnx", model.read_bytes(), "application/octet-stream")
        try:
            info = self._evaluate("([url, threads]) => window.tinygate.load(url, threads)", [url, self.threads], model)
        except GateError:
            self._server.files.pop(url, None)
            raise
        except Exception as exc:
            self._server.files.pop(url, None)
            raise GateError(model, BACKEND, f"onnxruntime-web refuses the model: {_message(exc)}") from None
        self._current = (digest, url)
        return info

    @staticmethod
    def _check_inputs(model: Path) -> list[str]:
        import onnx

        graph = onnx.load(str(model), load_external_data=False).graph
        weights = {t.name for t in graph.initializer}
        for i in graph.input:
            if i.name not in weights and i.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
                kind = onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type).lower()
                raise GateError(model, f"input {i.name}", f"is {kind}; the web backend feeds float32 inputs only")
        return [i.name for i in graph.input if i.name not in weights]

    CHUNK = 64  # inputs per page call: fetched as one body, their outputs posted back as one ...
    CHUNK_BYTES = 64 << 20  # ... fewer where one input's outputs are large (the page holds a chunk's): tinybeauty 64

    def run(self, model: Path, digest: str, inputs: tuple[np.ndarray, ...], names: tuple[str, ...]) -> list[np.ndarray]:
        """Every output of the model on one set of inputs, computed in the page (once per process for the same
        inputs, while the outputs kept stay under KEEP_BYTES)."""
        return self.run_many(model, digest, [inputs], names)[0]

    def run_many(self, model: Path, digest: str, samples: list[tuple[np.ndarray, ...]],
                 names: tuple[str, ...]) -> list[list[np.ndarray]]:
        """`run` on each set of inputs, CHUNK to a page call, in one request each way (an evaluation of 100 images
        took 150 ms an image, half of it in two HTTP requests per image)."""
        keys = [(digest, hashlib.sha256(b"".join(np.ascontiguousarray(x).tobytes() + str(x.shape).encode()
                                                 for x in xs)).hexdigest()) for xs in samples]
        found = [self._outputs.get(key) for key in keys]
        todo = [i for i, arrays in enumerate(found) if arrays is None]
        at, chunk = 0, 1  # the first alone: its outputs' size sets how many more go in one page call
        while at < len(todo):
            batch = todo[at:at + chunk]
            for i, arrays in zip(batch, self._run(model, digest, [samples[i] for i in batch], names), strict=True):
                found[i] = arrays
                size = sum(a.nbytes for a in arrays)
                chunk = max(1, min(self.CHUNK, self.CHUNK_BYTES // max(size, 1)))
                if self._kept + size <= self.KEEP_BYTES:
                    self._kept += size
                    self._outputs[keys[i]] = arrays
            at += len(batch)
        return [[a.copy() for a in arrays] for arrays in found]

    def _run(self, model: Path, digest: str, samples: list[tuple[np.ndarray, ...]],
             names: tuple[str, ...]) -> list[list[np.ndarray]]:
        if self._current is None or self._current[0] != digest:
            self.load(model, digest)
        post = f"{self._server.prefix}/out"
        # 8 bytes an element, as int64 outputs are said too; an output of unknown shape: up to 2 GB
        sizes = [8 * int(np.prod(shape)) if shape and all(d > 0 for d in shape) else 1 << 31
                 for _, shape in self._io[digest][1]]
        cap = self._server.expected[post] = min(len(samples) * sum(sizes), 1 << 31)
        src = self._server.serve("/in", b"".join(np.ascontiguousarray(x, np.float32).tobytes()
                                                 for xs in samples for x in xs), "application/octet-stream")
        layout = [[{"name": name, "dims": list(x.shape)} for name, x in zip(names, xs, strict=True)] for xs in samples]
        try:
            described = self._evaluate("([url, src, layout, post, cap]) => window.tinygate.run(url, src, layout, "
                                       "post, cap)", [self._current[1], src, layout, post, cap], model)
        except GateError:
            raise
        except Exception as exc:
            raise GateError(model, BACKEND, f"onnxruntime-web failed to run the model: {_message(exc)}") from None
        finally:
            self._server.expected.pop(post, None)
            self._server.drop("/in")
        body = self._server.posted.pop(post, None)
        if body is None:
            raise GateError(model, BACKEND, "the outputs were not received from the page")
        results, at = [], 0
        for outs in described:
            arrays = []
            for out in outs:
                if out["type"] != "float32":
                    raise GateError(model, f"output {out['name']}", f"is {out['type']} in the web runtime; the gate "
                                                                   "compares float32 outputs")
                count = int(np.prod(out["dims"]))
                if at + 4 * count > len(body):
                    raise GateError(model, f"output {out['name']}", "was cut short on its way from the page")
                arrays.append(np.frombuffer(body, np.float32, count, at).reshape(out["dims"]).copy())
                at += 4 * count
            results.append(arrays)
        if at != len(body):
            raise GateError(model, BACKEND, f"the page posted {len(body)} bytes of outputs, not the {at} described")
        return results

    @staticmethod
    def _session_outputs(model: Path) -> list[tuple[str, list]]:
        """Each graph output's name and declared shape (symbolic dimensions as 0), for the size cap of its post."""
        import onnx

        graph = onnx.load(str(model), load_external_data=False).graph
        return [(o.name, [d.dim_value for d in o.type.tensor_type.shape.dim]) for o in graph.output]

    def _feeds(self, names: tuple[str, ...], inputs: tuple[np.ndarray, ...]) -> list[dict]:
        """Input tensors as the page takes them: name, shape, and where to fetch their float32 bytes."""
        feeds = []
        for i, (name, x) in enumerate(zip(names, inputs, strict=True)):
            src = self._server.serve(f"/in/{i}", np.ascontiguousarray(x, np.float32).tobytes(),
                                     "application/octet-stream")
            feeds.append({"name": name, "dims": list(x.shape), "src": src})
        return feeds

    def times_ms(self, model: Path, digest: str, inputs: tuple[np.ndarray, ...], names: tuple[str, ...],
                 warmup: int, rounds: int) -> np.ndarray:
        """Per-call inference times (ms) measured in the page: performance.now() around session.run."""
        if self._current is None or self._current[0] != digest:
            self.load(model, digest)
        return np.array(self._evaluate("([url, f, w, r]) => window.tinygate.time(url, f, w, r)",
                                       [self._current[1], self._feeds(names, inputs), warmup, rounds], model,
                                       calls=warmup + rounds))

    def download_s(self, model: Path, network: Network) -> tuple[float, int]:
        """Seconds to fetch the model gzip-encoded under Chrome's network emulation of the profile (cache off), and
        the bytes on the wire."""
        url = self._server.serve("/download.onnx", model.read_bytes(), "application/octet-stream", compress=True)
        cdp = self.page.context.new_cdp_session(self.page)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        cdp.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": network.latency_ms, "downloadThroughput": network.kbit_s * 1000 / 8,
            "uploadThroughput": network.kbit_s * 1000 / 8})
        wire = len(self._server.files[url][0])
        try:  # limited to twice the computed time and a minute: a download is no inference
            got = self._evaluate("(url) => window.tinygate.download(url)", url, model,
                                 limit=2 * network.seconds(wire) + 60)
        finally:
            self._server.drop("/download.onnx")
            if self.alive:
                cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                              "downloadThroughput": -1, "uploadThroughput": -1})
                cdp.detach()
        return got["ms"] / 1000, wire


def _profile_of(pid: int) -> Path | None:
    """A Chromium process's --user-data-dir, from its command line (Linux), or None."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    found = [a.split(b"=", 1)[1].decode() for a in args if a.startswith(b"--user-data-dir=")]
    return Path(found[0]) if found else None


_shared: dict[int, Browser] = {}
_failed: dict[int, GateError] = {}  # by thread count: a browser that did not start is not tried again
_pw: list = [None, 0]  # Playwright's driver and how many browsers use it: its sync API runs one per thread


def _playwright_acquire():
    from playwright.sync_api import sync_playwright

    if _pw[0] is None:
        _pw[0] = sync_playwright().start()
    _pw[1] += 1
    return _pw[0]


def _playwright_release() -> None:
    _pw[1] -= 1
    if _pw[1] <= 0:
        driver, _pw[0], _pw[1] = _pw[0], None, 0
        driver.stop()


def shared(threads: int = 1) -> Browser:
    """The process's browser of that many WebAssembly threads (one: what timing and loading use; an evaluation asks
    for its cores: 99 -> 59 ms an image on two), started on first use and closed at exit; one that failed to start
    is not tried again (every web check repeats its one line), and one that was stopped is started afresh."""
    if threads in _failed:
        raise _failed[threads]
    if threads in _shared and not _shared[threads].alive:
        _shared.pop(threads).__exit__(None, None, None)
    if threads not in _shared:
        try:
            _shared[threads] = Browser(threads).__enter__()
        except GateError as exc:
            _failed[threads] = exc
            raise
        import atexit

        atexit.register(_close)
    return _shared[threads]


def _close() -> None:
    while _shared:
        _shared.popitem()[1].__exit__(None, None, None)


def web_artifact(art):
    """The ONNX artifact as the web runtime runs it: the same file, marked, under a digest of its own that covers
    onnxruntime-web and the page (so its scores are never the Python runtime's, nor an older web runtime's)."""
    from dataclasses import replace

    from tinygate.cache import key_of

    return replace(art, meta=(*art.meta, ("runtime", "web"), ("native", art.digest)),
                   digest=key_of(web=art.digest, runtime=BACKEND, version=runtime_digest()))


def native_artifact(art):
    """The artifact a web_artifact was made from, as ONNX Runtime in Python runs it."""
    from dataclasses import replace

    meta = dict(art.meta)
    return replace(art, meta=tuple((k, v) for k, v in art.meta if k not in ("runtime", "native")),
                   digest=meta["native"])


def runner_all(art, threads: int = 1):
    """A function from input arrays to every output, computed by onnxruntime-web in the shared page of `threads`
    WebAssembly threads (outputs only: timing in the page is web.py's, on one thread)."""
    web = shared(threads)
    web.load(art.path, art.digest)
    names = tuple(web._io[art.digest][0])  # the graph's inputs, read once by load
    def run(*xs):
        return shared(threads).run(art.path, art.digest, xs, names)
    run.many = lambda samples: shared(threads).run_many(art.path, art.digest, samples, names)  # the whole set
    return run


def _message(exc: Exception) -> str:
    """The runtime's words from a Playwright error, on one line: without Playwright's prefix, the JavaScript stack,
    or the C++ source location and signature ONNX Runtime puts before its message."""
    import re

    text = str(exc).split("\n    at ")[0].strip()
    text = re.sub(r"^(Page\.evaluate: )?(Error: )?", "", text)
    text = re.sub(r"ERROR_MESSAGE: \S+:\d+ [^(]*\([^)]*\) ", "ERROR_MESSAGE: ", text)
    text = " ".join(text.split())
    return text if len(text) <= 600 else text[:597] + "..."

