"""Size budgets of each variant's deployable artifact (1 KB = 1,000 bytes; a package counts its folder)."""

import pytest

pytestmark = pytest.mark.size


@pytest.mark.budget("max_size_kb")
def test_size_budget(artifact, gate_check):
    gate_check("max_size_kb", artifact.disk_bytes() / 1000, note=str(artifact.path))


@pytest.mark.budget("max_size_ratio")
def test_size_ratio_to_float(artifact, float_artifact, gate_check):
    ratio = artifact.disk_bytes() / float_artifact.disk_bytes()
    gate_check("max_size_ratio", ratio,
               note=f"{artifact.disk_bytes()} bytes vs float {float_artifact.disk_bytes()} bytes")


@pytest.mark.budget("max_transfer_kb")
def test_transfer_size(artifact, gate_check):
    gate_check("max_transfer_kb", artifact.transfer_bytes() / 1000, note="gzip -9 / deflated zip")
