"""Core ML numerics catch real damage on Linux: a variant palettized to 2 bits misses the PSNR floor that
the shipped 4-bit variant meets, measured by the MIL interpreter."""

from __future__ import annotations

import pytest
from bundled import REPO, model_table

from tinygate import config

pytestmark = pytest.mark.slow

SAMPLES = 24  # of the 100 evaluation images: the MIL interpreter takes about 0.4 s an image on two cores

CONFIG = model_table("tinybeauty", eval_spec='{ npz = "eval.npz" }') + """
[models.tinybeauty.variants.float]
steps = []
budgets = {}

[models.tinybeauty.variants.coreml_palettize]
steps = [{ step = "coreml" }, { step = "coreml_palettize", nbits = NBITS }]
budgets = { min_psnr_db = FLOOR }
"""


@pytest.mark.parametrize(("nbits", "passes"), [(4, True), (2, False)], ids=["4_bits_pass", "2_bits_fail"])
def test_palettized_core_ml_variant_is_judged_by_its_outputs_on_linux(tmp_path, run_gate, nbits, passes):
    floor = config.load(REPO / "gate.toml").models["tinybeauty"].variants["coreml_palettize"].budgets["min_psnr_db"]
    import numpy as np

    from tinygate.zoo.tinybeauty import eval_set

    data = eval_set()
    np.savez(tmp_path / "eval.npz", inputs=data.inputs[:SAMPLES], targets=data.targets[:SAMPLES])
    (tmp_path / "gate.toml").write_text(CONFIG.replace("NBITS", str(nbits)).replace("FLOOR", str(floor)))
    run = run_gate(tmp_path / "gate.toml", "-m", "coreml and quality")
    assert (run.returncode == 0) is passes, run.output
    assert "skipped" not in run.output.splitlines()[-1]
    if not passes:
        line = run.line("tinybeauty-coreml_palettize: mean PSNR")
        assert "on the MIL interpreter is below the floor" in line
