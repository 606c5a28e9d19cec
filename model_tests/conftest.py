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
    metafunc.parametrize(
        "variant", [pytest.param(v, id=v.id, marks=getattr(pytest.mark, v.backend)) for v in variants]
    )
