"""Benchmark of the latency decision rule (tinygate.regression) against pytest-benchmark's
`--benchmark-compare-fail=median:10%`, both judged on the same recorded timings.

Artifacts: tinybeauty exported to ONNX at 128x128 ("base"), and the same model with an extra three-conv
branch whose output is added at zero weight: 16 channels wide ("slower", about 15% more work) or 24 wide
("much_slower", about a third more); outputs are identical. Each comparison records one run: 3 warm-up
rounds, then MAX_ROUNDS rounds that call base and candidate once each, in random order. Every rule reads
that same run, each with its documented settings:
- tinygate: the sequential rule (tinygate.regression.replay_latency: 20 rounds at a time, up to 120), as
  compare_latency would have decided timing those rounds itself;
- pytest-benchmark as it is used (a job compares with a run stored by an earlier job): its own
  PercentageRegressionCheck ("median:10%") on the candidate's first ROUNDS times against the base's first
  ROUNDS times recorded by the previous comparison (the stored run);
- pytest-benchmark's rule on the interleaved run itself: the same check on the candidate's and the base's
  first ROUNDS times of this comparison (what the rule gives when its inputs share the machine's state).
ROUNDS is the gate's --gate-latency-rounds default (30). A CPU hog on the other core runs during every other
triple of comparisons, as a neighbour on a shared CI machine would.

Run: python benchmarks/decision_rule.py [--comparisons 20] (tox -e decision-rule). Writes
reports/latest/decision_rule.json and decision_rule.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _export(tmp: Path) -> dict[str, Path]:
    import torch
    from safetensors.torch import load_model

    from tinygate.zoo.tinybeauty import build

    class Slower(torch.nn.Module):
        def __init__(self, model, width):
            super().__init__()
            self.model = model
            conv = torch.nn.Conv2d
            self.extra = torch.nn.Sequential(conv(3, width, 3, padding=1), conv(width, width, 3, padding=1),
                                             conv(width, 3, 3, padding=1))

        def forward(self, x):
            return self.model(x) + 0.0 * self.extra(x)

    model = build()
    load_model(model, str(REPO / "weights/tinybeauty.safetensors"))
    x = torch.rand(1, 3, 128, 128)
    nets = {"base": model.eval(), "slower": Slower(model, 16).eval(), "much_slower": Slower(model, 24).eval()}
    for name, net in nets.items():
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(net, (x,), str(tmp / f"{name}.onnx"), dynamo=True, input_names=["image"],
                              output_names=["out"], optimize=False)
    return {name: tmp / f"{name}.onnx" for name in nets}


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    # No graph optimization: constant folding would remove the zero-weighted branch.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)
    return lambda: session.run(None, {"image": x})


ROUNDS, MAX_ROUNDS = 30, 120


def _record(base, new, rng) -> list[tuple[float, float]]:
    """One comparison's run: warm-up, then MAX_ROUNDS interleaved rounds of (base time, candidate time)."""
    from tinygate.regression import time_pair

    for _ in range(3):
        time_pair(base, new, rng)
    return [time_pair(base, new, rng) for _ in range(MAX_ROUNDS)]


def _hog(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparisons", type=int, default=20, help="per kind (identical, slower)")
    parser.add_argument("--out", type=Path, default=REPO / "reports/latest")
    args = parser.parse_args(argv)
    from pytest_benchmark.utils import parse_compare_fail

    from tinygate.regression import replay_latency, time_pair

    with tempfile.TemporaryDirectory() as tmp:
        sessions = {name: _session(path) for name, path in _export(Path(tmp)).items()}
        base = sessions["base"]
        rng = np.random.default_rng(1)
        true_ratio = {}
        for name in ("slower", "much_slower"):
            for _ in range(5):
                time_pair(base, sessions[name], rng)
            true_ratio[name] = float(np.median([b / a for a, b in (time_pair(base, sessions[name], rng)
                                                                    for _ in range(100))]))

        pb_rule = parse_compare_fail("median:10%")
        kinds = ["identical", "slower", "much_slower"] * args.comparisons
        rows, stored_base = [], None
        stop, hog = mp.Event(), None
        start = time.time()
        for i, kind in enumerate(kinds):
            noisy = (i // 3) % 2 == 1
            if noisy and hog is None:
                hog = mp.Process(target=_hog, args=(stop,), daemon=True)
                hog.start()
            elif not noisy and hog is not None:
                stop.set()
                hog.join()
                stop, hog = mp.Event(), None
            candidate = base if kind == "identical" else sessions[kind]
            run = _record(base, candidate, np.random.default_rng(i))
            decision = replay_latency(run)
            base_times, new_times = [b for b, _ in run[:ROUNDS]], [n for _, n in run[:ROUNDS]]
            pb_same = bool(pb_rule.fails({"median": float(np.median(new_times))},
                                         {"median": float(np.median(base_times))}))
            pb_stored = None
            if stored_base is not None:  # pytest-benchmark: this run against the run stored before it
                pb_stored = bool(pb_rule.fails({"median": float(np.median(new_times))},
                                               {"median": float(np.median(stored_base))}))
            stored_base = base_times
            rows.append({"kind": kind, "noisy_neighbour": noisy, "tinygate_regressed": decision.regressed,
                         "tinygate_verdict": decision.verdict, "rounds": decision.rounds,
                         "median_ratio": decision.median_ratio, "p_value": decision.p_value,
                         "pytest_benchmark_fails": pb_stored, "pytest_benchmark_same_run_fails": pb_same})
            print(f"{i:3d} {kind:11s} noisy={noisy!s:5s} tinygate={decision.verdict:13s} ratio="
                  f"{decision.median_ratio:.3f} rounds={decision.rounds:3d} pytest-benchmark stored="
                  f"{'n/a' if pb_stored is None else 'FAIL' if pb_stored else 'pass'} same-run="
                  f"{'FAIL' if pb_same else 'pass'}", flush=True)
        if hog is not None:
            stop.set()
            hog.join()

    def rate(rule: str, kind: str, flagged: bool) -> str:
        judged = [r for r in rows if r["kind"] == kind and r[rule] is not None]
        hits = sum(1 for r in judged if r[rule] == flagged)
        return f"{hits}/{len(judged)}"

    summary = {
        "true_slowdown_ratio": true_ratio, "comparisons_per_kind": args.comparisons,
        "seconds": round(time.time() - start, 1),
        "tinygate": {"false_positives": rate("tinygate_regressed", "identical", True),
                     "false_negatives_slower": rate("tinygate_regressed", "slower", False),
                     "false_negatives_much_slower": rate("tinygate_regressed", "much_slower", False),
                     "mean_rounds": float(np.mean([r["rounds"] for r in rows]))},
        "pytest_benchmark_median_10pct": {
            "false_positives": rate("pytest_benchmark_fails", "identical", True),
            "false_negatives_slower": rate("pytest_benchmark_fails", "slower", False),
            "false_negatives_much_slower": rate("pytest_benchmark_fails", "much_slower", False)},
        "pytest_benchmark_median_10pct_same_run": {
            "false_positives": rate("pytest_benchmark_same_run_fails", "identical", True),
            "false_negatives_slower": rate("pytest_benchmark_same_run_fails", "slower", False),
            "false_negatives_much_slower": rate("pytest_benchmark_same_run_fails", "much_slower", False)},
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decision_rule.json").write_text(json.dumps(summary, indent=1))
    t, pb, same = (summary[k] for k in ("tinygate", "pytest_benchmark_median_10pct",
                                        "pytest_benchmark_median_10pct_same_run"))
    md = ["# Latency decision rule: tinygate vs pytest-benchmark `median:10%`", "",
          f"'slower' is {100 * (true_ratio['slower'] - 1):.1f}% and 'much_slower' "
          f"{100 * (true_ratio['much_slower'] - 1):.1f}% slower than 'base' (medians of 100 interleaved rounds). "
          f"{args.comparisons} comparisons of each kind, {summary['seconds']:.0f} s; a CPU hog on the other core "
          f"during every other triple. Every rule reads the same recorded runs ({MAX_ROUNDS} interleaved rounds "
          f"each; pytest-benchmark's rule its first {ROUNDS}, the gate's default).", "",
          "| rule | identical flagged (false positives) | 'slower' missed | 'much_slower' missed |",
          "|---|---|---|---|",
          f"| tinygate: interleaved, median > +10% and Wilcoxon p < 0.001, sequential | {t['false_positives']} | "
          f"{t['false_negatives_slower']} | {t['false_negatives_much_slower']} |",
          f"| pytest-benchmark `--benchmark-compare-fail=median:10%` vs the stored previous run | "
          f"{pb['false_positives']} | {pb['false_negatives_slower']} | {pb['false_negatives_much_slower']} |",
          f"| pytest-benchmark `median:10%` on the same interleaved run | "
          f"{same['false_positives']} | {same['false_negatives_slower']} | {same['false_negatives_much_slower']} |",
          "",
          f"tinygate used {t['mean_rounds']:.1f} interleaved rounds per comparison on average."]
    (args.out / "decision_rule.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
