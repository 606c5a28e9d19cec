"""What a gate run reports: every check (value, budget, verdict) and every variant's figures.

Written at the end of a run to reports/latest/: results.json for machines, summary.md for a pull
request, optimization_results.png (size against quality, as in the seeds); plus a terminal table.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tinygate.cache import tool_versions
from tinygate.checks import FAIL, PASS, Check, measured


@dataclass
class Recorder:
    """Collects checks and per-variant figures during a run (one per pytest process)."""

    checks: list[Check] = field(default_factory=list)
    figures: dict[str, dict[str, object]] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)  # model -> hash of its evaluation data
    artifacts: dict[str, dict] = field(default_factory=dict)  # variant -> kind, path, digest, factory, meta
    samples: dict[str, dict[str, list]] = field(default_factory=dict)  # variant -> per-sample scores
    notes: list[str] = field(default_factory=list)  # what the run could not do at all (no baseline, ...)
    accepting: bool = False  # this run is to become the baseline: comparisons with the old one inform, not block

    def figure(self, variant_id: str, **values: object) -> None:
        self.figures.setdefault(variant_id, {}).update(values)

    def dump(self) -> str:
        """Everything recorded, as JSON: what a pytest-xdist worker sends its controller."""
        return json.dumps({"checks": [asdict(c) for c in self.checks], "figures": self.figures, "hashes": self.hashes,
                           "data": self.data, "artifacts": self.artifacts, "samples": self.samples,
                           "notes": self.notes})

    def merge(self, dumped: str) -> None:
        """Add a worker's records (Recorder.dump) to this one."""
        doc = json.loads(dumped)
        self.checks += [Check(**c) for c in doc["checks"]]
        for variant_id, values in doc["figures"].items():
            self.figure(variant_id, **values)
        self.hashes.update(doc["hashes"])
        self.data.update(doc["data"])
        self.artifacts.update(doc["artifacts"])
        self.samples.update(doc["samples"])
        self.notes += [n for n in doc["notes"] if n not in self.notes]

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def record(self, model: str, variant: str, check: str, value: float, budget: float, unit: str, passed: bool,
               backend: str, note: str = "", op: str = "<=") -> Check:
        """A check that is not a configured budget (a math bound): recorded the same way."""
        result = Check(model, variant, check, measured(value), budget, unit, PASS if passed else FAIL, backend, note,
                       op, "" if passed else note)
        self.checks.append(result)
        return result


def strict_json(doc: object) -> str:
    """JSON that strict readers accept: a NaN or an infinity becomes null, and `non_finite` says where and what it
    was (a path like figures.m-v.psnr_db -> "inf")."""
    where: dict[str, str] = {}

    def clean(value: object, path: str) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            where[path] = str(value)
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value
    cleaned = clean(doc, "")
    if isinstance(cleaned, dict) and where:
        cleaned["non_finite"] = where
    return json.dumps(cleaned, indent=2, allow_nan=False)


def _fmt(value: float | str | None) -> str:
    return "n/a" if value is None else value if isinstance(value, str) else f"{value:.4g}"


def machine() -> dict[str, str]:
    return {"system": platform.system(), "machine": platform.machine(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(), "node": platform.node()}


def write(rec: Recorder, out: Path, exitstatus: int, outcomes: dict[str, int] | None = None,
          plots: bool = True) -> list[Path]:
    """Write results.json, summary.md and (unless `plots` is off) the size/quality plot and the download times;
    returns the paths written. `outcomes`: pytest's own counts (failed, errors, ...), so the headline covers
    failures that are not budget checks."""
    out.mkdir(parents=True, exist_ok=True)
    doc = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "exitstatus": exitstatus,
           "outcomes": outcomes or {}, "notes": rec.notes, "machine": machine(), "tools": tool_versions(),
           "hashes": rec.hashes, "data": rec.data, "figures": rec.figures,
           "checks": [c.as_dict() for c in rec.checks]}
    paths = [out / "results.json", out / "summary.md"]
    paths[0].write_text(strict_json(doc))
    paths[1].write_text(markdown(rec, exitstatus, outcomes))
    if plots and rec.figures:
        paths.append(plot(rec, out / "optimization_results.png"))
    if plots and any(isinstance(f.get("download_s"), dict) for f in rec.figures.values()):
        from tinygate import plots as drawn

        paths.append(drawn.downloads(rec.figures, _budgets(rec), out / "download_time.png"))
    return paths


def table_rows(rec: Recorder) -> list[tuple[str, ...]]:
    rows = []
    for c in rec.checks:
        rows.append((f"{c.model}-{c.variant}", c.check, f"{_fmt(c.value)} {c.unit}".strip(),
                     f"{c.op} {_fmt(c.budget)}", c.verdict if c.passed else c.verdict.upper(), c.backend))
    return rows


HEADER = ("variant", "check", "value", "budget", "verdict", "measured on")


def terminal_table(rec: Recorder) -> list[str]:
    rows = [HEADER, *table_rows(rec)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def headline(rec: Recorder, exitstatus: int, outcomes: dict[str, int] | None = None) -> str:
    """One line that counts every failure, budget or not: checks failed, not measured, pytest's own failures."""
    outcomes = outcomes or {}
    failed = sum(c.verdict == FAIL for c in rec.checks)
    unmeasured = sum(c.verdict not in (PASS, FAIL) for c in rec.checks)
    parts = [f"{len(rec.checks) - failed - unmeasured} of {len(rec.checks)} checks passed", f"{failed} failed",
             f"{unmeasured} not measured"]
    parts += [f"{n} {what} (pytest)" for what, n in outcomes.items() if n]
    return "; ".join(parts) + f"; pytest exit status {exitstatus}."


def markdown(rec: Recorder, exitstatus: int, outcomes: dict[str, int] | None = None) -> str:
    """Leads with what failed and why (and what could not be measured), then every check, then the figures."""
    bad = [c for c in rec.checks if not c.passed]
    verdict = "**blocked**" if bad or exitstatus else "**may ship**"
    lines = [f"# tinygate: {verdict}", "", headline(rec, exitstatus, outcomes), ""]
    if bad:
        lines += ["## What failed", ""] + [f"- **{c.id}** `{c.check}` {c.verdict}: {c.reason or c.note}" for c in bad]
        lines += [""]
    if rec.notes:  # after the failures, which lead: a note explains (a step's choice, a busy machine)
        lines += (["## Notes", ""] if bad else []) + [f"- {n}" for n in rec.notes] + [""]
    lines += ["## Every check", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(rec)]
    if rec.figures:
        rows = {vid: _figure_cells(fig) for vid, fig in sorted(rec.figures.items())}
        keys = [k for k in FIGURE_ORDER if any(k in r for r in rows.values())]
        keys += sorted({k for r in rows.values() for k in r} - set(keys))
        lines += ["", "## Figures per variant", "", "| variant | " + " | ".join(keys) + " |",
                  "|---|" + "---|" * len(keys)]
        for vid, cells in rows.items():
            lines.append(f"| {vid} | " + " | ".join(cells.get(k, "") for k in keys) + " |")
    lines += download_table(rec)
    return "\n".join(lines) + "\n"


def download_table(rec: Recorder) -> list[str]:
    """Each variant's download time on each network profile: computed from its transfer size, and in brackets as
    measured in Chromium under network emulation where it was."""
    rows = {vid: fig for vid, fig in sorted(rec.figures.items()) if isinstance(fig.get("download_s"), dict)}
    if not rows:
        return []
    profiles = list(next(iter(rows.values()))["download_s"])
    lines = ["", "## Download time per network profile (s)", "",
             "Computed: one round trip plus the transfer size (gzip) at the profile's bandwidth; [measured in Chromium "
             "under network emulation].", "", "| variant | " + " | ".join(profiles) + " |",
             "|---|" + "---|" * len(profiles)]
    for vid, fig in rows.items():
        measured_s = fig.get("download_measured_s", {})
        cells = [_fmt(fig["download_s"].get(p)) + (f" [{_fmt(measured_s[p])}]" if p in measured_s else "")
                 for p in profiles]
        lines.append(f"| {vid} | " + " | ".join(cells) + " |")
    return lines


FIGURE_ORDER = ("size_kb", "transfer_kb", "psnr_db", "ssim", "accuracy_pct", "worst_output_sqnr_db", "speedup",
                "p50_ms", "p95_ms", "measured_on")


def _figure_cells(fig: dict) -> dict[str, str]:
    """A variant's figures as table cells: numbers and names only (the variant column already names the model
    and the variant); the per-output fidelity table shrinks to its worst output's SQNR."""
    cells = {k: _fmt(v) if isinstance(v, float | int) else str(v) for k, v in fig.items()
             if k not in ("model", "variant", "threads") and isinstance(v, float | int | str)}
    sqnr = [f["sqnr_db"] for f in fig.get("fidelity", {}).values() if isinstance(f, dict) and "sqnr_db" in f]
    if sqnr:
        cells["worst_output_sqnr_db"] = _fmt(min(sqnr))
    return cells


def _budgets(rec: Recorder) -> dict[str, dict[str, float]]:
    """Every numeric budget a check held, by variant id and check name."""
    budgets: dict[str, dict[str, float]] = {}
    for c in rec.checks:
        if isinstance(c.budget, int | float) and not isinstance(c.budget, bool):
            budgets.setdefault(c.id, {})[c.check] = float(c.budget)
    return budgets


def plot(rec: Recorder, path: Path) -> Path:
    """Size against quality for every variant, one panel per model (tinygate.plots.results)."""
    from tinygate import plots

    budgets = _budgets(rec)
    tasks = {}
    for fig in rec.figures.values():
        model = fig.get("model")
        task = "image" if "psnr_db" in fig else "classifier" if "accuracy_pct" in fig else None
        if model is not None and (task or model not in tasks):
            tasks[str(model)] = task or tasks.get(str(model)) or "fidelity"
    return plots.results(rec.figures, budgets, tasks, path)
