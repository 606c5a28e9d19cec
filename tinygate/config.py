"""Load and validate gate.toml: every model, its data, its variants (ordered steps) and their budgets.

Validation runs before any test; the first problem found becomes one GateError line naming the
file, the dotted key and what is wrong.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tinygate.budgets import BUDGETS, FIDELITY, NATIVE_TIMING, WEB_LATENCY
from tinygate.data import ImagePrep
from tinygate.errors import GateError
from tinygate.steps import BACKEND, CANNOT_FOLLOW, STEPS, StepSpec

# image: outputs scored against targets (PSNR/SSIM); classifier: against labels (accuracy);
# fidelity: no ground truth, every output compared with the float model's (tinygate/fidelity.py).
TASKS = ("image", "classifier", "fidelity")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # at most 64: names become file names (model-variant)
MAX_INPUT_ELEMENTS = 50_000_000  # one input of one sample: 200 MB as float32; a bigger one allocates before any check


@dataclass(frozen=True)
class Step:
    name: str
    params: dict[str, Any]


@dataclass(frozen=True)
class DataSpec:
    """Where a data set comes from: a `module:callable` returning a Dataset, an .npz file, or a folder of
    images with its preprocessing (tinygate.data.ImagePrep)."""

    source: str | None = None
    npz: Path | None = None
    images: Path | None = None
    prep: ImagePrep | None = None
    input_names: tuple[str, ...] = ()  # a model with several inputs: the arrays an .npz holds, one per input
    sole_input: str = ""  # a model with one input: its name, which an .npz may use instead of `inputs`

    @property
    def origin(self) -> str | Path:
        return self.npz or self.images or self.source


@dataclass(frozen=True)
class Variant:
    model: str
    name: str
    steps: tuple[Step, ...]
    budgets: dict[str, float]
    kind: str  # the artifact kind the last step produces
    speedup_reference: str = ""  # the variant min_speedup compares with (default: the float variant)
    machine: str | None = None  # the machine profile absolute latency limits (max_p50_ms, ...) hold on
    runtime: str = ""  # "web": the ONNX artifact runs in onnxruntime-web in headless Chromium (tinygate.browser)
    max_download_s: dict[str, float] = field(default_factory=dict)  # network profile -> seconds

    @property
    def id(self) -> str:
        return f"{self.model}-{self.name}"

    @property
    def backend(self) -> str:
        return "web" if self.runtime == "web" else BACKEND[self.kind]

    @property
    def is_float(self) -> bool:
        return not self.steps


@dataclass(frozen=True)
class Model:
    name: str
    factory: str  # `module:callable` building the torch module; "" for a model given as an ONNX file
    weights: Path  # .safetensors / .pt / .pth state dict, or the .onnx file itself
    task: str
    inputs: tuple[tuple[str, tuple[int, ...]], ...]  # (name, shape with batch) per input, in the model's order
    output_names: tuple[str, ...]  # in the model's output order; the first is the one task metrics score
    eval: DataSpec
    calibration: DataSpec | None
    variants: dict[str, Variant]
    class_axis: int | None = None  # the outputs' class axis for top-1 agreement (None: inferred from the rank)
    project: Path = Path(".")  # the config's folder: modules of the user's own under it key the float model

    @property
    def source_kind(self) -> str:
        """The float model's artifact kind: variants start from it."""
        return "onnx" if self.weights.suffix == ".onnx" else "torch"

    @property
    def output_name(self) -> str:
        return self.output_names[0]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.inputs)

    @property
    def input_name(self) -> str:
        return self.inputs[0][0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.inputs[0][1]


@dataclass(frozen=True)
class RegressionSettings:
    """How far a candidate may move from the baseline (`[regression]` in gate.toml) before it regressed."""

    size_growth_pct: float = 1.0  # size may grow by this percentage...
    size_growth_floor_kb: float = 1.0  # ...or by this many KB, whichever is larger
    psnr_drop_db: float = 0.1  # mean paired PSNR drop, when significant
    accuracy_drop_pct: float = 0.5  # paired accuracy drop in points, when McNemar's test is significant
    drift_psnr_db: float = 0.3  # the same against the first baseline of the release line
    drift_accuracy_pct: float = 1.0
    confidence: float = 0.95  # of the bootstrap interval; McNemar's alpha is 1 - confidence
    slowdown_pct: float = 10.0  # median per-round time ratio over the baseline
    latency_p_value: float = 0.001  # one-sided Wilcoxon test on the per-round log ratios
    latency_rounds: int = 20  # interleaved rounds per step of the sequential rule
    latency_max_rounds: int = 120  # then the rule decides on the median alone
    absolute_slowdown_pct: float = 50.0  # stored p50 vs today's, same machine only: a coarse guard...
    absolute_floor_ms: float = 1.0  # ...that also needs this many ms, so timer noise never trips it
    fidelity_drop_db: float = 1.0  # per-input output SQNR vs float, paired with the baseline's: allowed drop
    float_change_sqnr_db: float = 60.0  # the float model's outputs vs the baseline float model's, per input


@dataclass(frozen=True)
class GateConfig:
    path: Path
    models: dict[str, Model]
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)
    regression: RegressionSettings = field(default_factory=RegressionSettings)
    steps: dict[str, StepSpec] = field(default_factory=lambda: dict(STEPS))  # built-in, then the user's
    networks: dict[str, Any] = field(default_factory=dict)  # name -> tinygate.browser.Network, built-in and the user's

    @property
    def variants(self) -> list[Variant]:
        return [v for m in self.models.values() for v in m.variants.values()]


class _Reader:
    """Walks the TOML tree, remembering the dotted key so every error can name it."""

    def __init__(self, path: Path, root: Path) -> None:
        self.path, self.root = path, root

    def fail(self, key: str, problem: str) -> GateError:
        return GateError(self.path, key, problem)

    def table(self, data: Any, key: str, required: set[str], optional: set[str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(key, f"must be a table, got {type(data).__name__}")
        unknown = sorted(set(data) - required - optional)
        if unknown:
            allowed = ", ".join(sorted(required | optional))
            raise self.fail(f"{key}.{unknown[0]}" if key else unknown[0], f"unknown key (allowed: {allowed})")
        missing = sorted(required - set(data))
        if missing:
            raise self.fail(f"{key}.{missing[0]}" if key else missing[0], "required key is missing")
        return data

    def named(self, data: Any, key: str) -> dict[str, Any]:
        """A table of user-named entries (models, variants): any keys, at least one."""
        if not isinstance(data, dict):
            raise self.fail(key, f"must be a table, got {type(data).__name__}")
        if not data:
            raise self.fail(key, "is empty: configure at least one entry")
        return data

    def typed(self, value: Any, key: str, kind: type | tuple[type, ...]) -> Any:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(key, f"must be {names}, got {type(value).__name__} {value!r}")
        return value

    def inside(self, value: Any, key: str) -> Path:
        """A path the config names, resolved from its folder: it must stay inside the project root, symlinks
        followed (a pull request's config must not read files elsewhere on the machine)."""
        given = self.path.parent / self.typed(value, key, str)
        path = given.resolve()
        if not path.is_relative_to(self.root):
            how = "leads through a symlink" if Path(os.path.normpath(given)).is_relative_to(self.root) else "is"
            raise self.fail(key, f"{value!r} {how} outside the project root {self.root} (widen it with --gate-root "
                                 "or $TINYGATE_ROOT)")
        return path

    def file(self, value: Any, key: str) -> Path:
        path = self.inside(value, key)
        if not path.is_file():
            raise self.fail(key, f"file not found: {path}")
        return path

    def weights(self, value: Any, key: str) -> Path:
        path = self.file(value, key)
        if path.suffix not in (".safetensors", ".pt", ".pth"):
            raise self.fail(key, f"weights must be a .safetensors, .pt or .pth file, got {path}")
        return path

    def callable_ref(self, value: Any, key: str) -> str:
        ref = self.typed(value, key, str)
        if not re.fullmatch(r"[\w.]+:\w+", ref):
            raise self.fail(key, f"must be 'module:callable', got {ref!r}")
        module, func = ref.split(":")
        try:
            mod = importlib.import_module(module)
        except Exception as exc:  # the user's module failing to import is their error, name it
            raise self.fail(key, f"cannot import module {module!r}: {type(exc).__name__}: {exc}") from None
        if not callable(getattr(mod, func, None)):
            raise self.fail(key, f"module {module!r} has no callable {func!r}")
        return ref


def load(path: str | Path, raw: dict | None = None, root: str | Path | None = None) -> GateConfig:
    """Parse and validate a gate config (or `raw`, its TOML data, paths relative to `path`'s folder); raises
    GateError on the first problem. Every path it names must stay inside `root` (else $TINYGATE_ROOT, else the
    config's folder)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise GateError(path, None, "gate config file not found")
    root = Path(root or os.environ.get("TINYGATE_ROOT") or path.parent).resolve()
    if not path.is_relative_to(root):
        raise GateError(path, None, f"is outside the project root {root} it is to be confined to")
    if raw is None:
        raw = read_toml(path)
    if str(path.parent) not in sys.path:  # a factory or data module kept beside the config imports as-is
        sys.path.append(str(path.parent))
    r = _Reader(path, root)
    r.table(raw, "", {"models"}, {"machines", "regression", "steps", "networks"})
    steps = _steps(r, raw.get("steps", {}))
    machines = {name: _machine(r, name, body) for name, body in
                (r.named(raw["machines"], "machines") if "machines" in raw else {}).items()}
    models = r.named(raw["models"], "models")
    cfg = GateConfig(path, {name: _model(r, name, body, steps) for name, body in models.items()}, machines,
                     _regression(r, raw.get("regression", {})), steps, _networks(r, raw.get("networks", {})))
    for variant in cfg.variants:
        key = f"models.{variant.model}.variants.{variant.name}"
        if variant.machine is not None and variant.machine not in machines:
            raise r.fail(f"{key}.machine", f"no machine profile named {variant.machine!r} under [machines]")
        absolute = sorted(ABSOLUTE & set(variant.budgets))
        if absolute and variant.machine is None:
            raise r.fail(f"{key}.machine", f"absolute latency limits ({', '.join(absolute)}) need the machine "
                                           "profile they were measured on")
        for name in variant.max_download_s:
            if name not in cfg.networks:
                raise r.fail(f"{key}.budgets.max_download_s.{name}",
                             f"no network profile named {name!r} (known: {', '.join(cfg.networks)}; add "
                             f"[networks.{name}])")
    return cfg


ABSOLUTE = {"max_p50_ms", "max_p95_ms", *WEB_LATENCY}


def _networks(r: _Reader, raw: Any) -> dict[str, Any]:
    """The built-in network profiles (slow_3g, fast_3g, 4g) and the user's: [networks.NAME] kbit_s, latency_ms."""
    from tinygate.browser import NETWORKS, Network

    found = dict(NETWORKS)
    for name, body in (r.named(raw, "networks") if raw else {}).items():
        if name in NETWORKS:  # a budget named slow_3g must mean slow 3G in every config
            raise r.fail(f"networks.{name}", f"is a built-in profile ({NETWORKS[name].kbit_s:g} kbit/s, "
                                             f"{NETWORKS[name].latency_ms:g} ms); name yours otherwise")
        if not NAME.match(name):
            raise r.fail(f"networks.{name}", "network names are lower-case letters, digits and underscores, at most 64")
        body = r.table(body, f"networks.{name}", {"kbit_s", "latency_ms"}, set())
        kbit, lat = (r.typed(body[k], f"networks.{name}.{k}", float) for k in ("kbit_s", "latency_ms"))
        if not (0 < kbit <= 1e7 and 0 <= lat <= 60_000):
            raise r.fail(f"networks.{name}", f"kbit_s must be in (0, 1e7] and latency_ms in [0, 60000]; got {kbit:g}, "
                                             f"{lat:g}")
        found[name] = Network(name, kbit, lat)
    return found


def read_toml(path: Path) -> dict:
    """A TOML file as data, or one line naming it and what is wrong."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GateError(path, None, f"not valid TOML: {exc}") from None


# Fixture names a step cannot take: the plugin's own and pytest's most used ones.
RESERVED = {"artifact", "variant", "variant_run", "gate", "float_artifact", "scores", "float_scores", "request",
            "output_fidelity", "tmp_path", "benchmark", "pytestconfig", "monkeypatch", "capsys"}


def _steps(r: _Reader, body: Any) -> dict[str, StepSpec]:
    """The built-in steps, those installed packages register (entry point group `tinygate.steps`), and those
    `[steps]` names by dotted path (`name = "module:function"`), each a function declared with tinygate.step."""
    from importlib.metadata import entry_points

    body = r.table(body, "steps", set(), set(body) if isinstance(body, dict) else set())
    found = dict(STEPS)
    sources = [(ep.name, ep.value, f"entry point {ep.name!r} of {ep.dist.name if ep.dist else '?'}")
               for ep in entry_points(group="tinygate.steps")]
    sources += [(name, ref, f"steps.{name}") for name, ref in body.items()]
    for name, ref, key in sources:
        if not NAME.match(name) or name in STEPS or name in RESERVED:
            raise r.fail(key, "a step name is lower-case letters, digits and underscores, and not a built-in "
                              f"step or a fixture name; got {name!r}")
        func = getattr(importlib.import_module(r.callable_ref(ref, key).split(":")[0]), ref.split(":")[1])
        spec = getattr(func, "tinygate_step", None)
        if not isinstance(spec, StepSpec):
            raise r.fail(key, f"{ref} is not declared as a step: decorate it with @tinygate.step(consumes=..., "
                              "produces=..., **params)")
        found[name] = replace(spec, name=name, module=ref)
    return found


def _regression(r: _Reader, body: Any) -> RegressionSettings:
    defaults = RegressionSettings()
    fields = vars(defaults)
    body = r.table(body, "regression", set(), set(fields))
    values = {}
    for key, value in body.items():
        kind = int if isinstance(fields[key], int) else float
        value = r.typed(value, f"regression.{key}", kind)
        high = 1.0 if key in ("confidence", "latency_p_value") else 1e6
        if not 0 < value <= high or (key == "confidence" and value == 1.0):
            raise r.fail(f"regression.{key}", f"must be in (0, {high:g}{')' if key == 'confidence' else ']'}, "
                                              f"got {value}")
        values[key] = value
    settings = replace(defaults, **values)
    if settings.latency_max_rounds < settings.latency_rounds:
        raise r.fail("regression.latency_max_rounds", "must be at least latency_rounds")
    return settings


def _machine(r: _Reader, name: str, body: Any) -> dict[str, Any]:
    key = f"machines.{name}"
    from tinygate.latency import VECTOR_UNITS

    body = r.table(body, key, {"cpu_model"}, {"cpu_count", "vector_units"})
    out = {"cpu_model": r.typed(body["cpu_model"], f"{key}.cpu_model", str)}
    if "vector_units" in body:
        units = r.typed(body["vector_units"], f"{key}.vector_units", list)
        unknown = [u for u in units if u not in VECTOR_UNITS]
        if unknown:
            raise r.fail(f"{key}.vector_units", f"unknown unit(s) {unknown}: known are {', '.join(VECTOR_UNITS)}")
        out["vector_units"] = tuple(units)
    if "cpu_count" in body:
        out["cpu_count"] = r.typed(body["cpu_count"], f"{key}.cpu_count", int)
        if out["cpu_count"] < 1:
            raise r.fail(f"{key}.cpu_count", f"must be a positive number of CPUs, got {out['cpu_count']}")
    return out


def _model(r: _Reader, name: str, body: Any, steps: dict[str, StepSpec]) -> Model:
    key = f"models.{name}"
    if not NAME.match(name):
        raise r.fail(key, "model names are lower-case letters, digits and underscores, at most 64")
    body = r.table(body, key, {"task", "input", "output", "eval", "variants"},
                   {"factory", "weights", "onnx", "calibration"})
    if ("onnx" in body) == ("factory" in body or "weights" in body):
        raise r.fail(key, "give either 'factory' and 'weights' (a PyTorch model) or 'onnx' (an ONNX file)")
    if "onnx" in body:
        factory, weights = "", r.file(body["onnx"], f"{key}.onnx")
        if weights.suffix != ".onnx":
            raise r.fail(f"{key}.onnx", f"must be an .onnx file, got {weights}")
    else:
        for needed in ("factory", "weights"):
            if needed not in body:
                raise r.fail(f"{key}.{needed}", "required key is missing (a PyTorch model needs factory and weights)")
        factory = r.callable_ref(body["factory"], f"{key}.factory")
        weights = r.weights(body["weights"], f"{key}.weights")
    task = r.typed(body["task"], f"{key}.task", str)
    if task not in TASKS:
        raise r.fail(f"{key}.task", f"must be one of {', '.join(TASKS)}; got {task!r}")
    inputs = _inputs(r, f"{key}.input", body["input"])
    shape = list(inputs[0][1])
    out = r.table(body["output"], f"{key}.output", set(), {"name", "names", "class_axis"})
    class_axis = r.typed(out.pop("class_axis"), f"{key}.output.class_axis", int) if "class_axis" in out else None
    if class_axis is not None and class_axis < 1:
        raise r.fail(f"{key}.output.class_axis", f"must be an axis after the batch axis 0, got {class_axis}")
    if len(out) != 1:
        raise r.fail(f"{key}.output", "give exactly one of 'name' (one output) or 'names' (several, in order)")
    if "name" in out:
        output_names = (r.typed(out["name"], f"{key}.output.name", str),)
    else:
        names = r.typed(out["names"], f"{key}.output.names", list)
        if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise r.fail(f"{key}.output.names", f"must be a list of distinct non-empty strings, got {names!r}")
        output_names = tuple(names)
    if "onnx" in body:
        _check_onnx_interface(r, key, weights, inputs, output_names)
    source_kind = "onnx" if "onnx" in body else "torch"
    input_names = tuple(n for n, _ in inputs) if len(inputs) > 1 else ()
    sole = inputs[0][0] if len(inputs) == 1 else ""
    eval_spec = _data(r, f"{key}.eval", body["eval"], shape, input_names, sole)
    calibration = (_data(r, f"{key}.calibration", body["calibration"], shape, input_names, sole)
                   if "calibration" in body else None)
    variants_raw = r.named(body["variants"], f"{key}.variants")
    variants = {v: _variant(r, name, v, task, b, calibration is not None, source_kind, steps)
                for v, b in variants_raw.items()}
    floats = [v.name for v in variants.values() if v.is_float]
    if not floats:
        raise r.fail(f"{key}.variants", "one variant must have steps = [] (the float model others are compared with)")
    for v in list(variants.values()):
        reference = v.speedup_reference or floats[0]
        if reference not in variants:
            raise r.fail(f"{key}.variants.{v.name}.speedup_reference", f"no variant named {reference!r}")
        if "min_speedup" in v.budgets and reference == v.name:
            raise r.fail(f"{key}.variants.{v.name}.budgets.min_speedup",
                         "a variant cannot be its own speedup reference")
        variants[v.name] = replace(v, speedup_reference=reference)
    return Model(name=name, factory=factory, weights=weights, task=task, inputs=inputs, output_names=output_names,
                 eval=eval_spec, calibration=calibration, variants=variants, class_axis=class_axis,
                 project=r.path.parent)


def _inputs(r: _Reader, key: str, raw: Any) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """`input = { name, shape }`, or a list of such tables for a model with several inputs."""
    tables = raw if isinstance(raw, list) else [raw]
    if not tables:
        raise r.fail(key, "give at least one input")
    out = []
    for i, table in enumerate(tables):
        where = f"{key}[{i}]" if isinstance(raw, list) else key
        table = r.table(table, where, {"name", "shape"}, set())
        name = r.typed(table["name"], f"{where}.name", str)
        shape = r.typed(table["shape"], f"{where}.shape", list)
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise r.fail(f"{where}.shape", f"must be a list of positive integers, got {shape!r}")
        if shape[0] != 1:
            raise r.fail(f"{where}.shape", f"{shape}: the first dimension is the batch, and the gate feeds one sample "
                                           "per call: make it 1 (the data holds the samples, one per row)")
        if (size := math.prod(shape)) > MAX_INPUT_ELEMENTS:
            raise r.fail(f"{where}.shape", f"{shape} is {size:,} elements ({4 * size / 1e9:.1f} GB as float32), "
                                           f"over the {MAX_INPUT_ELEMENTS:,}-element cap")
        out.append((name, tuple(shape)))
    if len({n for n, _ in out}) != len(out):
        raise r.fail(key, "input names must be distinct")
    return tuple(out)


def _check_onnx_interface(r: _Reader, key: str, path: Path, shapes: tuple[tuple[str, tuple[int, ...]], ...],
                          output_names: tuple[str, ...]) -> None:
    """An ONNX model's file is checked as untrusted (tinygate.safety), then its graph's input and outputs must
    be the configured ones: the outputs all of them, in order, as ONNX Runtime returns them."""
    from tinygate.safety import onnx_input_dims, onnx_interface

    input_names = tuple(n for n, _ in shapes)
    inputs, outputs = onnx_interface(path)
    if inputs != input_names:
        raise r.fail(f"{key}.input", f"{list(input_names)} are not the graph's inputs in order; {path} has "
                                     f"{list(inputs)}")
    for name, dims in onnx_input_dims(path).items():  # fixed sizes of the graph must be the declared ones
        declared = dict(shapes)[name]
        if len(dims) != len(declared) or any(d is not None and d != s for d, s in zip(dims, declared, strict=True)):
            where = f"{key}.input" + (f"[{input_names.index(name)}]" if len(input_names) > 1 else "") + ".shape"
            shown = ["?" if d is None else d for d in dims]
            raise r.fail(where, f"{list(declared)} does not fit input {name!r} of {path}, shaped {shown}")
    if outputs != output_names:
        raise r.fail(f"{key}.output", f"{list(output_names)} are not the graph's outputs in order; "
                                      f"{path} has {list(outputs)}")


IMAGE_PREP = {"layout", "scale", "mean", "std"}


def _data(r: _Reader, key: str, body: Any, input_shape: list[int], input_names: tuple[str, ...],
          sole_input: str = "") -> DataSpec:
    body = r.table(body, key, set(), {"source", "npz", "images"} | IMAGE_PREP)
    sources = [k for k in ("source", "npz", "images") if k in body]
    if len(sources) != 1:
        raise r.fail(key, "give exactly one of 'source' (module:callable), 'npz' (a file) or 'images' (a folder)")
    if "images" not in body and IMAGE_PREP & set(body):
        raise r.fail(f"{key}.{sorted(IMAGE_PREP & set(body))[0]}", "preprocessing applies to an 'images' folder only")
    if "source" in body:
        return DataSpec(source=r.callable_ref(body["source"], f"{key}.source"), input_names=input_names)
    if "npz" in body:
        return DataSpec(npz=r.file(body["npz"], f"{key}.npz"), input_names=input_names, sole_input=sole_input)
    if input_names:
        raise r.fail(f"{key}.images", "an image folder feeds a model with one input; this model has "
                                      f"{len(input_names)} (give an .npz with one array per input)")
    folder = r.inside(body["images"], f"{key}.images")
    if not folder.is_dir():
        raise r.fail(f"{key}.images", f"folder not found: {folder}")
    layout = r.typed(body.get("layout", "NCHW"), f"{key}.layout", str)
    if layout not in ("NCHW", "NHWC"):
        raise r.fail(f"{key}.layout", f"must be NCHW or NHWC, got {layout!r}")
    if len(input_shape) != 4:
        raise r.fail(f"{key}.images", f"an image folder feeds a 4-D input; the input shape is {input_shape}")
    channels, height, width = (input_shape[1:] if layout == "NCHW" else [input_shape[3], *input_shape[1:3]])
    if channels not in (1, 3):
        raise r.fail(f"{key}.layout", f"images have 1 or 3 channels; {layout} of {input_shape} has {channels}")
    scale = r.typed(body.get("scale", 255.0), f"{key}.scale", float)
    if not scale > 0:
        raise r.fail(f"{key}.scale", f"must be positive, got {scale}")
    per_channel = {}
    for name, default in (("mean", 0.0), ("std", 1.0)):
        value = body.get(name, [default] * channels)
        value = [value] * channels if isinstance(value, int | float) and not isinstance(value, bool) else value
        if not isinstance(value, list) or len(value) != channels or \
                not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise r.fail(f"{key}.{name}", f"must be a number or a list of {channels}, got {value!r}")
        per_channel[name] = tuple(float(v) for v in value)
    if not all(v > 0 for v in per_channel["std"]):
        raise r.fail(f"{key}.std", f"must be positive, got {list(per_channel['std'])}")
    return DataSpec(images=folder, prep=ImagePrep(layout, (height, width), channels, scale, per_channel["mean"],
                                                  per_channel["std"]))


def _variant(r: _Reader, model: str, name: str, task: str, body: Any, has_calibration: bool,
             source_kind: str, known: dict[str, StepSpec]) -> Variant:
    key = f"models.{model}.variants.{name}"
    if not NAME.match(name):
        raise r.fail(key, "variant names are lower-case letters, digits and underscores, at most 64")
    body = r.table(body, key, {"steps", "budgets"}, {"speedup_reference", "machine", "runtime"})
    steps_raw = r.typed(body["steps"], f"{key}.steps", list)
    kind, steps = source_kind, []
    for i, raw in enumerate(steps_raw):
        skey = f"{key}.steps[{i}]"
        if not isinstance(raw, dict) or "step" not in raw:
            raise r.fail(skey, "each step is a table with a 'step' key, e.g. { step = \"prune\", rate = 0.3 }")
        step_name = r.typed(raw["step"], f"{skey}.step", str)
        spec = known.get(step_name)
        if spec is None:
            raise r.fail(f"{skey}.step", f"unknown step {step_name!r} (known: {', '.join(known)})")
        r.table(raw, skey, {"step"}, set(spec.params))
        if spec.uses_calibration and not has_calibration:
            raise r.fail(f"{skey}.step", f"{step_name} calibrates, but models.{model}.calibration is not set")
        if kind not in spec.consumes:
            made = f"the steps before it produce {kind}" if steps else f"the model is {kind}"
            raise r.fail(f"{skey}.step", f"{step_name} takes a {'/'.join(spec.consumes)} model, but {made}")
        after, why = CANNOT_FOLLOW.get(step_name, ((), ""))
        if earlier := [s.name for s in steps if s.name in after]:
            raise r.fail(f"{skey}.step", f"{step_name} cannot follow {earlier[-1]}: {why}")
        params = {}
        for pname, param in spec.params.items():
            value = r.typed(raw.get(pname, param.default), f"{skey}.{pname}", param.type)
            if (problem := param.check(value)) is not None:
                raise r.fail(f"{skey}.{pname}", problem)
            params[pname] = value
        steps.append(Step(step_name, params))
        kind = spec.produces
    budgets_raw = r.table(body["budgets"], f"{key}.budgets", set(), set(BUDGETS) | {"max_download_s"})
    download = {}
    if budgets_raw.get("max_download_s", None) == {}:
        raise r.fail(f"{key}.budgets.max_download_s", "is empty: name a network profile, e.g. { slow_3g = 30 }")
    for profile, value in r.typed(budgets_raw.pop("max_download_s", {}), f"{key}.budgets.max_download_s", dict).items():
        download[profile] = r.typed(value, f"{key}.budgets.max_download_s.{profile}", float)
        if not 0 < download[profile] <= 86_400:
            raise r.fail(f"{key}.budgets.max_download_s.{profile}", f"must be in (0, 86400] s, got {value}")
    runtime = r.typed(body.get("runtime", ""), f"{key}.runtime", str)
    if runtime not in ("", "web"):
        raise r.fail(f"{key}.runtime", f"must be \"web\" (onnxruntime-web in headless Chromium) or absent; got "
                                       f"{runtime!r}")
    if runtime == "web" and kind != "onnx":
        raise r.fail(f"{key}.runtime", f"the web runtime runs ONNX models; this variant makes {kind}")
    budgets = {}
    for bkey, value in budgets_raw.items():
        budget = BUDGETS[bkey]
        value = r.typed(value, f"{key}.budgets.{bkey}", float)
        where = f"{key}.budgets.{bkey}"
        if task not in budget.tasks:
            raise r.fail(where, f"does not apply to a {task} model (it is for {'/'.join(budget.tasks)})")
        if not budget.low <= value <= budget.high:
            raise r.fail(where, f"must be in [{budget.low}, {budget.high}] {budget.unit}, got {value}")
        budgets[bkey] = value
    native = set(NATIVE_TIMING) & set(budgets)
    if runtime == "web" and native:
        raise r.fail(f"{key}.budgets.{sorted(native)[0]}", "times the Python runtime; a web variant is timed in the "
                                                            f"page: {', '.join(WEB_LATENCY)}")
    web_only = set(WEB_LATENCY) & set(budgets)
    if runtime != "web" and web_only:
        raise r.fail(f"{key}.budgets.{sorted(web_only)[0]}", 'holds for a variant with runtime = "web"')
    if not steps and any(k.endswith(("_drop_db", "_drop_pct", "_ratio", "agreement_pct")) or k in FIDELITY
                         for k in budgets):
        raise r.fail(f"{key}.budgets", "the float variant cannot have budgets relative to itself")
    return Variant(model, name, tuple(steps), budgets, kind,
                   speedup_reference=r.typed(body.get("speedup_reference", ""), f"{key}.speedup_reference", str),
                   machine=r.typed(body["machine"], f"{key}.machine", str) if "machine" in body else None,
                   runtime=runtime, max_download_s=download)
