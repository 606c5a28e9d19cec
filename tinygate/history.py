"""The run history: every gate run's size, quality and latency figures appended to reports/history.jsonl
with the commit, time, machine fingerprint, tool versions and the model and data hashes behind them, and
reports/latest/trend.png, which plots each model's figures over that history."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path

from tinygate.cache import tool_versions
from tinygate.latency import machine_fingerprint

# The figures a history entry keeps per variant, and the panel each is plotted in.
TRENDED = {"size_kb": "size (KB)", "psnr_db": "quality", "accuracy_pct": "quality",
           "worst_output_sqnr_db": "quality", "p50_ms": "latency p50 (ms)"}
KEPT = (*TRENDED, "transfer_kb", "psnr_p5_db", "ssim", "p95_ms", "speedup", "measured_on")


def fingerprint() -> dict[str, object]:
    """This machine, and a short id of it: absolute timings are only comparable between equal ids."""
    here = machine_fingerprint()
    return {**here, "id": hashlib.sha256(json.dumps(here, sort_keys=True).encode()).hexdigest()[:12]}


def commit(root: Path) -> str:
    """The checked-out commit ("+dirty" with local changes), or "unknown" outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def entry(rec, exitstatus: int, root: Path, kind: str = "run", reason: str = "") -> dict:
    """One history line: what this run measured, on what, from which inputs."""
    from tinygate.plots import quality_of

    variants = {}
    for vid, figures in sorted(rec.figures.items()):
        if (sqnr := quality_of(figures, "fidelity")) is not None:  # a label-free model's quality figure
            figures = {**figures, "worst_output_sqnr_db": sqnr}
        kept = {k: figures[k] for k in KEPT if k in figures}
        variants[vid] = {"model": figures.get("model"), "variant": figures.get("variant"),
                         "artifact": rec.hashes.get(vid), **kept}
    doc = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "kind": kind, "commit": commit(root),
           "exitstatus": exitstatus, "passed": exitstatus == 0 and all(c.passed for c in rec.checks),
           "machine": fingerprint(), "tools": tool_versions(), "data": dict(sorted(rec.data.items())),
           "variants": variants}
    if reason:
        doc["reason"] = reason
    return doc


def append(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(doc, sort_keys=False) + "\n")


def read(path: Path) -> list[dict]:
    """Every entry; a line that is not JSON (a hand edit, a killed write) is skipped, not fatal."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def trend(entries: list[dict], path: Path) -> Path | None:
    """Per model, one row of panels (size, quality, latency), one line per variant over the runs (tinygate.plots)."""
    from tinygate import plots

    runs = [e for e in entries if e.get("kind") == "run"
            and any(v.get("model") for v in (e.get("variants") or {}).values())]
    return plots.trend(runs, path) if runs else None
