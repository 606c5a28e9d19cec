"""`tinygate init MODEL`: write a gate.toml entry for a model, budgets set from its measured figures.

It builds the usual variants of the model (ONNX Runtime graph optimization, fp16, dynamic and static int8;
for a PyTorch model, export first, PyTorch int8, and Core ML fp16, int8 and 6-bit palettized), measures each on
the evaluation data, and writes each variant's budgets as its current figures plus the margins below, so the first
gate run is green and a later regression is not. A variant whose step fails on this model is left out, with the
reason as a comment (Core ML without coremltools: how to install it).
Absolute latency limits are not written: they belong to a machine (see README, "Latency"); min_speedup, a ratio to
the float model timed alternately with it, is (at three quarters of today's).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import re
import shlex
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinygate import artifacts, checks, config, evaluate, pipeline
from tinygate.budgets import QUANTIZING_STEPS
from tinygate.cache import Cache
from tinygate.errors import GateError
from tinygate.gate import Gate
from tinygate.mil import UnsupportedOps
from tinygate.steps import ORT_INT8_PARAMS

SHRINKING_STEPS = (*QUANTIZING_STEPS, "ort_fp16")  # steps a user takes to make the file smaller

MARGINS = {  # how far each written budget sits from the figure measured today
    "size_pct": 10.0,  # max_size_kb: +10%
    "sqnr_db": 3.0,  # min_output_sqnr_db: -3 dB
    "cosine": 2.0,  # min_output_cosine: twice today's distance from 1
    "abs_diff": 1.5,  # max_output_abs_diff: x1.5
    "accuracy_pts": 1.0,  # accuracy floors and drops, top-1 agreement: 1 point
    "psnr_db": 0.5,  # PSNR floors and drops: 0.5 dB
    "speedup": 0.75,  # min_speedup: three quarters of today's speedup over the float model (timing is noisy)
}

FLOAT_NOISE = {"sqnr_db": 80.0, "cosine": 0.99999, "abs_diff": 1e-5}  # budgets never tighter than this
LOSSY_SQNR_DB = 20.0  # below this, init warns that a variant already loses much of an output
# Below these, a variant is broken, not merely lossy: init writes it commented out, with the reason, rather
# than budgets that would bless it (a negative cosine, an SQNR under 10 dB, a 34-point accuracy drop).
SANE = {"sqnr_db": 10.0, "cosine": 0.9, "accuracy_drop_pts": 5.0, "psnr_drop_db": 3.0}

ONNX_VARIANTS = {"optimized": [{"step": "ort_optimize"}], "fp16": [{"step": "ort_fp16"}],
                 "int8_dynamic": [{"step": "ort_int8_dynamic", **ORT_INT8_PARAMS}],
                 "int8_static": [{"step": "ort_optimize"}, {"step": "ort_int8_static", **ORT_INT8_PARAMS}]}
TORCH_VARIANTS = {"onnx": [{"step": "onnx_export"}, {"step": "ort_optimize"}],
                  "onnx_int8_dynamic": [{"step": "onnx_export"}, {"step": "ort_int8_dynamic", **ORT_INT8_PARAMS}],
                  "onnx_int8_static": [{"step": "onnx_export"}, {"step": "ort_int8_static", **ORT_INT8_PARAMS}],
                  "torch_int8": [{"step": "torch_int8"}],
                  # Core ML (`pytest model_tests -m coreml`): judged by the MIL interpreter off macOS
                  "coreml": [{"step": "coreml"}],
                  "coreml_int8": [{"step": "coreml"}, {"step": "coreml_int8"}],
                  "coreml_palettize": [{"step": "coreml"}, {"step": "coreml_palettize", "nbits": 6}]}


@dataclass
class Measured:
    name: str
    steps: list[dict]
    budgets: dict[str, float]
    figures: dict[str, float]
    problem: str = ""  # the variant could not be built or measured: left out
    warning: str = ""  # measured, but already far from the float model
    because: str = "it failed on this model"  # what a problem means, in the comment that leaves the variant out
    measured_on: str = ""  # a backend worth naming: the MIL interpreter, whose error is a device's lower bound


def main_args(args: argparse.Namespace) -> int:
    try:
        text = init(args)
    except GateError as exc:
        print(f"tinygate init: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="an .onnx file, or a .safetensors / .pt / .pth state dict (with --factory)")
    p.add_argument("--data", type=Path, required=True, help="evaluation .npz: 'inputs' (and 'labels' or 'targets')")
    p.add_argument("--calibration", type=Path, help=".npz with 'inputs' for static int8 (a set apart from --data)")
    p.add_argument("--factory", help="module:callable building the torch module, for a state dict")
    p.add_argument("--name", help="the model's name in the config (default: from the file name)")
    p.add_argument("--task", choices=config.TASKS, help="default: classifier with labels, image with targets, "
                                                        "else fidelity")
    p.add_argument("--input-names", default="input", help="comma-separated input names of a PyTorch model, in "
                   "order (ONNX: read from the graph); with several, --data holds one array per input name")
    p.add_argument("--output-names", help="comma-separated output names of a PyTorch model (default: output, or "
                                          "output_0, output_1, ...)")
    p.add_argument("--config", type=Path, default=Path("gate.toml"),
                   help="the config to add to (created if absent); its folder is the project, where the layout is "
                        "scaffolded (default: gate.toml here)")
    p.add_argument("--cache-dir", type=Path, help="default: .tinygate-cache beside the config")


def init(args: argparse.Namespace) -> str:
    """Measure the model's variants, append its entry to the config, check the config loads; the entry's text."""
    cfg_path = args.config.resolve()
    for path, flag in ((args.model, "MODEL"), (args.data, "--data"), (args.calibration, "--calibration")):
        if path is not None and not path.is_file():
            raise GateError(path, None, f"{flag}: file not found")
    if args.name is not None and not config.NAME.match(args.name):
        raise GateError("--name", None, f"{args.name!r}: a model name is lower-case letters, digits and underscores, "
                                        "starting with a letter")
    name = args.name or re.sub(r"[^a-z0-9_]", "_", args.model.stem.lower()).strip("_") or "model"
    if not re.match(r"^[a-z]", name):
        name = f"m_{name}"
    existing = cfg_path.read_text(encoding="utf-8") if cfg_path.is_file() else ""
    try:
        if name in tomllib.loads(existing).get("models", {}):
            raise GateError(cfg_path, f"models.{name}", "already exists; pick another --name")
    except tomllib.TOMLDecodeError as exc:
        raise GateError(cfg_path, None, f"not valid TOML: {exc}") from None

    if args.model.suffix != ".onnx" and not args.factory:
        raise GateError(args.model, None, "a state dict needs --factory module:callable to build its module")
    root = Path(os.environ.get("TINYGATE_ROOT") or cfg_path.parent).resolve()
    for path, flag in ((args.model, "MODEL"), (args.data, "--data"), (args.calibration, "--calibration")):
        if path is not None and not path.resolve().is_relative_to(root):  # config.load would refuse the entry
            raise GateError(path, None, f"{flag}: is outside the project folder {root} (the config's folder, where "
                                        "every path of the config must stay): move it there, or set $TINYGATE_ROOT")
    created = not cfg_path.parent.exists()
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _init(args, cfg_path, name, existing)
    except BaseException:
        if created:  # a folder init made for this config: nothing of it stays behind a failure
            shutil.rmtree(cfg_path.parent, ignore_errors=True)
        raise


def _init(args, cfg_path: Path, name: str, existing: str):
    if str(cfg_path.parent) not in sys.path:  # a factory module beside the config imports as is (as in config.load)
        sys.path.append(str(cfg_path.parent))
    input_names = _input_names(args)
    spec = config.DataSpec(npz=args.data.resolve(), input_names=input_names if len(input_names) > 1 else ())
    data = pipeline.load_data(spec, "--data")
    task = args.task or ("classifier" if data.labels is not None else "image" if data.targets is not None
                         else "fidelity")
    header = _header(args, name, task, input_names, data, cfg_path)
    measured = _measure(header, args, name, task, cfg_path)
    failed = [m for m in measured if m.problem]
    if len(failed) == len(measured) - 1:  # only the float model: nothing optimized to gate
        raise GateError(args.model, None, f"no variant could be built for this model (first: {failed[0].name}: "
                                          f"{failed[0].problem}); nothing was written")
    entry = header + "".join(_variant_text(name, m) for m in measured)
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(existing + ("\n" if existing and not existing.endswith("\n\n") else "") + entry,
                        encoding="utf-8")
    try:
        config.load(cfg_path)
    except GateError:
        cfg_path.write_text(existing, encoding="utf-8") if existing else cfg_path.unlink()
        raise
    made = scaffold(cfg_path)
    anywhere = shlex.join([sys.executable, "-m", "pytest", str(cfg_path.parent / "model_tests"),
                           f"--gate-config={cfg_path}"])
    return (entry + f"\n# written to {cfg_path}" + (f"; created {', '.join(made)}" if made else "")
            + f"\n# run the gate (from any folder of the project): {_check_command(cfg_path)}"
            + f"\n#   or, from anywhere: {anywhere}\n")


def _rel(path: Path, cfg_path: Path) -> str:
    return Path(os.path.relpath(path.resolve(), cfg_path.parent)).as_posix()


def _input_names(args) -> tuple[str, ...]:
    """An ONNX graph's inputs (initializers aside), or --input-names for a PyTorch model."""
    if args.model.suffix != ".onnx":
        return tuple(args.input_names.split(","))
    from tinygate.safety import onnx_interface

    return onnx_interface(args.model)[0]


def _header(args, name: str, task: str, input_names: tuple[str, ...], data, cfg_path: Path) -> str:
    """The model's own table: source, task, interface, data."""
    shapes = [[1, *a.shape[1:]] for a in data.arrays()]
    if args.model.suffix == ".onnx":
        from tinygate.safety import onnx_interface

        outputs = list(onnx_interface(args.model)[1])
        source = f"onnx = {_q(_rel(args.model, cfg_path))}"
    else:
        source = f"factory = {_q(args.factory)}\nweights = {_q(_rel(args.model, cfg_path))}"
        outputs = args.output_names.split(",") if args.output_names else _torch_output_names(args, shapes)
    tables = [f"{{ name = {_q(n)}, shape = {s} }}" for n, s in zip(input_names, shapes, strict=True)]
    inputs = f"input = {tables[0]}" if len(tables) == 1 else f"input = [{', '.join(tables)}]"
    output = f"name = {_q(outputs[0])}" if len(outputs) == 1 else f"names = {_toml(outputs)}"
    lines = [f"[models.{name}]", source, f"task = {_q(task)}", inputs, f"output = {{ {output} }}",
             f"eval = {{ npz = {_q(_rel(args.data, cfg_path))} }}"]
    if args.calibration:
        lines.append(f"calibration = {{ npz = {_q(_rel(args.calibration, cfg_path))} }}")
    margins = ", ".join(f"{k} {v:g}" for k, v in MARGINS.items())
    return (f"# Written by `tinygate init` from measured figures; margins: {margins}. min_speedup only where the "
            "float model takes 5 ms or more a call (below, a call's overhead decides the ratio).\n"
            + "\n".join(lines) + "\n")


def _torch_output_names(args, shapes: list[list[int]]) -> list[str]:
    from tinygate.artifacts import Artifact, runner_all

    try:
        config._Reader(args.config, args.config.parent).callable_ref(args.factory, "--factory")
    except GateError as exc:
        raise GateError("--factory", None, exc.problem) from None
    art = Artifact("torch", args.model.resolve(), "", args.factory)
    try:
        count = len(runner_all(art)(*(np.zeros(shape, np.float32) for shape in shapes)))
    except GateError:
        raise
    except Exception as exc:  # the user's forward, on inputs of the shape their data gave: say so, in one line
        first = (str(exc).strip().splitlines() or [""])[0]
        raise GateError(args.model, None, f"{args.factory}'s forward on input(s) of shape "
                                          f"{', '.join(str(list(s)) for s in shapes)} (from --data) raised "
                                          f"{type(exc).__name__}: {first}") from None
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _measure(header: str, args, name: str, task: str, cfg_path: Path) -> list[Measured]:
    """Build and measure every candidate variant through a scratch config beside the real one."""
    candidates = ONNX_VARIANTS if args.model.suffix == ".onnx" else TORCH_VARIANTS
    if not args.calibration:
        candidates = {k: v for k, v in candidates.items() if not any(s["step"] in ("ort_int8_static", "torch_int8")
                                                                     for s in v)}
    left_out = []
    if importlib.util.find_spec("coremltools") is None:
        coreml = {k for k, v in candidates.items() if any(s["step"] == "coreml" for s in v)}
        left_out = [Measured(k, candidates[k], {}, {}, "pip install 'tinygate[coreml]', remove this model's entry "
                                                       "and run tinygate init again",
                             because="coremltools is not installed") for k in coreml]
        candidates = {k: v for k, v in candidates.items() if k not in coreml}
    scratch = cfg_path.parent / f".tinygate-init-{name}.toml"
    text = header + f"[models.{name}.variants.float]\nsteps = []\nbudgets = {{}}\n"
    for vname, steps in candidates.items():
        text += f"[models.{name}.variants.{vname}]\nsteps = {_toml(steps)}\nbudgets = {{}}\n"
    scratch.write_text(text, encoding="utf-8")
    try:
        cfg = config.load(scratch)
    finally:
        scratch.unlink()
    model = cfg.models[name]
    cache = Cache((args.cache_dir or cfg_path.parent / ".tinygate-cache").resolve())
    gate = Gate(cfg, cache_dir=cache.root)  # builds each candidate as the gate will, and runs its weight check
    data = pipeline.Context(model, cache).evaluation()
    float_art = pipeline.float_artifact(model)
    float_quality = _quality(float_art, model, data, cache) if task != "fidelity" else {}
    float_kb = float_art.disk_bytes() / 1000
    out = [Measured("float", [], _budgets({"size_kb": float_kb, **float_quality}, {}),
                    {"size_kb": float_kb, **float_quality})]
    for vname, variant in model.variants.items():
        if variant.is_float:
            continue
        try:
            art = gate.variant(variant).chain()[-1]
            figures = {"size_kb": art.disk_bytes() / 1000}
            fid = evaluate.fidelity(art, float_art, model, data, cache)
            figures["sqnr_db"] = min(r.sqnr_db for r in fid)
            lossy = min(fid, key=lambda r: r.sqnr_db)
            figures["cosine"] = min(r.cosine for r in fid)
            figures["abs_diff"] = max(r.max_abs_diff for r in fid)
            if task != "fidelity":
                figures.update(_quality(art, model, data, cache, float_art))
            interpreted = art.kind == "mlpackage" and artifacts.coreml_backend() == artifacts.MIL_INTERPRETER
            if not interpreted:  # the interpreter's speed says nothing about a device
                if (speedup := _speedup(float_art, art, model)) is not None:
                    figures["speedup"] = speedup
            if any(math.isnan(v) for v in figures.values()):
                raise GateError(art.path, None, "gives NaN outputs on the evaluation data")
            if broken := _broken(figures, float_quality):
                out.append(Measured(vname, candidates[vname], {}, figures, f"too far from the float model: {broken}"))
                continue
            cautions = []
            if lossy.sqnr_db < LOSSY_SQNR_DB:
                cautions.append(f"output {lossy.output!r} is at {lossy.sqnr_db:.1f} dB SQNR against the float model: "
                                "this variant already loses much of it; look before you ship it")
            if figures.get("speedup", 1.0) < 0.9:
                cautions.append(f"it runs {1 / figures['speedup']:.2f}x slower than the float model on this machine")
            if any(s.name in SHRINKING_STEPS for s in variant.steps) and figures["size_kb"] >= float_kb:
                cautions.append(f"it is no smaller on disk than the float model's own file ({figures['size_kb']:.1f} "
                                f"KB against {float_kb:.1f} KB): on a tiny model the format's overhead can outweigh "
                                "what the step saves, or the step found nothing to shrink")
            budgets = _budgets(figures, float_quality)
            if art.kind == "mlpackage":  # Core ML is timed on macOS only: a min_speedup would fail CI on Linux
                budgets.pop("min_speedup", None)
            if quantizer := next((s for s in variant.steps if s.name in QUANTIZING_STEPS), None):
                cautions.append(_weight_floor(gate, variant, quantizer, figures, budgets))
            out.append(Measured(vname, candidates[vname], budgets, figures, warning="; ".join(filter(None, cautions)),
                                measured_on=artifacts.MIL_INTERPRETER if interpreted else ""))
        except Exception as exc:  # the step does not suit this model: leave the variant out, saying why
            first = (str(exc).strip().splitlines() or [""])[0]
            first = re.sub(r"[^\x20-\x7e]", "", re.sub(r"\x1b\[[0-9;]*m", "", first))  # a TOML comment line
            out.append(Measured(vname, candidates[vname], {}, {}, f"{type(exc).__name__}: {first}",
                                because="it cannot be judged off macOS" if isinstance(exc.__cause__, UnsupportedOps)
                                else Measured.because))
    return out + left_out


def _weight_floor(gate, variant, quantizer, figures: dict, budgets: dict) -> str:
    """The gate's own weight-SQNR check on a quantized candidate: under the default floor, the floor is held where
    the figure is today (never below 0 dB) and said; a check that cannot read the weights is said, not fatal."""
    try:
        weights = checks.weight_sqnr(gate.variant(variant))[0]
    except Exception as exc:  # the variant built and was measured: keep it, and say the gate will not read it
        first = (str(exc).strip().splitlines() or [""])[0]
        return f"the quantized-weight check could not read it ({type(exc).__name__}: {first}): the gate will fail it"
    value = weights.value
    if not isinstance(value, int | float) or not math.isfinite(value):
        return f"its worst quantized weight's SQNR is {value}: look before you ship it"
    figures["weight_sqnr_db"] = value
    if weights.passed:
        return ""
    budgets["min_weight_sqnr_db"] = max(0.0, _down(value - MARGINS["sqnr_db"]))
    return (f"its worst quantized weight ({weights.note.removeprefix('worst tensor ')}) is at {value:.1f} dB SQNR, "
            f"under the default floor of {weights.budget:g} dB"
            + ("; per_channel = true usually lifts it" if quantizer.name.startswith("ort_int8")
               and not quantizer.params.get("per_channel") else ""))


def _speedup(float_art, art, model, rounds: int = 10) -> float | None:
    """The float model's median time over the variant's, timed alternately on the config's example inputs; None
    for a model whose float call takes under 5 ms, where the call's overhead and a busy machine sway the ratio
    by more than the budget's margin."""
    from tinygate import latency

    xs = pipeline.example_inputs(model)
    ref, mine = artifacts.runner(float_art), artifacts.runner(art)
    ref_times, times = latency.interleaved(lambda: ref(*xs), lambda: mine(*xs), rounds=rounds, warmup=2)
    return float(np.median(ref_times) / np.median(times)) if np.median(ref_times) >= 5e-3 else None


def _broken(f: dict[str, float], float_quality: dict[str, float]) -> str:
    """What makes a variant's figures broken rather than lossy (SANE), or ""."""
    problems = []
    if f.get("sqnr_db", math.inf) < SANE["sqnr_db"]:
        problems.append(f"output SQNR {f['sqnr_db']:.1f} dB < {SANE['sqnr_db']:g} dB")
    if f.get("cosine", 1.0) < SANE["cosine"]:
        problems.append(f"cosine {f['cosine']:.3f} < {SANE['cosine']:g}")
    if "accuracy_pct" in f and float_quality.get("accuracy_pct", 0) - f["accuracy_pct"] > SANE["accuracy_drop_pts"]:
        problems.append(f"accuracy drop {float_quality['accuracy_pct'] - f['accuracy_pct']:.1f} points > "
                        f"{SANE['accuracy_drop_pts']:g}")
    if "psnr_db" in f and float_quality.get("psnr_db", 0) - f["psnr_db"] > SANE["psnr_drop_db"]:
        problems.append(f"PSNR drop {float_quality['psnr_db'] - f['psnr_db']:.1f} dB > {SANE['psnr_drop_db']:g} dB")
    return "; ".join(problems)


def _quality(art, model, data, cache, float_art=None) -> dict[str, float]:
    scores = evaluate.score(art, model, data, cache)
    if model.task == "classifier":
        figures = {"accuracy_pct": 100.0 * float(np.mean(scores["correct"]))}
        if float_art is not None:
            ref = evaluate.score(float_art, model, data, cache)
            figures["agreement_pct"] = 100.0 * float(np.mean(scores["predictions"] == ref["predictions"]))
        return figures
    return {"psnr_db": float(np.mean(scores["psnr"]))}


def _budgets(f: dict[str, float], float_quality: dict[str, float]) -> dict[str, float]:
    m = MARGINS
    b = {"max_size_kb": _up(f["size_kb"] * (1 + m["size_pct"] / 100))}
    if "speedup" in f:
        b["min_speedup"] = max(0.01, _down(f["speedup"] * m["speedup"]))
    if "sqnr_db" in f:
        # Capped where float rounding, which differs between CPUs and thread counts, would decide.
        b["min_output_sqnr_db"] = _down(min(f["sqnr_db"] - m["sqnr_db"], FLOAT_NOISE["sqnr_db"]))
        b["min_output_cosine"] = _down(min(1 - (1 - f["cosine"]) * m["cosine"], FLOAT_NOISE["cosine"]), 6)
        b["max_output_abs_diff"] = _up(max(f["abs_diff"] * m["abs_diff"], FLOAT_NOISE["abs_diff"]), 6)
    if "accuracy_pct" in f:
        b["min_accuracy_pct"] = max(0.0, _down(f["accuracy_pct"] - m["accuracy_pts"]))
        if float_quality:
            b["max_accuracy_drop_pct"] = _up(max(0.0, float_quality["accuracy_pct"] - f["accuracy_pct"])
                                             + m["accuracy_pts"])
            b["min_top1_agreement_pct"] = max(0.0, _down(f["agreement_pct"] - m["accuracy_pts"]))
    if "psnr_db" in f:
        b["min_psnr_db"] = _down(f["psnr_db"] - m["psnr_db"])
        if float_quality:
            b["max_psnr_drop_db"] = _up(max(0.0, float_quality["psnr_db"] - f["psnr_db"]) + m["psnr_db"])
    return b


def _down(x: float, digits: int = 2) -> float:
    return math.floor(x * 10**digits) / 10**digits


def _up(x: float, digits: int = 2) -> float:
    return math.ceil(x * 10**digits) / 10**digits


def _toml(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return _q(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _q(text: str) -> str:
    """A TOML basic string holding any text (quotes, backslashes, control characters escaped)."""
    import json

    return json.dumps(text)


def _variant_text(model: str, m: Measured) -> str:
    head = f"\n[models.{model}.variants.{m.name}]\n"
    if m.problem:
        return f"\n# variant {m.name} ({_toml(m.steps)}) left out: {m.because}: {m.problem}\n"
    figures = ", ".join(f"{k} {v:.4g}" for k, v in m.figures.items())
    warning = f"# WARNING: {m.warning}\n" if m.warning else ""
    on = f" (on the {m.measured_on}: a device's error can be larger)" if m.measured_on else ""
    return f"{head}# measured{on}: {figures}\n{warning}steps = {_toml(m.steps)}\nbudgets = {_toml(m.budgets)}\n"


SCAFFOLD = {  # the layout of a gated project; a file that exists is left as it is
    "conftest.py": '"""Fixtures of this project\'s own go here or in fixtures/; the gate\'s come from tinygate."""\n',
    "model_tests/test_gate.py": (
        '"""The gate: every check of tinygate on every model and variant in gate.toml. Add tests of your own beside\n'
        'it; a test that asks for `variant` runs once per variant, one that asks for a step (`prune`, ...) gets the\n'
        'artifact that step made."""\n\nfrom tinygate.pytest_checks import *  # noqa: F403\n'),
    "fixtures/README.md": (
        "# fixtures/\n\nFixtures of this project's own (load a module from conftest.py: pytest_plugins = [...]).\n"
        "A step of your own is a function declared with `@tinygate.step(consumes=..., produces=..., **params)`\n"
        "in a module beside gate.toml, named under `[steps]` there: `my_step = \"my_steps:my_step\"`.\n"),
    "reports/.gitignore": "latest/\n",
    "pyproject.toml": ('[tool.pytest.ini_options]\ntestpaths = ["model_tests"]\naddopts = ["--strict-markers", "-ra"]\n'
                       'gate_config = "GATE_CONFIG"\n'),
    # torch's CPU build before anything that asks for torch (tox installs `deps` first, so there are none), then
    # tinygate: set TINYGATE to where yours comes from (a wheel's path, or a package index's name).
    "tox.ini": ("[tox]\nenvlist = gate\nskipsdist = true\n\n[testenv:gate]\nskip_install = true\n"
                "setenv = TINYGATE = {env:TINYGATE:tinygate}\n"
                "commands_pre =\n    pip install torch --index-url https://download.pytorch.org/whl/cpu\n"
                "    pip install {env:TINYGATE:tinygate}[onnx,coreml]\n"
                "commands = pytest model_tests {posargs}\n"),
}


def _check_command(cfg_path: Path) -> str:
    """The command that runs the gate from any folder of the project: `tinygate check` where that finds this
    config (the nearest gate.toml, with the tinygate command on PATH), else its spelled-out form."""
    import shutil

    command = ["tinygate", "check"] if shutil.which("tinygate") else [sys.executable, "-m", "tinygate", "check"]
    return shlex.join(command + ([] if cfg_path.name == "gate.toml" else [f"--config={cfg_path}"]))


def scaffold(cfg_path: Path) -> list[str]:
    """Write the parts of the layout the config's folder lacks (never overwriting a file); the paths written."""
    made, project = [], cfg_path.parent
    for rel, text in SCAFFOLD.items():
        text = text.replace("GATE_CONFIG", cfg_path.name)
        path = project / rel
        if path.exists() or path.is_symlink():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        made.append(rel)
    return made
