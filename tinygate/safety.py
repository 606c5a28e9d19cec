"""Model files come from pull requests: refuse hostile ones before any library parses them.

- PyTorch files are only ever read with safetensors or torch.load(weights_only=True), and a run refuses
  to start when TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD would silently turn weights_only off;
- an ONNX model's external data must resolve inside the model's folder: no absolute path, no `..`, no
  symlink (checked here on the raw protobuf, then by the onnx checker on the file path);
- a Core ML package may hold no symlink, and every path its Manifest.json names stays inside it;
- a file larger than the cap is refused before it is read.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from tinygate.errors import GateError

DEFAULT_MAX_FILE_MB = 1024.0
_limit = {"max_file_mb": DEFAULT_MAX_FILE_MB, "max_call_s": 120.0, "max_step_s": 1800.0, "max_tensor_mb": 2048.0}


def set_max_call_seconds(value: float) -> None:
    """How long one inference call may run before it is stopped (the gate's --gate-max-call-seconds)."""
    if not value > 0:
        raise GateError("--gate-max-call-seconds", None, f"must be positive, got {value}")
    _limit["max_call_s"] = float(value)


def max_call_seconds() -> float:
    return _limit["max_call_s"]


def set_max_step_seconds(value: float) -> None:
    """How long one step (an export, a quantization, a conversion) may run (the gate's --gate-max-step-seconds)."""
    if not value > 0:
        raise GateError("--gate-max-step-seconds", None, f"must be positive, got {value}")
    _limit["max_step_s"] = float(value)


def max_step_seconds() -> float:
    return _limit["max_step_s"]


class _Expired(BaseException):
    """Raised by the alarm inside whatever code overran; a BaseException, so that a library's `except Exception`
    cannot swallow it. time_limit turns it into a GateError."""


_deadlines: list[list] = []  # [deadline, token], innermost last


def _arm() -> None:
    import signal
    import time

    if _deadlines:
        signal.setitimer(signal.ITIMER_REAL, max(min(d for d, _ in _deadlines) - time.monotonic(), 1e-3))
    else:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _alarm(signum, frame) -> None:
    import time

    expired = [d for d in _deadlines if d[0] <= time.monotonic() + 1e-3]
    if expired:
        expired[0][0] = float("inf")  # fired once: unwinding must not be interrupted again by the same deadline
        raise _Expired(expired[0][1])
    _arm()


@contextmanager
def time_limit(seconds: float, where: str | Path, what: str):
    """Stop the code inside after `seconds` of wall time with one line naming `where`, `what` ran too long and
    the option that sets the limit. Enforced by SIGALRM in the main thread (Python code is stopped between
    bytecodes, a native call when it returns); elsewhere it does nothing. Nests: the earliest deadline fires."""
    import signal
    import threading
    import time

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return
    if not math.isfinite(seconds) or seconds > 1e7:  # no limit to speak of (setitimer refuses inf)
        yield
        return
    token = object()
    previous = signal.getsignal(signal.SIGALRM) if not _deadlines else None
    if not _deadlines:
        signal.signal(signal.SIGALRM, _alarm)
    try:
        _deadlines.append([time.monotonic() + seconds, token])
        _arm()
        yield
    except _Expired as exc:
        if exc.args[0] is not token:
            raise
        raise GateError(where, None, f"{what} ran past {seconds:g} s and was stopped") from None
    finally:
        _deadlines[:] = [d for d in _deadlines if d[1] is not token]
        _arm()
        if not _deadlines:
            signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)


def set_max_tensor_mb(value: float) -> None:
    """The largest tensor a model may declare or be inferred to make (the gate's --gate-max-tensor-mb)."""
    if not value > 0:
        raise GateError("--gate-max-tensor-mb", None, f"must be positive, got {value}")
    _limit["max_tensor_mb"] = float(value)


def check_onnx_tensors(path: Path, max_mb: float | None = None) -> None:
    """Every tensor of the graph whose size ONNX shape inference can tell (with data propagation: a
    ConstantOfShape, a Reshape or an Expand fed by constants), against the cap, before a session allocates it.
    Tensors of a size known only at run time are not seen here (the time limit still stops them)."""
    import math

    import onnx

    max_mb = _limit["max_tensor_mb"] if max_mb is None else max_mb
    model = onnx.load(str(path), load_external_data=False)
    try:
        graph = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
    except Exception:  # inference refuses the graph: the runtime's own loader says why
        graph = model.graph
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        t = vi.type.tensor_type
        if not t.HasField("shape") or not all(d.HasField("dim_value") for d in t.shape.dim):
            continue
        dims = [d.dim_value for d in t.shape.dim]
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
        except Exception:
            itemsize = 8
        size = math.prod(dims) * itemsize
        if size > max_mb * 1e6:
            raise GateError(path, vi.name, f"tensor of shape {dims} would take {size / 1e6:,.0f} MB, over the "
                                           f"{max_mb:g} MB cap (--gate-max-tensor-mb)")


def set_max_file_mb(value: float) -> None:
    """The cap every check here applies (the gate's --gate-max-file-mb)."""
    if not value > 0:
        raise GateError("--gate-max-file-mb", None, f"must be positive, got {value}")
    _limit["max_file_mb"] = float(value)


def refuse_unsafe_environment() -> None:
    if os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        raise GateError("environment", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD",
                        "is set, which makes torch.load unpickle arbitrary code; unset it to run the gate")


def check_size(path: Path, max_mb: float | None = None) -> None:
    """Refuse a file (or a package folder) larger than the cap, before reading it."""
    max_mb = _limit["max_file_mb"] if max_mb is None else max_mb
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if size > max_mb * 1e6:
        raise GateError(path, None, f"is {size / 1e6:.1f} MB, over the {max_mb:g} MB cap (--gate-max-file-mb)")


MAX_IMAGE_MEGAPIXELS = 50.0  # one image of an image folder, before it is decoded (a 30000 x 30000 TIFF is 900)


def check_npz(path: Path, max_mb: float | None = None) -> None:
    """An .npz is a zip: its arrays may inflate far past the file's size. Refuse one whose members add up to more
    than the cap, from the zip's own directory, before anything is decompressed."""
    import zipfile

    max_mb = _limit["max_file_mb"] if max_mb is None else max_mb
    check_size(path, max_mb)
    try:
        with zipfile.ZipFile(path) as zf:
            inflated = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError):
        return  # not a zip: numpy's own reader says what it is
    if inflated > max_mb * 1e6:
        raise GateError(path, None, f"inflates to {inflated / 1e6:.1f} MB, over the {max_mb:g} MB cap "
                                    "(--gate-max-file-mb)")


def check_image(path: Path) -> None:
    """An image's pixel count, read from its header before it is decoded (every frame of a multipage file)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            frames = getattr(img, "n_frames", 1)
    except Exception:
        return  # unreadable: the decoder says why, in one line
    if frames > 1:
        raise GateError(path, None, f"holds {frames} frames (a multipage file); give one image per file")
    megapixels = width * height * frames / 1e6
    if megapixels > MAX_IMAGE_MEGAPIXELS:
        raise GateError(path, None, f"is {width} x {height}" + (f" x {frames} frames" if frames > 1 else "")
                                    + f" = {megapixels:.0f} megapixels, over the {MAX_IMAGE_MEGAPIXELS:g} cap")


def _inside(folder: Path, relative: str, where: Path, what: str) -> None:
    rel = PurePosixPath(relative.replace("\\", "/"))
    if rel.is_absolute() or Path(relative).is_absolute() or ".." in rel.parts:
        raise GateError(where, what, f"path {relative!r} points outside {folder}")
    target = folder / rel
    if target.is_symlink() or any(p.is_symlink() for p in target.parents if folder in p.parents or p == folder):
        raise GateError(where, what, f"path {relative!r} is or goes through a symlink")
    if folder.resolve() not in target.resolve().parents and target.resolve() != folder.resolve():
        raise GateError(where, what, f"path {relative!r} resolves outside {folder}")


def check_onnx(path: Path, max_mb: float | None = None) -> None:
    """Size cap, then every external-data location inside the model's folder, then the onnx checker."""
    import onnx
    from google.protobuf.message import DecodeError

    if path.is_symlink():
        raise GateError(path, None, "the ONNX file is a symlink")
    check_size(path, max_mb)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as exc:
        raise GateError(path, None, f"is not a readable ONNX model: {type(exc).__name__}: {exc}") from None
    for what, tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = _location(tensor)
            _inside(path.parent, location, path, f"{what} external data")
            check_size(path.parent / location, max_mb)
    try:
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise GateError(path, None, f"fails the ONNX checker: {first}") from None


def _location(tensor) -> str:
    return {e.key: e.value for e in tensor.external_data}.get("location", "")


def onnx_files(path: Path) -> list[Path]:
    """The ONNX file and the external-data files it names (after check_onnx has placed them inside its folder):
    together they are the model's size and its identity."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    locations = {_location(t) for _, t in _tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL}
    return [path] + [path.parent / loc for loc in sorted(locations)]


def _tensors(graph):
    """Every tensor a graph holds, with what it is: initializers, and the values of Constant nodes and other
    tensor attributes, in subgraphs (If, Loop, Scan) too: any of them may keep its data in an external file."""
    for tensor in graph.initializer:
        yield f"initializer {tensor.name}", tensor
    for sparse in graph.sparse_initializer:  # values and indices may each live in an external file
        yield f"sparse initializer {sparse.values.name}", sparse.values
        yield f"sparse initializer {sparse.values.name} indices", sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            where = f"{node.op_type} node {node.name or node.output[0]!r} attribute {attr.name}"
            if attr.HasField("t"):
                yield where, attr.t
            for tensor in attr.tensors:
                yield where, tensor
            for sparse in ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []) + list(attr.sparse_tensors):
                yield where, sparse.values
                yield f"{where} indices", sparse.indices
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def onnx_interface(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """An untrusted ONNX file's input names (initializers aside) and output names, in order, after check_onnx."""
    import onnx

    check_onnx(path)
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return (tuple(i.name for i in graph.input if i.name not in initializers), tuple(o.name for o in graph.output))


def onnx_input_dims(path: Path) -> dict[str, list[int | None]]:
    """Each graph input's dimensions: a fixed size, or None where it is named or left open."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return {i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
            for i in graph.input if i.name not in initializers and i.type.tensor_type.HasField("shape")}


def check_mlpackage(path: Path, max_mb: float | None = None) -> None:
    """No symlink anywhere in the package; every Manifest.json path inside it; size cap."""
    if path.is_symlink():
        raise GateError(path, None, "the package is a symlink")
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            if (Path(root) / name).is_symlink():
                raise GateError(path, str((Path(root) / name).relative_to(path)), "symlinks are refused in a package")
    manifest = path / "Manifest.json"
    try:
        entries = json.loads(manifest.read_text())["itemInfoEntries"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GateError(manifest, None, f"is not a readable Core ML manifest: {type(exc).__name__}: {exc}") from None
    for key, entry in entries.items():
        _inside(path / "Data", str(entry.get("path", "")), manifest, f"itemInfoEntries.{key}.path")
    check_size(path, max_mb)
