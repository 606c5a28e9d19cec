"""Machine profiles may name vector units: hosts sold under one CPU model name ("AMD EPYC" in a VM) differ in
AVX-512 and VNNI, and with them in speed and int8 results. A profile naming a unit this CPU lacks does not match."""

from __future__ import annotations

import pytest

from tests.test_config import GOOD, REPO
from tinygate import config, latency
from tinygate.errors import GateError


def test_a_profile_matches_only_a_cpu_with_every_unit_it_names():
    here = latency.vector_units().split()
    absent = next(u for u in latency.VECTOR_UNITS if u not in here)
    assert latency.matches({"cpu_model": latency.cpu_model(), "vector_units": tuple(here)})
    assert not latency.matches({"cpu_model": latency.cpu_model(), "vector_units": (*here, absent)})
    assert absent in latency.describe({"cpu_model": "x", "vector_units": (absent,)})


@pytest.mark.parametrize("units, problem", [('["avx3"]', "unknown unit(s) ['avx3']"),
                                            ('"avx2"', "must be")])
def test_a_wrong_vector_unit_stops_the_config_in_one_line(tmp_path, units, problem):
    path = tmp_path / "gate.toml"
    path.write_text(GOOD + f'\n[machines.box]\ncpu_model = "EPYC"\nvector_units = {units}\n')
    (tmp_path / "weights").symlink_to(REPO / "weights")
    with pytest.raises(GateError) as err:
        config.load(path)
    assert "\n" not in str(err.value) and ": machines.box.vector_units: " in str(err.value), err.value
    assert problem in str(err.value)


