"""The `tinygate` command (also `python -m tinygate`): init, check, accept, compare, build, judge.

`check` and `accept` are the same pytest run a user would type, found from any folder of the project:
the project is the folder of the nearest gate.toml above the current folder (or --config's folder).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from tinygate.errors import GateError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if rest and args.command not in ("check", "accept", "judge"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.run(args, rest)
    except GateError as exc:
        print(f"tinygate {args.command}: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinygate", description="A pytest release gate for optimized ML models.",
                                allow_abbrev=False)
    sub = p.add_subparsers(dest="command", metavar="{init,check,accept,compare,build,judge,optimize,web-setup}")

    from tinygate import init

    i = sub.add_parser("init", help="scaffold a gated project here and write a config for your model",
                       description=init.__doc__.splitlines()[0])
    init.add_arguments(i)
    i.set_defaults(run=lambda a, _: init.main_args(a))

    from tinygate import optimize

    o = sub.add_parser("optimize", help="search the gate's steps for the smallest variant that meets your constraints",
                       description=optimize.__doc__.splitlines()[0])
    optimize.add_arguments(o)
    o.set_defaults(run=lambda a, _: optimize.main_args(a))

    for name, text in (("check", "run the gate: pytest on the project's model_tests (extra arguments go to "
                                 "pytest, e.g. -m coreml)"),
                       ("accept", "run the whole gate and, if every check passes, make it the baseline")):
        c = sub.add_parser(name, help=text, description=text, allow_abbrev=False)  # --co is pytest's, not --config
        c.add_argument("--config", type=Path, help="the gate config (default: the nearest gate.toml above here)")
        if name == "accept":
            c.add_argument("--reason", required=True, help="why this run becomes the baseline (kept in history)")
            c.add_argument("--new-release-line", action="store_true", help="restart the drift guard from it")
        c.set_defaults(run=_check)

    c = sub.add_parser("compare", help="this run's figures against the baseline or a history entry, as a table",
                       description="Compare REPORTS/latest/results.json with REPORTS/baseline or a line of "
                                   "REPORTS/history.jsonl (after `tinygate check`).")
    c.add_argument("--config", type=Path, help="the gate config (default: the nearest gate.toml above here)")
    c.add_argument("--against", default="baseline",
                   help="'baseline' (default), or history:N for line N of history.jsonl (negative counts from "
                        "the end: history:-2 is the run before the last)")
    c.set_defaults(run=_compare)

    b = sub.add_parser("build", help="pre-merge, untrusted phase: build every variant with this checkout's code and "
                                     "export the artifacts to a bundle (no verdict)",
                       description="Build every variant of the config (this checkout's code runs: give it no "
                                   "secrets) and write the artifacts, the float model's outputs, the config and a "
                                   "manifest of sha256 hashes into OUT, for `tinygate judge`.")
    b.add_argument("--config", type=Path, help="the gate config (default: the nearest gate.toml above here)")
    b.add_argument("--out", type=Path, required=True, help="the bundle folder to create (must not exist or be empty)")
    b.set_defaults(run=_build)

    j = sub.add_parser("judge", help="pre-merge, trusted phase: judge a bundle with this checkout's tinygate, config "
                                     "and baseline (extra arguments go to pytest)",
                       description="Measure and judge the artifacts of BUNDLE with this checkout's gate config, "
                                   "tests and baseline, strictly; nothing in the bundle is imported or executed.",
                       allow_abbrev=False)
    j.add_argument("bundle", type=Path, help="the folder `tinygate build --out` wrote")
    j.add_argument("--config", type=Path, help="the gate config (default: the nearest gate.toml above here)")
    j.add_argument("--approved", action="store_true",
                   help="a person approved the pull request's budget changes (e.g. it carries the approval label)")
    j.set_defaults(run=_judge)

    w = sub.add_parser("web-setup", help="install what the web runtime needs: Chromium (Debian's package) and "
                                         "onnxruntime-web (npm, from tinygate's lock file)",
                       description="Install onnxruntime-web from the lock file tinygate ships (npm ci, no install "
                                   "scripts) into ~/.cache/tinygate/ort-web, and Chromium with apt-get when it is "
                                   "missing and this runs as root (else stop with the command to run).")
    w.set_defaults(run=_web_setup)
    return p


def find_config(given: Path | None) -> Path:
    """--config, else the nearest gate.toml in this folder or above it."""
    if given is not None:
        if not given.is_file():
            raise GateError(given, None, "gate config file not found")
        return given.resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "gate.toml").is_file():
            return folder / "gate.toml"
    raise GateError(here, None, "no gate.toml here or in any folder above; run `tinygate init MODEL --data ...` "
                                "in your project first, or pass --config")


def _check(args: argparse.Namespace, rest: list[str]) -> int:
    config = find_config(args.config)
    tests = config.parent / "model_tests"
    cmd = [sys.executable, "-m", "pytest", str(tests if tests.is_dir() else config.parent),
           f"--gate-config={config}", *rest]
    if args.command == "accept":
        cmd += ["--gate-accept-baseline", f"--gate-reason={args.reason}"]
        cmd += ["--gate-new-release-line"] if args.new_release_line else []
    return subprocess.call(cmd)


def _build(args: argparse.Namespace, _: list[str]) -> int:
    from tinygate import bundle
    from tinygate.gate import Gate

    config = find_config(args.config)
    print(f"tinygate build: {config} -> {args.out}")
    manifest = bundle.build(Gate(config), args.out)
    failed = [vid for vid, v in manifest["variants"].items() if "error" in v]
    print(f"bundle: {args.out.resolve()} ({len(manifest['variants']) - len(failed)} variants built"
          + (f", {len(failed)} failed: {', '.join(failed)}; the judge fails them" if failed else "") + ")")
    print(f"judge it with the target branch's checkout: tinygate judge {args.out.resolve()}")
    return 0


def _judge(args: argparse.Namespace, rest: list[str]) -> int:
    config = find_config(args.config)
    tests = config.parent / "model_tests"
    cmd = [sys.executable, "-m", "pytest", str(tests if tests.is_dir() else config.parent), f"--gate-config={config}",
           f"--gate-bundle={args.bundle.resolve()}", "--gate-strict", "-p", "no:cacheprovider", *rest]
    return subprocess.call(cmd + (["--gate-approved"] if args.approved else []))


def _compare(args: argparse.Namespace, _: list[str]) -> int:
    from tinygate.history import KEPT

    config = find_config(args.config)
    reports = config.parent / "reports"
    latest = reports / "latest" / "results.json"
    if not latest.is_file():
        raise GateError(latest, None, "no run to compare: run `tinygate check` first")
    now = {vid: f for vid, f in _json(latest)["figures"].items()}
    label, then = _against(args.against, reports)
    figures = [k for k in KEPT if k != "measured_on"]
    rows = [("variant", "figure", label, "this run", "change")]
    for vid in sorted(set(now) | set(then)):
        mine, theirs = now.get(vid, {}), then.get(vid, {})
        if not theirs or not mine:
            rows.append((vid, "", "present" if theirs else "absent", "present" if mine else "absent", ""))
            continue
        for key in figures:
            a, b = theirs.get(key), mine.get(key)
            if isinstance(a, int | float) or isinstance(b, int | float):
                rows.append((vid, key, _fmt(a), _fmt(b), _change(a, b)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    return 0


def _against(spec: str, reports: Path) -> tuple[str, dict]:
    if spec == "baseline":
        path = reports / "baseline" / "baseline.json"
        if not path.is_file():
            raise GateError(path, None, 'no baseline: accept one with tinygate accept --reason "..."')
        return "baseline", _json(path)["variants"]
    if spec.startswith("history:"):
        path = reports / "history.jsonl"
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
            if path.is_file() else []
        try:
            doc = json.loads(lines[int(spec.split(":", 1)[1])])
        except (ValueError, IndexError):
            raise GateError(path, None, f"--against {spec}: no such line ({len(lines)} lines)") from None
        return f"history {doc.get('time', '?')}", doc.get("variants", {})
    raise GateError("--against", None, f"must be 'baseline' or history:N, got {spec!r}")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GateError(path, None, f"cannot read: {type(exc).__name__}: {exc}") from None


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, int | float) else "-" if v is None else str(v)


def _change(a: object, b: object) -> str:
    if not (isinstance(a, int | float) and isinstance(b, int | float)) or not math.isfinite(a * b):
        return ""
    pct = f" ({100 * (b - a) / abs(a):+.1f}%)" if a else ""
    return f"{b - a:+.4g}{pct}"


def _web_setup(args: argparse.Namespace, _: list[str]) -> int:
    import os
    import shutil

    from tinygate import browser

    if browser.chromium_path() is None:
        apt = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
        if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
            print(f"tinygate web-setup: {' '.join(apt)}", flush=True)
            if subprocess.call(apt) != 0:
                subprocess.call(["apt-get", "update", "-q"])
                if subprocess.call(apt) != 0:
                    raise GateError("apt-get", None, f"could not install Chromium: {' '.join(apt)} failed (its "
                                                     "output is above)")
        else:
            raise GateError("chromium", None, f"not found: install it (Debian/Ubuntu: sudo {' '.join(apt)}), or set "
                                              "TINYGATE_CHROMIUM to a Chromium or Chrome binary; then run this again")
    npm = shutil.which("npm")
    if npm is None:
        raise GateError("npm", None, "not found: install Node.js and npm (Debian/Ubuntu: sudo apt-get install npm)")
    home = browser.cache_home()
    home.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(browser.HERE / name, home / name)
    print(f"tinygate web-setup: npm ci in {home} (onnxruntime-web, pinned by tinygate's lock file)", flush=True)
    if subprocess.call([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"], cwd=home):
        raise GateError(home, None, "npm ci failed (its output is above): the npm registry must be reachable")
    problem = browser.missing()
    if problem:
        raise GateError("web-setup", None, problem)
    print(f"tinygate web-setup: ready: {browser.chromium_path()}, onnxruntime-web in {browser.ort_web_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
