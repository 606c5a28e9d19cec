"""Benchmark of the gate's own speed on the bundled models, from a clean clone of this checkout.

Three runs of `pytest model_tests` in the clone, each in a process of its own (wall time and peak resident
memory of the largest process, the gate's; also, for information, the peak of the whole process tree's
proportional set size, Chromium and Playwright's driver included): cold (an empty cache), warm (nothing changed,
everything cached), and warm `-m coreml`. Each figure is held to the target of issue 15 and printed as a table;
the run also writes reports/latest/gate_speed.json in this checkout.

Targets: cold <= 120 s; warm <= 30 s and <= a quarter of cold; warm -m coreml <= 10 s; peak memory <= 2 GB.
Run: python benchmarks/gate_speed.py [--keep DIR] (tox -e gate-speed). A few minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MEASURE = """
import json, os, resource, subprocess, sys, threading, time

def tree(root):
    children = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            children.setdefault(int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]), []).append(int(p))
        except (OSError, IndexError, ValueError):
            pass
    out, todo = [], [root]
    while todo:
        out.append(todo.pop())
        todo += children.get(out[-1], [])
    return out

def pss_kb(pid):
    try:
        return next(int(l.split()[1]) for l in open(f"/proc/{pid}/smaps_rollup") if l.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0

start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
tree_peak = [0]

def sample():  # the whole tree (the gate, its Chromium and Playwright's driver), shared pages counted once
    while proc.poll() is None:
        tree_peak[0] = max(tree_peak[0], sum(pss_kb(p) for p in tree(proc.pid)))
        time.sleep(0.3)

threading.Thread(target=sample, daemon=True).start()
output = proc.communicate()[0]
failed = [l for l in output.splitlines() if l.startswith(("FAILED", "ERROR", "E  "))]
tail = [] if proc.returncode == 0 else failed[-20:]
print(json.dumps({"returncode": proc.returncode, "seconds": time.perf_counter() - start,
                  "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "tree_pss_mb": tree_peak[0] / 1024, "failures": tail}))
"""


def measure(clone: Path, *args: str) -> dict:
    """One gate run in the clone, in a fresh process: its wall time and its peak resident memory."""
    cmd = [sys.executable, "-m", "pytest", "model_tests", "-q", "-p", "no:cacheprovider", "--no-gate-strict", *args]
    out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], cwd=clone, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="clone into this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clone = args.keep or Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        runs = {"cold": measure(clone), "warm": measure(clone), "warm -m coreml": measure(clone, "-m", "coreml")}
    cold, warm, coreml = (runs[k]["seconds"] for k in ("cold", "warm", "warm -m coreml"))
    peak = max(r["peak_mb"] for r in runs.values())
    tree = max(r["tree_pss_mb"] for r in runs.values())
    rows = [("cold", f"{cold:.1f} s", "<= 120 s", cold <= 120),
            ("warm", f"{warm:.1f} s", "<= 30 s", warm <= 30),
            ("warm / cold", f"{warm / cold:.2f}", "<= 0.25", warm / cold <= 0.25),
            ("warm -m coreml", f"{coreml:.1f} s", "<= 10 s", coreml <= 10),
            ("peak resident memory", f"{peak:.0f} MB", "<= 2048 MB", peak <= 2048)]
    failed = [name for name, r in runs.items() if r["returncode"] != 0]
    print(f"{'figure':<22} {'measured':>10}  {'target':<11} met")
    for name, value, target, met in rows:
        print(f"{name:<22} {value:>10}  {target:<11} {'yes' if met else 'NO'}")
    print(f"{'with Chromium, PSS':<22} {f'{tree:.0f} MB':>10}  (the gate's process, its browsers and their driver)")
    if failed:
        print(f"gate runs that did not pass: {', '.join(failed)}")
        for name in failed:
            print(f"{name}:", *runs[name]["failures"], sep="\n  ")
    out = REPO / "reports" / "latest"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gate_speed.json").write_text(json.dumps({"runs": runs, "targets_met": {r[0]: r[3] for r in rows}},
                                                    indent=1))
    return 0 if not failed and all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
