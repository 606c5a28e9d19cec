"""Helpers for the tests of tinygate: run a whole gate in a subprocess on a config written for the test."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class GateRun:
    returncode: int
    output: str
    reports: Path

    def lines(self, needle: str) -> list[str]:
        return [line for line in self.output.splitlines() if needle in line]


@pytest.fixture
def run_gate(tmp_path: Path):
    """Run `pytest model_tests` on a given gate config in a fresh process, with its own reports folder."""
    def run(config: Path, *args: str, cache: Path | None = None, env: dict | None = None) -> GateRun:
        reports = tmp_path / "reports"
        cmd = [sys.executable, "-m", "pytest", str(REPO / "model_tests"), "-p", "no:cacheprovider", "-q",
               f"--gate-config={config}", f"--gate-cache-dir={cache or tmp_path / 'cache'}",
               f"--gate-reports-dir={reports}", *args]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                              env={**os.environ, **(env or {})})
        return GateRun(proc.returncode, proc.stdout + proc.stderr, reports / "latest")
    return run
