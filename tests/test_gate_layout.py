"""The gate's shape: every budget key has a check test in the plugin, the bundled gate runs every one of them,
and backend markers select exactly their variants."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tinygate import config
from tinygate.budgets import BUDGETS

REPO = Path(__file__).resolve().parents[1]


def test_every_budget_key_is_checked_by_a_plugin_test_and_the_bundled_gate_runs_them_all():
    import tinygate.pytest_checks as checks

    source = "\n".join(p.read_text() for p in Path(checks.__file__).parent.glob("*.py"))
    unchecked = [key for key in BUDGETS if f'"{key}"' not in source]
    assert not unchecked, f"budget keys no gate test checks: {unchecked}"
    bundled = "\n".join(p.read_text() for p in (REPO / "model_tests").glob("test_*.py"))
    missing = [name for name in checks.__all__ if name not in bundled]
    assert not missing, f"checks of the plugin the bundled gate does not run: {missing}"


def _collect(*args: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "model_tests", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if "::" in line]


def test_coreml_marker_selects_exactly_the_core_ml_variants_with_every_check_kind():
    cfg = config.load(REPO / "gate.toml")
    coreml = {v.id for v in cfg.variants if v.backend == "coreml"}
    ids = _collect("-m", "coreml")
    found = {re.search(r"\[(.+)\]$", line).group(1) for line in ids}
    assert found == coreml
    for vid in coreml:  # every Core ML variant has a size, a quality and a spec test
        mine = [line for line in ids if line.endswith(f"[{vid}]")]
        files = {m.split("::")[0].removeprefix("model_tests/") for m in mine}
        assert {"test_size.py", "test_quality.py", "test_coreml_spec.py"} <= files


def test_every_collected_gate_test_id_reads_test_name_then_model_dash_variant():
    cfg = config.load(REPO / "gate.toml")
    ids = _collect()
    assert ids
    for line in (i for i in ids if not i.endswith("::test_no_baseline_variant_is_missing")):  # of the whole run
        assert re.fullmatch(r"model_tests/test_\w+\.py::test_\w+\[[a-z0-9_]+-[a-z0-9_]+\]", line), line
        assert re.search(r"\[(.+)\]$", line).group(1) in {v.id for v in cfg.variants}
