"""Parametrizes every gate test over the (model, variant) pairs it applies to, with ids `model-variant`
and the variant's backend marker (torch, onnx or coreml), so `-m coreml` selects the Core ML variants."""

from __future__ import annotations

import pytest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "variant" not in metafunc.fixturenames:
        return
    from fixtures.keys import CONFIG

    variants = metafunc.config.stash[CONFIG].variants
    if (marker := metafunc.definition.get_closest_marker("budget")) is not None:
        variants = [v for v in variants if marker.args[0] in v.budgets]
    if (marker := metafunc.definition.get_closest_marker("artifact_kind")) is not None:
        variants = [v for v in variants if v.kind == marker.args[0]]
    if (marker := metafunc.definition.get_closest_marker("with_step")) is not None:
        variants = [v for v in variants if any(s.name in marker.args for s in v.steps)]
    metafunc.parametrize(
        "variant", [pytest.param(v, id=v.id, marks=getattr(pytest.mark, v.backend)) for v in variants]
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A check no variant asks for is not a skipped test: deselect it (it shows in the deselected count)."""
    from tinygate.config import Variant

    unused = [i for i in items if "variant" in getattr(i, "fixturenames", ())
              and not isinstance(getattr(i, "callspec", None) and i.callspec.params.get("variant"), Variant)]
    if unused:
        config.hook.pytest_deselected(items=unused)
        items[:] = [i for i in items if i not in unused]


@pytest.fixture(autouse=True)
def _alone_when_timed(request: pytest.FixtureRequest, pytestconfig: pytest.Config):
    """Under pytest-xdist, latency tests hold the machine exclusively and every other test holds it shared,
    so no timing runs beside other work. Without xdist, tests run one at a time anyway."""
    import os

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    from pathlib import Path

    from tinygate.latency import machine_lock

    cache = Path(pytestconfig.getoption("--gate-cache-dir"))
    cache = cache if cache.is_absolute() else pytestconfig.rootpath / cache
    timed = request.node.get_closest_marker("latency") is not None
    with machine_lock(cache / ".machine.lock", exclusive=timed):
        yield
