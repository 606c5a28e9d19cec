"""Turn a variant's steps into artifacts: the float model, then each step applied through the cache."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import numpy as np

from tinygate.artifacts import Artifact
from tinygate.cache import Cache, digest_path, key_of, tinygate_sources, tool_versions
from tinygate.config import DataSpec, Model, Step
from tinygate.data import Dataset
from tinygate.errors import GateError
from tinygate.safety import max_step_seconds, time_limit
from tinygate.steps import STEPS, StepSpec


def load_data(spec: DataSpec, where: str) -> Dataset:
    """Call a data source, read an .npz with `inputs` (and optional `targets` / `labels`), or an image folder."""
    if spec.npz is not None:
        names = spec.input_names or ("inputs",)  # several inputs: one array per input, named as the input
        from tinygate.safety import check_npz

        check_npz(spec.npz)
        try:
            with np.load(spec.npz, allow_pickle=False) as npz:
                if "inputs" not in npz and spec.sole_input in npz:  # the array named after the model's input
                    names = (spec.sole_input,)
                missing = [n for n in names if n not in npz]
                if missing:
                    need = f"one per model input: {', '.join(names)}" if spec.input_names else "the model's input"
                    raise GateError(spec.npz, where, f"the .npz has no {missing[0]!r} array ({need})")
                data = Dataset(npz[names[0]], *(npz[k] if k in npz else None for k in ("targets", "labels")),
                               more_inputs=tuple(npz[n] for n in names[1:]))
        except GateError:
            raise
        except Exception as exc:  # a truncated or non-zip file, an object array (pickle is refused)
            raise GateError(spec.npz, where, f"cannot read the .npz: {type(exc).__name__}: {exc}") from None
    elif spec.images is not None:
        from tinygate.data import image_folder

        data = image_folder(spec.images, spec.prep, where)
    else:
        module, func = spec.source.split(":")
        data = getattr(importlib.import_module(module), func)()
        if not isinstance(data, Dataset):
            raise GateError(spec.source, where, f"must return a tinygate.data.Dataset, got {type(data).__name__}")
    source = spec.origin
    for name, arr in [("inputs", data.inputs), ("targets", data.targets), ("labels", data.labels),
                      *((f"input {n!r}", a) for n, a in zip(spec.input_names[1:], data.more_inputs, strict=False))]:
        if arr is not None and np.ndim(arr) == 0:
            raise GateError(source, where, f"{name} is a single number (a 0-d array); give one row per sample")
    if len(data) == 0:
        raise GateError(source, where, "the data set is empty")
    if len(data.more_inputs) != max(len(spec.input_names) - 1, 0):
        raise GateError(source, where, f"has {len(data.arrays())} input arrays; the model has "
                                       f"{max(len(spec.input_names), 1)} inputs")
    for name, extra in [("targets", data.targets), ("labels", data.labels)] + [
            (f"samples of input {n!r}", a) for n, a in zip(spec.input_names[1:], data.more_inputs, strict=True)]:
        if extra is not None and len(extra) != len(data):
            raise GateError(source, where, f"{len(extra)} {name} for {len(data)} inputs")
    labels = data.labels
    if labels is not None and (labels.ndim != 1 or labels.dtype.kind not in "iuf"
                               or (labels.dtype.kind == "f" and not np.all(labels == np.round(labels)))):
        raise GateError(source, where, f"labels must be one whole-number class per sample, shape ({len(data)},); "
                                       f"got {labels.dtype} of shape {labels.shape}")
    for arr in data.arrays():
        if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)):
            raise GateError(source, where, f"inputs must be finite floating-point values (got {arr.dtype})")
    if any(arr.dtype != np.float32 for arr in data.arrays()):  # float64 from numpy's defaults, float16 to save space
        data = replace(data, inputs=data.inputs.astype(np.float32),
                       more_inputs=tuple(a.astype(np.float32) for a in data.more_inputs))
    return data


@dataclass
class Context:
    """What a step may need besides its input artifact: the model's config and its data."""

    model: Model
    cache: Cache
    steps: dict[str, StepSpec] = field(default_factory=lambda: dict(STEPS))
    progress: Callable[[str], None] | None = None  # told what is built (not what the cache already holds)

    def example_inputs(self) -> tuple[np.ndarray, ...]:
        """Fixed, seeded inputs of the configured shapes, one per model input, for tracing, export and timing."""
        return example_inputs(self.model)

    def calibration(self) -> Dataset:
        return cached_data(self.cache, self.model.calibration, f"models.{self.model.name}.calibration",
                           self.model.project)

    def evaluation(self) -> Dataset:
        return cached_data(self.cache, self.model.eval, f"models.{self.model.name}.eval", self.model.project)


_data_memo: dict[str, Dataset] = {}


def cached_data(store: Cache, spec: DataSpec, where: str, project: Path | None = None) -> Dataset:
    """A data set, built once per process. A `source` is called afresh in every run: what it reads (files, other
    modules) cannot be known, so a cached copy could be stale; unless it is marked `tinygate.data.deterministic`,
    when its Dataset is kept in the cache keyed by its code (its module, the project modules and tinygate modules
    that module uses) and the tools' versions. Scores and other figures are keyed by the data's content hash."""
    if spec.source is None:
        return load_data(spec, where)
    if spec.source not in _data_memo:
        _data_memo[spec.source] = _stored_data(store, spec, where, project) or load_data(spec, where)
    return _data_memo[spec.source]


_ARRAYS = ("inputs", "targets", "labels")


def _stored_data(store: Cache, spec: DataSpec, where: str, project: Path | None) -> Dataset | None:
    """A deterministic source's Dataset, from the cache or made (by load_data, with every check) and stored as
    plain .npy arrays (never pickled); None for any other source, or one that cannot be imported (load_data then
    says why)."""
    module_name, _, func = spec.source.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - load_data reports it with the file and key
        return None
    if not getattr(getattr(module, func, None), "tinygate_deterministic", False) or not module.__file__:
        return None
    files = [Path(module.__file__), *(user_modules(module, project) if project else [])]
    files += [f for f in tinygate_sources(files) if f not in files]
    key = key_of(kind="data", source=spec.source, files=[digest_path(f) for f in files],
                 inputs=[list(spec.input_names), spec.sole_input], tools=tool_versions("tinygate.pipeline"))
    if not store.has(key) and not os.access(store.root, os.W_OK):
        return None  # a read-only cache without it: called as any source is

    def build(tmp: Path) -> None:
        data = load_data(spec, where)
        for name, arr in [*((n, getattr(data, n)) for n in _ARRAYS),
                          *((f"more{i}", a) for i, a in enumerate(data.more_inputs))]:
            if arr is not None:
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)

    entry = store.get_or_build(key, build, intact=lambda e: (e / "inputs.npy").is_file())
    read = {p.stem: np.load(p, mmap_mode="r", allow_pickle=False) for p in entry.glob("*.npy")}
    more = tuple(read[f"more{i}"] for i in range(sum(k.startswith("more") for k in read)))
    return Dataset(*(read.get(n) for n in _ARRAYS), more_inputs=more)


def float_artifact(model: Model) -> Artifact:
    """The float model as the user ships it: its factory plus its weights, or its ONNX file. Its hash covers
    the weights and, for a PyTorch model, the factory and the source file of the factory's module, so that
    editing the model's code rebuilds what depends on it."""
    files = [model.weights]
    if model.source_kind == "onnx":
        from tinygate.safety import check_onnx, onnx_files

        check_onnx(model.weights)
        files = onnx_files(model.weights)
    else:
        module = importlib.import_module(model.factory.split(":")[0])
        files += [Path(module.__file__), *user_modules(module, model.project)]
        files += [f for f in tinygate_sources(files) if f not in files]  # tinygate code the factory builds on
    stamps = tuple((f, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return Artifact(model.source_kind, model.weights, _digest(stamps, model.factory), model.factory)


def user_modules(module: types.ModuleType, project: Path) -> list[Path]:
    """The source files of the project's own modules that `module` uses, transitively: modules it imports and
    modules whose functions or classes it imports, found through namespaces. Only files inside the project
    folder count; installed packages (site-packages, a .venv inside the project too) and tinygate are left out:
    their versions key every cache entry."""
    import warnings

    seen, todo, found = {module.__name__}, [module], []
    while todo:
        namespace = list(vars(todo.pop()).values())
        for value in namespace:
            try:
                with warnings.catch_warnings():  # a deprecated attribute warns when read
                    warnings.simplefilter("ignore")
                    name = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
            except Exception:  # an object whose attribute access raises: not a module reference
                continue
            other = sys.modules.get(name) if isinstance(name, str) and name not in seen else None
            path = _project_file(other, project)
            if path is None:
                continue
            seen.add(name)
            todo.append(other)
            found.append(path)
    return sorted(set(found) - {Path(module.__file__).resolve()})


def _project_file(module: types.ModuleType | None, project: Path) -> Path | None:
    """A module's source file if it is the project's own code, else None."""
    given = getattr(module, "__file__", None)
    if not given or not Path(given).is_absolute():
        return None
    path = Path(given).resolve()
    if not path.is_file() or not path.is_relative_to(project) or path.is_relative_to(Path(__file__).parent) \
            or {"site-packages", "dist-packages"} & set(path.parts):
        return None
    return path


@cache
def _digest(stamps: tuple[tuple[Path, int, int], ...], factory: str) -> str:
    """The hash of a model's files (an ONNX file and its external data), recomputed when one changes."""
    return key_of(files=[digest_path(f) for f, _, _ in stamps], factory=factory)


def example_inputs(model: Model) -> tuple[np.ndarray, ...]:
    return _examples(model.inputs)


def _examples(inputs: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    return tuple(rng.random(shape, dtype=np.float32) for _, shape in inputs)


def float_output_shapes(model: Model) -> dict[str, tuple[int, ...]]:
    """Each output's shape, by name, of the float model on inputs of the configured shapes."""
    return dict(zip(model.output_names, _output_shapes(float_artifact(model), model.inputs), strict=False))


@cache
def _output_shapes(art: Artifact, inputs: tuple) -> tuple[tuple[int, ...], ...]:
    from tinygate.artifacts import runner_all

    return tuple(tuple(o.shape) for o in runner_all(art)(*_examples(inputs)))


@contextlib.contextmanager
def _logged():
    """What converters log (ONNX Runtime's quantizer warns on the root logger, torch's exporter on its own) is
    kept with the artifact, not printed: a list the block fills, while the loggers' own handlers are set aside."""
    import logging

    kept: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(f"{record.levelname}: {record.getMessage()}")

    loggers = [logging.getLogger(), logging.getLogger("torch")] + [  # torch's loggers keep handlers of their own
        logger for name, logger in list(logging.root.manager.loggerDict.items())
        if name.startswith("torch.") and name != "torch.__trace"  # TORCH_TRACE's records go where asked
        and isinstance(logger, logging.Logger) and logger.handlers]
    saved = [logger.handlers[:] for logger in loggers]
    for logger in loggers:
        logger.handlers = [Keep(logging.WARNING)]
    try:
        yield kept
    finally:
        for logger, handlers in zip(loggers, saved, strict=True):
            logger.handlers = handlers


def apply_step(src: Artifact, step: Step, ctx: Context) -> Artifact:
    """Apply one step to an artifact, or find its result in the cache."""
    spec = ctx.steps[step.name]
    # a user's step may wrap any of tinygate: its key holds all of tinygate's source; a built-in's, its modules'
    tools = tool_versions() if spec.user else tool_versions("tinygate.pipeline", spec.module.split(":")[0])
    parts = dict(input=src.digest, step=step.name, params=step.params, tools=tools)
    if spec.user:
        parts.update(code=spec.code_digest(ctx.model.project), function=spec.module, produces=spec.produces)
    if spec.consumes == ("torch",):
        parts.update(factory=src.factory, input_shape=ctx.model.input_shape,
                     io=(ctx.model.inputs, ctx.model.output_names))
    if spec.uses_calibration:
        parts["calibration"] = ctx.calibration().digest()

    def build(out: Path) -> None:
        # Converters warn freely (tracer notes, untested versions); keep their words with the artifact
        # instead of letting pytest's filterwarnings=error turn them into step failures.
        if ctx.progress is not None:
            ctx.progress(f"step {step.name}")
        limit = max_step_seconds()
        with warnings.catch_warnings(record=True) as caught, _logged() as logged, \
                contextlib.redirect_stdout(io.StringIO()) as said, contextlib.redirect_stderr(said), \
                time_limit(limit, src.path, f"step {step.name} (--gate-max-step-seconds)"):
            warnings.simplefilter("always")
            path = spec.build_fn()(src, step.params, ctx, out)
        meta = {"artifact": path.name, "kind": spec.produces, "digest": digest_path(path),
                "warnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught} | set(logged)),
                "printed": said.getvalue()[-2000:]}  # a converter's prints and progress bars, kept with the artifact
        for said in ("engine", "choice"):  # torch's int8 engine; why a step chose the form it built
            if (out / said).is_file():
                meta[said] = (out / said).read_text()
        (out / "artifact.json").write_text(json.dumps(meta))

    def intact(entry: Path) -> bool:  # a cached artifact whose bytes changed since it was built is rebuilt
        meta = json.loads((entry / "artifact.json").read_text())
        return (entry / meta["artifact"]).exists() and digest_path(entry / meta["artifact"]) == meta["digest"]

    entry = ctx.cache.get_or_build(key_of(**parts), build, intact)
    meta = json.loads((entry / "artifact.json").read_text())
    extra = tuple((k, v) for k, v in meta.items() if k == "engine")
    # A PyTorch artifact is weights run by the factory's code: its identity carries its input's (which covers
    # that code), so an edited forward never finds the old scores, steps or "identical to the baseline".
    digest = key_of(weights=meta["digest"], code_from=src.digest) if meta["kind"] == "torch" else meta["digest"]
    return Artifact(meta["kind"], entry / meta["artifact"], digest, src.factory, extra)


def choice_of(art: Artifact) -> str | None:
    """Why the step that built this artifact chose the form it did (ort_int8_static's QDQ or QOperator), if it
    said."""
    meta = art.path.parent / "artifact.json"
    return json.loads(meta.read_text()).get("choice") if meta.is_file() else None
