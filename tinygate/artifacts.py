"""Artifacts (what a step produces), their sizes, and how to load one into a callable runner.

Only safe loaders touch files: safetensors for torch weights, never an unpickler.
"""

from __future__ import annotations

import gzip
import importlib
import io
import platform
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinygate.errors import GateError

Runner = Callable[..., np.ndarray]  # one batched array per model input -> the first output


@dataclass(frozen=True)
class Artifact:
    kind: str  # torch | torchscript | onnx | mlpackage
    path: Path  # a file, or the .mlpackage folder
    digest: str
    factory: str  # the float model's factory, needed to rebuild torch modules from weights
    meta: tuple[tuple[str, str], ...] = ()

    def files(self) -> list[Path]:
        """Every file the artifact is made of: an ONNX model with its external data, a package's contents."""
        if self.kind == "onnx":
            from tinygate.safety import onnx_files

            return onnx_files(self.path)
        return [self.path] if self.path.is_file() else sorted(p for p in self.path.rglob("*") if p.is_file())

    def disk_bytes(self) -> int:
        """Bytes on disk, over every file of the artifact."""
        return sum(p.stat().st_size for p in self.files())

    def transfer_bytes(self) -> int:
        """Bytes sent over the network: gzip -9 of a single file, else a deflated zip of its files."""
        files = self.files()
        if files == [self.path]:
            return len(gzip.compress(self.path.read_bytes(), compresslevel=9, mtime=0))
        root = self.path if self.path.is_dir() else self.path.parent
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for p in files:
                zf.write(p, p.relative_to(root).as_posix())
        return len(buf.getvalue())


def build_module(factory: str):
    """Call a `module:callable` factory; it returns the torch.nn.Module without weights."""
    import torch

    module, func = factory.split(":")
    try:
        built = getattr(importlib.import_module(module), func)()
    except Exception as exc:  # the user's code: name it, in one line
        first = (str(exc).strip().splitlines() or [""])[0]
        raise GateError(factory, None, f"raised {type(exc).__name__}: {first}") from None
    if not isinstance(built, torch.nn.Module):
        raise GateError(factory, None, f"returned {type(built).__name__}, not a torch.nn.Module")
    return built


def load_state_dict(path: Path) -> dict:
    """Weights from a .safetensors file, or a .pt / .pth state dict read with weights_only=True (never
    unpickled beyond plain tensors); every value must be a finite tensor."""
    import torch

    from tinygate.safety import check_size, refuse_unsafe_environment

    check_size(path)
    if path.suffix in (".pt", ".pth"):
        refuse_unsafe_environment()
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # an UnpicklingError names the refused global: show it, on one line
            first = (str(exc).strip().splitlines() or [""])[0]
            raise GateError(path, None, f"refused by torch.load(weights_only=True): {type(exc).__name__}: "
                                        f"{first}") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise GateError(path, None, "is not a state dict (a mapping of names to tensors)")
    else:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise GateError(path, None, f"cannot read safetensors weights: {exc}") from None
    for name, tensor in state.items():
        if tensor.is_sparse or tensor.layout != torch.strided or tensor.is_meta:
            what = "a meta tensor, which holds no data" if tensor.is_meta else \
                f"a {tensor.layout} tensor; the gate reads dense weights (torch.Tensor.to_dense())"
            raise GateError(path, name, f"is {what}")
        if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64, torch.float16,
                                                               torch.bfloat16):
            raise GateError(path, name, f"is {tensor.dtype}; the gate reads float32, float16 or bfloat16 weights "
                                        "(quantized formats are made by its steps)")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise GateError(path, name, "holds NaN or Inf weights")
    return state


def float_weights(art: Artifact) -> dict[str, np.ndarray]:
    """A float model's weights by name: a torch state dict, or an ONNX model's float initializers."""
    if art.kind == "torch":
        return {k: v.numpy() for k, v in load_state_dict(art.path).items()}
    import onnx
    from onnx import numpy_helper

    from tinygate.safety import check_onnx

    check_onnx(art.path)
    model = onnx.load(str(art.path), load_external_data=True)
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {k: v for k, v in arrays.items() if v.dtype.kind == "f"}


def bn_folded_weights(art: Artifact) -> dict[str, np.ndarray]:
    """The weights of each convolution or linear layer followed by a BatchNorm, with the BatchNorm folded in
    (w * gamma / sigma per output channel, its bias shifted), as the ONNX exporter, PyTorch's int8 conversion and
    coremltools fold them before quantizing. Keyed by the layer's names, and `<weight>_bias` (the exporter's name
    for the bias of a layer that had none). Empty for a model without such pairs or without code to trace."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

    if art.kind != "torch" or not art.factory:
        return {}
    model = load_torch(art)
    modules = dict(model.named_modules())
    layer = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d,
             torch.nn.ConvTranspose3d, torch.nn.Linear)
    try:  # the graph says which BatchNorm reads which layer's output alone
        graph = torch.fx.symbolic_trace(model).graph
        pairs = [(n.args[0].target, n.target) for n in graph.nodes
                 if n.op == "call_module" and isinstance(modules.get(n.target), torch.nn.modules.batchnorm._BatchNorm)
                 and isinstance(n.args[0], torch.fx.Node) and n.args[0].op == "call_module"
                 and isinstance(modules.get(n.args[0].target), layer) and len(n.args[0].users) == 1]
    except Exception:  # code fx cannot trace: a BatchNorm registered right after the layer it normalizes
        names = list(modules)
        pairs = [(a, b) for a, b in zip(names, names[1:], strict=False) if isinstance(modules[a], layer)
                 and isinstance(modules[b], torch.nn.modules.batchnorm._BatchNorm)]
    out = {}
    with torch.no_grad():
        for name, bn_name in pairs:
            mod, bn = modules[name], modules[bn_name]
            if bn.running_mean is None:
                continue
            if isinstance(mod, torch.nn.Linear):
                w, b = fuse_linear_bn_weights(mod.weight, mod.bias, bn.running_mean, bn.running_var, bn.eps,
                                              bn.weight, bn.bias)
            else:
                w, b = fuse_conv_bn_weights(mod.weight, mod.bias, bn.running_mean, bn.running_var, bn.eps,
                                            bn.weight, bn.bias,
                                            transpose=isinstance(mod, torch.nn.modules.conv._ConvTransposeNd))
            prefix = f"{name}." if name else ""
            out[f"{prefix}weight"] = w.detach().numpy()
            out[f"{prefix}bias"] = out[f"{prefix}weight_bias"] = b.detach().numpy()
    return out


def load_torch(art: Artifact):
    """The float or pruned torch model: the factory's module with its weights loaded."""
    model = build_module(art.factory)
    state = load_state_dict(art.path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        problem = " ".join(str(exc).split())
        raise GateError(art.path, None, f"weights do not fit {art.factory}: {problem}") from None
    return model.eval()


def _onnx_call(session, path: Path, feeds: dict) -> list[np.ndarray]:
    """One ONNX Runtime call, stopped (ONNX Runtime's own terminate flag) when it runs past the time limit: a
    Loop with a huge trip count must not hang the gate."""
    import threading

    import onnxruntime as ort

    from tinygate.safety import max_call_seconds

    options = ort.RunOptions()
    limit = max_call_seconds()
    timer = threading.Timer(limit, lambda: setattr(options, "terminate", True))
    timer.start()
    try:
        return session.run(None, feeds, options)
    except Exception:
        if options.terminate:
            raise GateError(path, None, f"one inference ran past {limit:g} s and was stopped "
                                        "(--gate-max-call-seconds)") from None
        raise
    finally:
        timer.cancel()


def save_torch(module, out: Path) -> Path:
    """Write a torch module's weights as a torch step's artifact (out/model.safetensors; its architecture stays
    the float model's factory)."""
    from safetensors.torch import save_model

    path = out / "model.safetensors"
    save_model(module, str(path))
    return path


def trace_torch(art: Artifact, xs: tuple[np.ndarray, ...], path: Path | None = None):
    """A PyTorch model frozen as TorchScript (its graph as today's code computes it), saved to `path` if given:
    what a baseline keeps so that its latency is timed later without the code of that day."""
    import torch

    model = load_torch(art)
    with torch.inference_mode(), warnings.catch_warnings():  # tracer notes and TorchScript's deprecation
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, tuple(torch.from_numpy(x) for x in xs), check_trace=False)
        if path is not None:
            traced.save(str(path))
    return traced


def runner(art: Artifact, threads: int = 1) -> Runner:
    """A function from batched input arrays (one per model input) to the model's first output."""
    run = runner_all(art, threads)
    return lambda *xs: run(*xs)[0]


def runner_all(art: Artifact, threads: int = 1, evaluating: bool = False) -> Callable[..., list[np.ndarray]]:
    """A function from batched input arrays (one per model input, in order) to every output, in order.

    `evaluating` (untimed passes over a data set): a PyTorch model with 2-D convolutions gets its 4-D inputs in
    channels-last memory, which oneDNN convolves about twice as fast (the same values, to float rounding); a model
    that fails on them (a .view() needing row-major memory) runs them as given from then on. Timing keeps the
    layout the user's code passes."""
    if dict(art.meta).get("runtime") == "web":
        from tinygate import browser
        from tinygate.safety import check_onnx_tensors

        check_onnx_tensors(art.path)
        return browser.runner_all(art, threads)
    if art.kind in ("torch", "torchscript"):
        import torch

        from tinygate.safety import max_call_seconds, time_limit

        torch.set_num_threads(threads)
        if art.kind == "torch":
            model = load_torch(art)
        else:
            if "engine" in dict(art.meta):  # a quantized model runs on the engine it was built for
                torch.backends.quantized.engine = dict(art.meta)["engine"]
            with warnings.catch_warnings():  # TorchScript is deprecated; see tinygate/steps/torch_int8.py
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(str(art.path))

        channels_last = evaluating and art.kind == "torch" and any(isinstance(m, torch.nn.Conv2d)
                                                                    for m in model.modules())

        def call(ts: list) -> object:
            with torch.inference_mode(), time_limit(max_call_seconds(), art.path,
                                                    "one inference (--gate-max-call-seconds)"):
                return model(*ts)

        def run(*xs: np.ndarray) -> list[np.ndarray]:
            nonlocal channels_last
            ts = [torch.from_numpy(x) for x in xs]
            if channels_last:
                try:
                    out = call([t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in ts])
                except GateError:  # past the time limit: not tried again
                    raise
                except Exception:  # the model needs row-major memory (or fails anyway): as given, from now on
                    channels_last = False
            if not channels_last:
                out = call(ts)
            outs = list(out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else [out])
            if not outs or not all(isinstance(t, torch.Tensor) for t in outs):
                got = type(out).__name__ + (f" of {', '.join(sorted({type(t).__name__ for t in outs}))}"
                                            if isinstance(out, (tuple, list, dict)) else "")
                raise GateError(art.path, None, f"the model's forward returned {got}; it must return a tensor, "
                                                "or a tuple, list or dict of tensors")
            return [np.require(t.numpy(), requirements="C") for t in outs]  # row-major; a 0-d output stays 0-d
        return run
    if art.kind == "onnx":
        import onnxruntime as ort

        from tinygate.safety import check_onnx, check_onnx_tensors

        check_onnx(art.path)
        check_onnx_tensors(art.path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only: ONNX Runtime's warnings flood a gate's output
        session = ort.InferenceSession(str(art.path), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return lambda *xs: _onnx_call(session, art.path, dict(zip(names, xs, strict=True)))
    if art.kind == "mlpackage":
        from tinygate.safety import check_mlpackage

        check_mlpackage(art.path)
        if coreml_backend() == COREML_RUNTIME:
            import coremltools as ct

            model = ct.models.MLModel(str(art.path))
            spec = model.get_spec().description
            in_names, out_names = [i.name for i in spec.input], [o.name for o in spec.output]
            return lambda *xs: [np.asarray(v).astype(np.float32) for v in
                                map(model.predict(dict(zip(in_names, xs, strict=True))).get, out_names)]
        from tinygate.mil import Interpreter, UnsupportedOps

        try:
            interpreter = Interpreter(art.path)
        except UnsupportedOps as exc:
            raise GateError(art.path, None, str(exc).split(": ", 1)[1]) from exc  # the cause: init says "off macOS"
        in_names = interpreter.input_names
        return lambda *xs: [v.astype(np.float32) for v in
                            map(interpreter(dict(zip(in_names, xs, strict=True))).get, interpreter.output_names)]
    raise ValueError(f"unknown artifact kind {art.kind!r}")


COREML_RUNTIME, MIL_INTERPRETER = "Core ML runtime", "MIL interpreter"


def coreml_backend() -> str:
    """What computes Core ML outputs here: Apple's runtime (MLModel.predict) on macOS, else tinygate's
    reference MIL interpreter (tinygate/mil.py). Every reported Core ML number names which."""
    return COREML_RUNTIME if platform.system() == "Darwin" else MIL_INTERPRETER


def backend_name(kind: str, meta: tuple = ()) -> str:
    if dict(meta).get("runtime") == "web":
        return "ort-web-wasm"
    return {"torch": "torch", "torchscript": "torch", "onnx": "onnxruntime"}.get(kind) or coreml_backend()
