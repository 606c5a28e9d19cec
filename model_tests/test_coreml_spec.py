"""Core ML packages, checked from their spec on any OS: they load, match the float model's interface,
and declare the configured compute precision and deployment target."""

import pytest

from tinygate import coreml_spec, pipeline

pytestmark = [pytest.mark.spec, pytest.mark.artifact_kind("mlpackage")]


def _describe(artifact, variant):
    try:
        return coreml_spec.describe(artifact.path)
    except Exception as exc:
        pytest.fail(f"{variant.id}: {artifact.path} does not load as a Core ML spec: {exc}", pytrace=False)


def _convert_params(variant):
    return next(s.params for s in variant.steps if s.name == "coreml")


def test_coreml_loads_as_mlprogram(artifact, variant, gate_spec_check):
    desc = _describe(artifact, variant)
    gate_spec_check("model_type", desc.model_type, "mlProgram")


def test_coreml_interface_matches_float(artifact, variant, gate_config, gate_spec_check):
    model = gate_config.models[variant.model]
    desc = _describe(artifact, variant)
    gate_spec_check("inputs", desc.inputs, dict(model.inputs))
    gate_spec_check("outputs", desc.outputs, pipeline.float_output_shapes(model))


def test_coreml_precision_and_target(artifact, variant, gate_spec_check):
    desc, params = _describe(artifact, variant), _convert_params(variant)
    gate_spec_check("compute_precision", desc.precision, params["precision"])
    gate_spec_check("spec_version", desc.spec_version, coreml_spec.SPEC_VERSION[params["target"]],
                    note=f"minimum deployment target {params['target']}")
