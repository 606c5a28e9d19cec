"""Find the smallest variant that still meets the user's floors: a budgeted search over the gate's own steps.

Constraints are hard (size, transfer size, quality drop against the float model, output SQNR, backends); the
objective is named (smallest size by default, ties broken by quality); there is no weighted sum. Every point is
built and measured by the gate's own library through its cache, so a second search, or the gate run after it,
rebuilds nothing. Dominated branches are cut early:
- size first (a built artifact is weighed before anything runs it);
- quality on a quarter of the evaluation set first, then on the whole set only where it is not clearly out
  (successive halving, one round);
- along a prune-rate ladder with the same tail, a rate that misses the quality floor ends the ladder (more
  pruning of the same model is assumed no better; said in the history);
- every point is built and weighed before any is run, then measured smallest first, so the smallest feasible
  point is found before the time budget is spent on larger ones;
- a pruned point no smaller (on disk and gzipped) than the same steps without pruning, already measured, is
  dominated: unstructured pruning keeps its zeros on disk, and is not expected to beat the unpruned model on quality.
The front (size vs quality), the history of every point and a plot go to REPORTS/optimize/; `--write` adds the
chosen variant to the config with budgets at its measured figures plus init's margins, so the optimum becomes a
gate that keeps it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tinygate import evaluate, pipeline
from tinygate.config import load, read_toml
from tinygate.errors import GateError
from tinygate.safety import time_limit
from tinygate.steps import ORT_INT8_PARAMS

PRUNE_RATES = (0.0, 0.3, 0.5, 0.7)
FINETUNE_BITS = (4, 3, 2)  # palettization-aware fine-tuning: where plain palettization loses most
PALETTE_BITS = (8, 6, 4, 2)  # 3 bits needs an iOS18 target
SUBSET_SHARE = 0.25  # the first look at quality: a quarter of the evaluation set (at least 8 inputs)
CLEARLY_OUT = 2.0  # on the subset, a drop past twice the limit (or an SQNR 6 dB under the floor) is not confirmed


@dataclass
class Constraints:
    max_size_kb: float | None = None
    max_transfer_kb: float | None = None
    max_drop: float | None = None  # PSNR dB (image) or accuracy points (classifier) below the float model
    min_sqnr_db: float | None = None  # every output's SQNR against the float model
    backends: tuple[str, ...] = ("onnx", "coreml", "torch")

    def misses(self, p: Point) -> dict[str, float]:
        """By how much the point misses each constraint it misses (positive: the shortfall, in its unit)."""
        out = {}
        if self.max_size_kb is not None and p.size_kb > self.max_size_kb:
            out["max_size_kb"] = p.size_kb - self.max_size_kb
        if self.max_transfer_kb is not None and p.transfer_kb is not None and p.transfer_kb > self.max_transfer_kb:
            out["max_transfer_kb"] = p.transfer_kb - self.max_transfer_kb
        if self.max_drop is not None and p.drop is not None and p.drop > self.max_drop:
            out["max_drop"] = p.drop - self.max_drop
        if self.min_sqnr_db is not None and p.sqnr_db is not None and p.sqnr_db < self.min_sqnr_db:
            out["min_sqnr_db"] = self.min_sqnr_db - p.sqnr_db
        return out


@dataclass
class Point:
    name: str
    steps: list[dict]
    backend: str
    size_kb: float = math.nan
    transfer_kb: float | None = None
    drop: float | None = None  # quality drop against the float model (None: a label-free model)
    sqnr_db: float | None = None
    stage: str = ""  # "size", "subset" or "full": how far it was measured
    status: str = ""  # "feasible", "misses", "pruned", "failed", "skipped"
    why: str = ""
    missing: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return " + ".join(s["step"] + "".join(f" {k}={v}" for k, v in s.items() if k != "step") for s in self.steps)


def candidates(source_kind: str, calibrated: bool, backends: tuple[str, ...],
               crop: int | None = None) -> list[tuple[str, list[dict]]]:
    """(backend, steps) for every point of the space, grouped as prune ladders (same tail, rising rate). `crop`:
    the fine-tuning window of an image model (0: whole inputs; None: no fine-tuning points)."""
    tails: list[tuple[str, list[dict]]] = []
    export = [{"step": "onnx_export"}] if source_kind == "torch" else []
    if "onnx" in backends:
        tails += [("onnx", export + [{"step": "ort_fp16"}])]
        tails += [("onnx", export + [{"step": "ort_int8_dynamic", "per_channel": pc, **ORT_INT8_PARAMS}])
                  for pc in (False, True)]
        if calibrated:
            tails += [("onnx", export + [{"step": "ort_int8_static", "per_channel": True, "calibration": c,
                                          **ORT_INT8_PARAMS}]) for c in ("minmax", "entropy")]
    if source_kind == "torch" and "coreml" in backends:
        tails += [("coreml", [{"step": "coreml", "precision": "fp16"}])]
        tails += [("coreml", [{"step": "coreml"}, {"step": "coreml_int8", "granularity": g}])
                  for g in ("per_channel", "per_tensor")]
        tails += [("coreml", [{"step": "coreml"}, {"step": "coreml_palettize", "nbits": b}]) for b in PALETTE_BITS]
        if calibrated and crop is not None:  # palettization-aware fine-tuning: 4, 3 (iOS18) and 2 bits
            tails += [("coreml", [{"step": "finetune", "quantize": "palettize", "nbits": b, "crop": crop},
                                  {"step": "coreml", "target": "iOS18"}, {"step": "coreml_palettize", "nbits": b}])
                      for b in FINETUNE_BITS]
    if source_kind == "torch" and "torch" in backends and calibrated:
        tails += [("torch", [{"step": "torch_int8"}])]
    rates = PRUNE_RATES if source_kind == "torch" else (0.0,)
    return [(backend, ([{"step": "prune", "rate": r}] if r else []) + steps)
            for backend, steps in tails for r in (rates if steps[0]["step"] != "finetune" else (0.0,))]


def search(config_path: Path, model_name: str, want: Constraints, max_minutes: float = 20.0,
           cache_dir: Path | None = None, progress=print, objective: str = "size") -> tuple[list[Point], dict]:
    """Every point measured within the time budget, and the float model's figures."""
    from tinygate.gate import Gate
    from tinygate.init import _toml

    base_cfg = load(config_path)  # validated first: a missing or broken config is its one line
    if model_name not in base_cfg.models:
        raise GateError(config_path, f"models.{model_name}", f"no such model (models: {', '.join(base_cfg.models)})")
    base = base_cfg.models[model_name]
    if want.max_drop is not None and base.task == "fidelity":
        raise GateError("--max-drop", None, f"{model_name} is label-free (task = \"fidelity\"): there is no quality "
                                            "to drop; hold its outputs to the float model's with --min-sqnr-db")
    raw = read_toml(config_path)
    body = dict(raw["models"][model_name])
    cache = cache_dir or config_path.parent / ".tinygate-cache"

    def gate_of(points: list[Point]) -> Gate:  # the user's model with these points as its variants
        variants = {"float": {"steps": [], "budgets": {}}, **{p.name: {"steps": p.steps, "budgets": {}}
                                                                for p in points}}
        return Gate(load(config_path, {**{k: v for k, v in raw.items() if k != "models"},
                                       "models": {model_name: {**body, "variants": variants}}}), cache)

    points = [Point(f"opt{i:03d}", steps, backend) for i, (backend, steps) in
              enumerate(candidates(base.source_kind, base.calibration is not None, want.backends, _crop(base)))]
    gate = gate_of(points)
    model = gate.config.models[model_name]
    data = pipeline.Context(model, gate.cache).evaluation()
    subset = data.take(slice(None, None, max(1, min(int(1 / SUBSET_SHARE), len(data) // 8))))  # spans every class
    float_art = pipeline.float_artifact(model)
    float_q = {"full": _quality(float_art, model, data, gate.cache),
               "subset": _quality(float_art, model, subset, gate.cache)}
    floats = {"size_kb": float_art.disk_bytes() / 1000, "quality": float_q["full"]}
    deadline = time.monotonic() + max_minutes * 60
    arts: dict = {}

    def weigh(batch: list[Point], gate: Gate) -> None:  # built and weighed: the cheap stage, and the next one's order
        for i, p in enumerate(batch):
            if time.monotonic() > deadline:
                p.status, p.why = "skipped", "the search's time budget ran out"
                continue
            start = time.monotonic()
            progress(f"tinygate optimize: building {i + 1}/{len(batch)} {p.label} ...")
            try:
                with time_limit(max(deadline - time.monotonic(), 1.0), p.name, "the search's time budget"):
                    arts[p.name] = art = gate.variant(f"{model_name}-{p.name}").artifact()
                p.size_kb, p.stage = art.disk_bytes() / 1000, "size"
                if want.max_transfer_kb is not None or objective == "transfer":
                    p.transfer_kb = art.transfer_bytes() / 1000
                p.missing = {k: v for k, v in want.misses(p).items() if k in ("max_size_kb", "max_transfer_kb")}
                p.status = "misses" if p.missing else ""
            except Exception as exc:  # a step that does not suit this model: a point of the space that does not exist
                p.status, p.why = "failed", _first(exc)
            p.seconds = time.monotonic() - start

    def measure(batch: list[Point]) -> None:  # quality, smallest first: the smallest feasible point comes early
        ladder_end: set[tuple[str, float]] = set()  # (tail, prune rate) that missed the quality floor
        todo = sorted((p for p in batch if p.stage == "size" and not p.status), key=lambda p: (p.size_kb, p.name))
        for i, p in enumerate(todo):
            tail = _toml([s for s in p.steps if s["step"] != "prune"])
            rate = next((s["rate"] for s in p.steps if s["step"] == "prune"), 0.0)
            if time.monotonic() > deadline:
                p.status, p.why = "skipped", "the search's time budget ran out"
                continue
            if any(t == tail and r <= rate for t, r in ladder_end):
                p.status, p.why = "pruned", "a lower prune rate of the same tail already missed the quality floor"
                continue
            if rate and any(q.stage == "full" and tail == _toml(q.steps) and q.size_kb <= p.size_kb
                            and (q.transfer_kb or 0) <= (p.transfer_kb or 0) for q in batch):
                p.status, p.why = "pruned", "dominated: no smaller than the same steps without pruning"
                continue
            start = time.monotonic()
            progress(f"tinygate optimize: measuring {i + 1}/{len(todo)} {p.label} ({p.size_kb:.1f} KB) ...")
            try:
                for stage, part in (("subset", subset), ("full", data)):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the search's time budget ran out before the whole set")
                    p.stage = stage
                    p.drop = _drop(float_q[stage], _quality(arts[p.name], model, part, gate.cache))
                    p.sqnr_db = min(r.sqnr_db for r in evaluate.fidelity(arts[p.name], float_art, model, part,
                                                                           gate.cache))
                    if stage == "subset" and _clearly_out(p, want):
                        break
                p.missing = want.misses(p)
                p.status = "feasible" if not p.missing else ("pruned" if p.stage == "subset" else "misses")
                if p.status == "pruned":
                    p.why = "clearly out on a quarter of the evaluation set: not confirmed on the rest"
                if "max_drop" in p.missing or "min_sqnr_db" in p.missing:
                    ladder_end.add((tail, rate))
            except Exception as exc:
                p.status, p.why = "failed", _first(exc)
            p.seconds += time.monotonic() - start

    weigh(points, gate)
    measure(points)
    mixed = _mixed_precision(points, gate, model_name, want)  # int8 points that missed quality, sensitive layers kept
    if mixed:
        gate = gate_of(points + mixed)
        weigh(mixed, gate)
        measure(mixed)
        points += mixed
    return points, floats


MIXED_KEEP = (1, 2, 3)  # how many of the most sensitive layers a mixed-precision point keeps in float


def _mixed_precision(points: list[Point], gate, model_name: str, want: Constraints) -> list[Point]:
    """For each ONNX int8 point (no pruning) that fits the size but misses the quality floor: the same step with its
    1, 2 and 3 most sensitive layers kept in float. Sensitivity: each quantized weight's SQNR against its float
    weight, read back from the artifact (the gate's own attribution where a runtime shows no layer outputs)."""
    from tinygate import quant_artifacts

    out = []
    for p in points:
        last = p.steps[-1]
        if (p.status not in ("misses", "pruned") or last["step"] not in ("ort_int8_dynamic", "ort_int8_static")
                or any(s["step"] == "prune" for s in p.steps) or set(p.missing) - {"max_drop", "min_sqnr_db"}):
            continue
        try:
            run = gate.variant(f"{model_name}-{p.name}")
            refs = run.reference_weights()
            checks = [quant_artifacts.check_best(t, refs[t.name]) for t in quant_artifacts.read(run.artifact(), refs)]
        except Exception:
            continue
        worst = [c.name for c in sorted(checks, key=lambda c: c.sqnr_db) if not c.name.endswith("bias")]
        for k in MIXED_KEEP:
            if k <= len(worst) - 1:  # keeping every layer in float is the float model
                steps = [*p.steps[:-1], {**last, "keep_float": worst[:k]}]
                out.append(Point(f"{p.name}_mix{k}", steps, p.backend))
    return out


def _crop(model) -> int:
    """Fine-tune an image model (one N x C x H x W input) on 64 x 64 windows when it is larger: 16x cheaper for a
    fully convolutional model (one that is not fails that point, said in the history); others on whole inputs."""
    shapes = [shape for _, shape in model.inputs]
    return 64 if len(shapes) == 1 and len(shapes[0]) == 4 and min(shapes[0][2:]) > 64 else 0


def _first(exc: Exception) -> str:
    return f"{type(exc).__name__}: " + (str(exc).strip().splitlines() or [""])[0]


def _quality(art, model, data, cache) -> float | None:
    if model.task == "fidelity":
        return None
    scores = evaluate.score(art, model, data, cache)
    return float(np.mean(scores["psnr"])) if model.task == "image" else 100.0 * float(np.mean(scores["correct"]))


def _drop(ref: float | None, mine: float | None) -> float | None:
    return None if ref is None or mine is None else ref - mine


def _clearly_out(p: Point, want: Constraints) -> bool:
    return bool((want.max_drop is not None and p.drop is not None and p.drop > CLEARLY_OUT * max(want.max_drop, 0.05))
                or (want.min_sqnr_db is not None and p.sqnr_db is not None and p.sqnr_db < want.min_sqnr_db - 6.0))


def front(points: list[Point]) -> list[Point]:
    """The fully measured points no other point beats on both size and quality (drop, else -SQNR)."""
    full = [p for p in points if p.stage == "full" and p.status in ("feasible", "misses")]

    def loss(p: Point) -> float:
        return p.drop if p.drop is not None else -(p.sqnr_db or 0.0)
    return sorted((p for p in full if not any(q is not p and q.size_kb <= p.size_kb and loss(q) <= loss(p)
                                              and (q.size_kb < p.size_kb or loss(q) < loss(p)) for q in full)),
                  key=lambda p: p.size_kb)


def choose(points: list[Point], objective: str = "size") -> Point | None:
    """The feasible point with the smallest objective, ties broken by quality."""
    key = (lambda p: (p.transfer_kb or p.size_kb)) if objective == "transfer" else (lambda p: p.size_kb)
    ok = [p for p in points if p.status == "feasible"]
    return min(ok, key=lambda p: (round(key(p), 3), p.drop if p.drop is not None else -(p.sqnr_db or 0))) \
        if ok else None


def closest(points: list[Point], want: Constraints, n: int = 3) -> list[Point]:
    """When nothing is feasible: the measured points that miss by the least (shortfalls relative to each limit,
    summed), fully measured ones first."""
    limits = asdict(want)
    measured = [p for p in points if p.missing]
    return sorted(measured, key=lambda p: (p.stage == "size", sum(v / max(abs(limits[k]), 1e-9)
                                                                  for k, v in p.missing.items())))[:n]


def report(model: str, task: str, want: Constraints, points: list[Point], floats: dict, minutes: float,
           out: Path, objective: str = "size") -> str:
    """The table, the chosen point or the closest misses, written with the history (JSON) and the front (PNG)."""
    out.mkdir(parents=True, exist_ok=True)
    unit = {"image": "dB PSNR", "classifier": "accuracy points"}.get(task, "")
    best, on_front = choose(points, objective), front(points)
    lines = [f"tinygate optimize {model}: {sum(p.stage != '' for p in points)} of {len(points)} points measured "
             f"in {minutes:.1f} min; float model {floats['size_kb']:.1f} KB"
             + (f", quality {floats['quality']:.4g}" if floats["quality"] is not None else ""),
             f"constraints: {', '.join(f'{k} {v}' for k, v in asdict(want).items() if v is not None)}"
             + (f" (drop in {unit})" if unit else "")]
    if best is not None:
        lines.append(f"chosen: {best.label}: {best.size_kb:.1f} KB, drop {_fmt(best.drop)}, "
                     f"SQNR {_fmt(best.sqnr_db)} dB")
    else:
        near = closest(points, want)
        skipped = sum(p.status == "skipped" for p in points)
        lines.append("no point meets every constraint" + (f" ({skipped} points left unmeasured when the time budget "
                                                           "ran out)" if skipped else "") + ("; the closest:" if near
                                                                                             else ""))
        lines += [f"  {p.label}: {p.size_kb:.1f} KB misses "
                  + ", ".join(f"{k} by {v:.3g}" for k, v in p.missing.items())
                  + ("; quality not measured (its size missed first)" if p.stage == "size" else
                     f"; drop {_fmt(p.drop)}, SQNR {_fmt(p.sqnr_db)} dB") for p in near]
    lines.append("")
    lines.append(f"{'point':58} {'name':11} {'size KB':>8} {'drop':>7} {'SQNR dB':>8}  status")
    for p in sorted(points, key=lambda p: (p.size_kb if p.stage else math.inf)):
        mark = "*" if p in on_front else " "
        status = p.status + (f" ({', '.join(f'{k} by {v:.3g}' for k, v in p.missing.items())})" if p.missing else "")
        status += f" ({p.why})" if p.why and p.status in ("failed", "pruned") else ""
        lines.append(f"{mark}{p.label[:57]:57} {p.name:11} {p.size_kb:8.1f} {_fmt(p.drop):>7} {_fmt(p.sqnr_db):>8}  "
                     f"{status}")
    lines.append("* on the size-quality front")
    text = "\n".join(lines)
    (out / f"{model}.json").write_text(json.dumps({"model": model, "constraints": asdict(want), "float": floats,
                                                   "chosen": best.name if best else None,
                                                   "front": [p.name for p in on_front],
                                                   "points": [asdict(p) for p in points]}, indent=1, default=str))
    (out / f"{model}.md").write_text(f"```\n{text}\n```\n")
    _plot(model, unit or "output SQNR (dB)", points, on_front, best, want, out / f"{model}_front.png")
    return text


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def _plot(model: str, unit: str, points: list[Point], on_front: list[Point], best: Point | None, want: Constraints,
          path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = [p for p in points if p.stage == "full"]
    y = (lambda p: p.drop) if any(p.drop is not None for p in full) else (lambda p: p.sqnr_db)
    fig, ax = plt.subplots(figsize=(8, 5))
    colours = {"onnx": "tab:blue", "coreml": "tab:orange", "torch": "tab:green"}
    part = [p for p in points if p.stage == "subset" and y(p) is not None]
    for backend, colour in colours.items():
        mine = [p for p in full if p.backend == backend]
        ax.scatter([p.size_kb for p in mine], [y(p) for p in mine], c=colour, label=backend, alpha=0.7)
        mine = [p for p in part if p.backend == backend]
        ax.scatter([p.size_kb for p in mine], [y(p) for p in mine], facecolors="none", edgecolors=colour,
                   label=f"{backend}, a quarter of the data only (clearly out)" if mine else None)
    ax.plot([p.size_kb for p in on_front], [y(p) for p in on_front], "k--", lw=1, label="front")
    for i, p in enumerate(on_front):
        ax.annotate(f"{i + 1}", (p.size_kb, y(p)), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if best is not None:
        ax.scatter([best.size_kb], [y(best)], s=160, facecolors="none", edgecolors="red", label="chosen")
    if want.max_size_kb is not None:
        ax.axvline(want.max_size_kb, color="grey", ls=":", label="max size")
    limit = want.max_drop if y is not None and any(p.drop is not None for p in full) else want.min_sqnr_db
    if limit is not None:
        ax.axhline(limit, color="grey", ls="-.", label="quality limit")
    ax.set_xlabel("size (KB)")
    ax.set_ylabel(f"drop vs float ({unit})" if any(p.drop is not None for p in full) else unit)
    ax.set_title(f"{model}: size vs quality, front points numbered in size order")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_variant(config_path: Path, model: str, p: Point, want: Constraints, task: str) -> str:
    """Append the chosen point as a variant with budgets at its figures plus init's margins (never looser than the
    constraints the search was given)."""
    from tinygate.init import FLOAT_NOISE, MARGINS, _toml

    budgets: dict[str, float] = {"max_size_kb": round(p.size_kb * (1 + MARGINS["size_pct"] / 100), 2)}
    if want.max_size_kb is not None:
        budgets["max_size_kb"] = min(budgets["max_size_kb"], want.max_size_kb)
    if p.drop is not None:
        margin = MARGINS["psnr_db"] if task == "image" else MARGINS["accuracy_pts"]
        key = "max_psnr_drop_db" if task == "image" else "max_accuracy_drop_pct"
        budgets[key] = round(max(p.drop, 0.0) + margin, 3)
        if want.max_drop is not None:
            budgets[key] = min(budgets[key], want.max_drop)
    if want.max_transfer_kb is not None:
        budgets["max_transfer_kb"] = want.max_transfer_kb
    if p.sqnr_db is not None:  # never tighter than CPU rounding decides (init's cap), never looser than asked
        floor = min(p.sqnr_db - MARGINS["sqnr_db"], FLOAT_NOISE["sqnr_db"])
        if math.isfinite(floor) or want.min_sqnr_db is not None:
            budgets["min_output_sqnr_db"] = round(max(floor if math.isfinite(floor) else FLOAT_NOISE["sqnr_db"],
                                                      want.min_sqnr_db or -math.inf), 2)
    existing = read_toml(config_path).get("models", {}).get(model, {}).get("variants", {})
    name = next(f"optimized{i or ''}" for i in range(100) if f"optimized{i or ''}" not in existing)
    text = (f"\n# found by `tinygate optimize` ({p.size_kb:.1f} KB, drop {_fmt(p.drop)}, SQNR {_fmt(p.sqnr_db)} dB)\n"
            f"[models.{model}.variants.{name}]\nsteps = {_toml(p.steps)}\nbudgets = {_toml(budgets)}\n")
    before = config_path.read_text(encoding="utf-8")
    config_path.write_text(before + text, encoding="utf-8")
    try:
        load(config_path)
    except GateError:
        config_path.write_text(before, encoding="utf-8")
        raise
    return name


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model of the config, by name")
    p.add_argument("--config", type=Path, help="the gate config (default: the nearest gate.toml above here)")
    p.add_argument("--max-size-kb", type=float)
    p.add_argument("--max-transfer-kb", type=float)
    p.add_argument("--max-drop", type=float, help="quality below the float model: PSNR dB (image), accuracy points "
                                                  "(classifier)")
    p.add_argument("--min-sqnr-db", type=float, help="every output's SQNR against the float model")
    p.add_argument("--backends", default="onnx,coreml,torch", help="comma-separated: onnx, coreml, torch")
    p.add_argument("--objective", choices=("size", "transfer"), default="size")
    p.add_argument("--max-minutes", type=float, default=20.0, help="the search's time budget")
    p.add_argument("--write", action="store_true", help="add the chosen variant to the config, with budgets")


def main_args(args: argparse.Namespace) -> int:
    backends = tuple(b for b in args.backends.split(",") if b)
    if unknown := sorted(set(backends) - {"onnx", "coreml", "torch"}):
        raise GateError("--backends", None, f"unknown backend {unknown[0]!r} (onnx, coreml, torch)")
    want = Constraints(args.max_size_kb, args.max_transfer_kb, args.max_drop, args.min_sqnr_db, backends)
    if all(v is None for v in (want.max_size_kb, want.max_transfer_kb, want.max_drop, want.min_sqnr_db)):
        raise GateError("tinygate optimize", None, "give at least one constraint (--max-size-kb, --max-drop, ...)")
    from tinygate.cli import find_config

    config_path = find_config(args.config)
    start = time.monotonic()
    points, floats = search(config_path, args.model, want, args.max_minutes, objective=args.objective)
    task = load(config_path).models[args.model].task
    out = config_path.parent / "reports" / "optimize"
    print(report(args.model, task, want, points, floats, (time.monotonic() - start) / 60, out, args.objective))
    print(f"# history: {out / (args.model + '.json')}; front: {out / (args.model + '_front.png')}")
    best = choose(points, args.objective)
    if best is None:
        return 1
    if args.write:
        name = write_variant(config_path, args.model, best, want, task)
        print(f"# wrote [models.{args.model}.variants.{name}] to {config_path}; gate it with: tinygate check -k {name}")
    return 0
