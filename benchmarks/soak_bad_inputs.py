"""Soak of the bad-input battery: run it again and again under `-n 2` for a while (30 minutes by default) with one
shared cache, then show that nothing is left behind that a single clean run would not leave.

Checked after the soak, against a snapshot taken before it and a clean run's cache:
- no new entry in the temporary folder (pytest's own base folder, given with --basetemp, is removed each round);
- no stray process: no Chromium, pytest or Python process started since the soak began is still alive;
- the shared cache holds the same entries a single clean run made (no half-written entry, no lock or scratch
  file, no entry only a killed or failed run would make).

Run: python benchmarks/soak_bad_inputs.py [--minutes 30]. Prints a table of figures and exits 1 on any leftover.
Not in CI (it runs for half an hour); the battery itself runs in CI once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BATTERY = ["tests/test_bad_inputs.py", "tests/test_confinement.py", "tests/test_time_limits.py",
           "tests/test_safety.py", "tests/test_existing_int8.py"]


def processes() -> dict[int, str]:
    """Live processes of this user: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == os.getuid():
                    cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                    found[int(entry.name)] = cmd.decode(errors="replace")
            except OSError:
                continue
    return found


def cache_entries(cache: Path) -> set[str]:
    return {str(p.relative_to(cache)) for p in cache.rglob("*")} if cache.exists() else set()


def battery(cache: Path, basetemp: Path) -> tuple[int, float]:
    start = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "pytest", *BATTERY, "-n", "2", "-q", "-p", "no:cacheprovider",
                            f"--basetemp={basetemp}"], cwd=REPO, env={**os.environ, "TINYGATE_TEST_CACHE": str(cache)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(basetemp, ignore_errors=True)
    return code, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    args = parser.parse_args()
    tmp = Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="tinygate-soak-"))
    before_tmp, before_procs, me = set(os.listdir(tmp)), processes(), os.getpid()

    clean_code, clean_s = battery(work / "clean-cache", work / "base")
    clean = cache_entries(work / "clean-cache")
    rounds, failures, end = 0, 0, time.monotonic() + args.minutes * 60
    while time.monotonic() < end:
        code, _ = battery(work / "soak-cache", work / "base")
        rounds, failures = rounds + 1, failures + (code != 0)
    time.sleep(2)  # let children that are exiting go

    soaked = cache_entries(work / "soak-cache")
    new_tmp = sorted(set(os.listdir(tmp)) - before_tmp - {work.name})
    strays = {pid: cmd for pid, cmd in processes().items() if pid not in before_procs and pid != me
              and any(w in cmd for w in ("chrom", "pytest", "python"))}
    problems = {
        "temporary files left": new_tmp,
        "stray processes": [f"{pid}: {cmd[:100]}" for pid, cmd in strays.items()],
        "cache entries a clean run does not make": sorted(soaked - clean)[:20],
        "cache entries missing after the soak": sorted(clean - soaked)[:20],
        "battery rounds that failed": [f"{failures} of {rounds}"] if failures or clean_code else [],
    }
    print(f"soak: {rounds} rounds of the bad-input battery under -n 2 in {args.minutes:g} min "
          f"(a round: {clean_s:.0f} s); clean cache {len(clean)} paths, soaked cache {len(soaked)}")
    print(f"{'leftover':45} count  first")
    for what, items in problems.items():
        print(f"{what:45} {len(items):5}  {items[0] if items else ''}")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if any(problems.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
