"""gate.toml validation: the shipped file loads, and each kind of mistake stops with one clear line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tinygate import config
from tinygate.errors import GateError

REPO = Path(__file__).resolve().parents[1]
# A small config of its own, so that tuning gate.toml's budgets never breaks these edits.
GOOD = """
[models.tinybeauty]
factory = "tinygate.zoo.tinybeauty:build"
weights = "weights/tinybeauty.safetensors"
task = "image"
input = { name = "image", shape = [1, 3, 256, 256] }
output = { name = "retouched" }
eval = { source = "tinygate.zoo.tinybeauty:eval_set" }
calibration = { source = "tinygate.zoo.tinybeauty:calibration_set" }

[models.tinybeauty.variants.float]
steps = []
budgets = { max_size_kb = 100, min_psnr_db = 35, min_ssim = 0.97 }

[models.tinybeauty.variants.torch_int8]
steps = [{ step = "prune", rate = 0.3 }, { step = "torch_int8" }]
budgets = { max_psnr_drop_db = 1.0 }

[models.tinybeauty.variants.onnx]
steps = [{ step = "onnx_export" }, { step = "ort_optimize" }]
budgets = { max_psnr_drop_db = 0.01 }

[models.tinybeauty.variants.onnx_int8_dynamic]
steps = [{ step = "onnx_export" }, { step = "ort_int8_dynamic" }]
budgets = { max_size_ratio = 0.5 }

[models.tinybeauty.variants.coreml_palettize]
steps = [{ step = "coreml" }, { step = "coreml_palettize", nbits = 4 }]
budgets = { max_size_kb = 40 }

[models.digits]
factory = "tinygate.zoo.digits:build"
weights = "weights/digits.safetensors"
task = "classifier"
input = { name = "digit", shape = [1, 1, 8, 8] }
output = { name = "logits" }
eval = { source = "tinygate.zoo.digits:eval_set" }

[models.digits.variants.float]
steps = []
budgets = { max_size_kb = 50, min_accuracy_pct = 97 }

[models.digits.variants.coreml]
steps = [{ step = "coreml" }]
budgets = { max_accuracy_drop_pct = 1.0 }
"""


def test_the_test_config_is_valid(tmp_path):
    path = tmp_path / "gate.toml"
    path.write_text(GOOD)
    (tmp_path / "weights").symlink_to(REPO / "weights")
    assert set(config.load(path).models) == {"tinybeauty", "digits"}


def test_shipped_config_loads_both_bundled_models():
    cfg = config.load(REPO / "gate.toml")
    assert set(cfg.models) == {"tinybeauty", "digits"}
    assert all(any(v.is_float for v in m.variants.values()) for m in cfg.models.values())


def test_variant_ids_read_model_dash_variant_and_backends_follow_the_last_step():
    cfg = config.load(REPO / "gate.toml")
    v = cfg.models["tinybeauty"].variants["onnx_int8_static"]
    assert (v.id, v.backend, [s.name for s in v.steps]) == (
        "tinybeauty-onnx_int8_static", "onnx", ["prune", "onnx_export", "ort_int8_static"])
    assert cfg.models["tinybeauty"].variants["coreml_int8"].backend == "coreml"


def test_step_defaults_are_filled_in():
    cfg = config.load(REPO / "gate.toml")
    convert = cfg.models["digits"].variants["coreml"].steps[0]
    assert convert.params == {"precision": "fp16", "target": "iOS16"}


BAD = [
    ("unknown_budget_key", ("max_size_kb = 100, min_psnr_db = 35", "max_size_kbb = 100, min_psnr_db = 35"),
     "models.tinybeauty.variants.float.budgets.max_size_kbb", "unknown key"),
    ("unknown_model_key", ('task = "image"', 'task = "image"\ncolour = "blue"'),
     "models.tinybeauty.colour", "unknown key"),
    ("budget_of_wrong_type", ("max_size_kb = 100, min_psnr_db = 35", 'max_size_kb = "100", min_psnr_db = 35'),
     "models.tinybeauty.variants.float.budgets.max_size_kb", "must be float"),
    ("negative_budget", ("max_size_kb = 100, min_psnr_db = 35", "max_size_kb = -5, min_psnr_db = 35"),
     "models.tinybeauty.variants.float.budgets.max_size_kb", "must be in"),
    ("ssim_above_one", ("min_ssim = 0.97", "min_ssim = 1.5"),
     "models.tinybeauty.variants.float.budgets.min_ssim", "must be in"),
    ("budget_for_another_task", ("budgets = { max_size_kb = 50, min_accuracy_pct = 97 }",
                                 "budgets = { max_size_kb = 50, min_psnr_db = 30 }"),
     "models.digits.variants.float.budgets.min_psnr_db", "does not apply to a classifier"),
    ("relative_budget_on_float", ("max_size_kb = 100, min_psnr_db = 35", "max_psnr_drop_db = 1, min_psnr_db = 35"),
     "models.tinybeauty.variants.float.budgets", "relative to itself"),
    ("missing_weights_file", ('"weights/digits.safetensors"', '"weights/nope.safetensors"'),
     "models.digits.weights", "file not found"),
    ("unknown_step", ('{ step = "ort_int8_dynamic" }', '{ step = "ort_int4_dynamic" }'),
     "models.tinybeauty.variants.onnx_int8_dynamic.steps[1].step", "unknown step"),
    ("prune_rate_out_of_range", ('{ step = "prune", rate = 0.3 }, { step = "torch_int8" }',
                                 '{ step = "prune", rate = 1.5 }, { step = "torch_int8" }'),
     "models.tinybeauty.variants.torch_int8.steps[0].rate", "must be in (0.0, 1.0]"),
    ("unknown_step_parameter", ('{ step = "coreml_palettize", nbits = 4 }', '{ step = "coreml_palettize", bits = 4 }'),
     "models.tinybeauty.variants.coreml_palettize.steps[1].bits", "unknown key"),
    ("steps_in_an_impossible_order", ('[{ step = "onnx_export" }, { step = "ort_optimize" }]',
                                      '[{ step = "onnx_export" }, { step = "prune" }]'),
     "models.tinybeauty.variants.onnx.steps[1].step", "takes a torch model"),
    ("int8_after_fp16", ('[{ step = "onnx_export" }, { step = "ort_int8_dynamic" }]',
                         '[{ step = "onnx_export" }, { step = "ort_fp16" }, { step = "ort_int8_dynamic" }]'),
     "models.tinybeauty.variants.onnx_int8_dynamic.steps[2].step", "ort_int8_dynamic cannot follow ort_fp16"),
    ("int8_twice", ('[{ step = "onnx_export" }, { step = "ort_int8_dynamic" }]',
                    '[{ step = "onnx_export" }, { step = "ort_int8_dynamic" }, { step = "ort_optimize" }, '
                    '{ step = "ort_int8_dynamic" }]'),
     "models.tinybeauty.variants.onnx_int8_dynamic.steps[3].step", "cannot follow ort_int8_dynamic"),
    ("palettize_after_int8_a_silent_no_op", ('{ step = "coreml_palettize", nbits = 4 }',
                                             '{ step = "coreml_int8" }, { step = "coreml_palettize", nbits = 4 }'),
     "models.tinybeauty.variants.coreml_palettize.steps[2].step", "would silently do nothing"),
    ("name_too_long_for_a_file_name", ("[models.digits.variants.float]", f"[models.digits.variants.{'v' * 300}]"),
     f"models.digits.variants.{'v' * 300}", "at most 64"),
    ("input_batch_other_than_one", ("shape = [1, 1, 8, 8]", "shape = [4, 1, 8, 8]"),
     "models.digits.input.shape", "the first dimension is the batch"),
    ("factory_that_does_not_exist", ('"tinygate.zoo.digits:build"', '"tinygate.zoo.digits:biuld"'),
     "models.digits.factory", "has no callable 'biuld'"),
    ("factory_module_that_does_not_import", ('"tinygate.zoo.digits:build"', '"tinygate.zoo.nothere:build"'),
     "models.digits.factory", "cannot import module"),
    ("input_shape_with_zero", ("shape = [1, 1, 8, 8]", "shape = [1, 0, 8, 8]"),
     "models.digits.input.shape", "positive integers"),
    ("no_float_variant", ("[models.digits.variants.float]\nsteps = []",
                          "[models.digits.variants.float]\nsteps = [{ step = \"prune\" }]"),
     "models.digits.variants", "steps = []"),
    ("calibrating_step_without_calibration_data",
     ('steps = [{ step = "coreml" }]', 'steps = [{ step = "torch_int8" }]'),
     "models.digits.variants.coreml.steps[0].step", "calibration is not set"),
    ("not_valid_toml", ("[models.digits]", "[models.digits"), None, "not valid TOML"),
    ("web_runtime_for_a_core_ml_variant",
     ('steps = [{ step = "coreml" }]', 'steps = [{ step = "coreml" }]\nruntime = "web"'),
     "models.digits.variants.coreml.runtime", "runs ONNX models; this variant makes mlpackage"),
    ("unknown_runtime", ('budgets = { max_size_ratio = 0.5 }', 'runtime = "wasm"\nbudgets = { max_size_ratio = 0.5 }'),
     "models.tinybeauty.variants.onnx_int8_dynamic.runtime", 'must be "web"'),
    ("python_latency_budget_on_a_web_variant", ('budgets = { max_size_ratio = 0.5 }',
                                                 'runtime = "web"\nbudgets = { min_speedup = 0.5 }'),
     "models.tinybeauty.variants.onnx_int8_dynamic.budgets.min_speedup", "a web variant is timed in the page"),
    ("web_latency_budget_on_a_python_variant", ('budgets = { max_size_ratio = 0.5 }',
                                                 'budgets = { max_web_load_ms = 900 }'),
     "models.tinybeauty.variants.onnx_int8_dynamic.budgets.max_web_load_ms", 'runtime = "web"'),
    ("web_latency_budget_without_a_machine", ('budgets = { max_size_ratio = 0.5 }',
                                               'runtime = "web"\nbudgets = { max_web_p50_ms = 90 }'),
     "models.tinybeauty.variants.onnx_int8_dynamic.machine", "max_web_p50_ms"),
    ("download_budget_for_an_unknown_network", ('budgets = { max_size_ratio = 0.5 }',
                                                'budgets = { max_download_s = { slow_2g = 30 } }'),
     "models.tinybeauty.variants.onnx_int8_dynamic.budgets.max_download_s.slow_2g", "no network profile named"),
    ("download_budget_not_a_table", ('budgets = { max_size_ratio = 0.5 }', 'budgets = { max_download_s = 30 }'),
     "models.tinybeauty.variants.onnx_int8_dynamic.budgets.max_download_s", "must be dict"),
    ("network_with_zero_bandwidth",
     ("[models.digits]", "[networks.dialup]\nkbit_s = 0\nlatency_ms = 100\n\n[models.digits]"),
     "networks.dialup", "kbit_s must be in"),
    ("network_that_redefines_a_built_in",
     ("[models.digits]", "[networks.slow_3g]\nkbit_s = 1e6\nlatency_ms = 0\n\n[models.digits]"),
     "networks.slow_3g", "is a built-in profile"),
    ("empty_download_budget", ('budgets = { max_size_ratio = 0.5 }', 'budgets = { max_download_s = {} }'),
     "models.tinybeauty.variants.onnx_int8_dynamic.budgets.max_download_s", "is empty"),
]


@pytest.mark.parametrize(("edit", "key", "problem"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_config_mistake_stops_with_one_line_naming_file_key_and_problem(tmp_path, edit, key, problem):
    old, new = edit
    assert old in GOOD, f"test edit no longer matches gate.toml: {old!r}"
    path = tmp_path / "gate.toml"
    path.write_text(GOOD.replace(old, new, 1))
    (tmp_path / "weights").symlink_to(REPO / "weights")
    with pytest.raises(GateError) as err:
        config.load(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    if key:
        assert f": {key}: " in message
    assert re.search(re.escape(problem), message), message


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(GateError, match="gate config file not found"):
        config.load(tmp_path / "absent.toml")


TWO_INPUTS = """
[models.pair]
factory = "tinygate.zoo.digits:build"
weights = "{weights}"
task = "fidelity"
input = [{{ name = "a", shape = [1, 1, 8, 8] }}, {{ name = "b", shape = [1, 4] }}]
output = {{ names = ["logits", "features"] }}
eval = {{ npz = "data.npz" }}

[models.pair.variants.float]
steps = []
budgets = {{}}
"""


def test_a_model_with_several_inputs_reads_one_npz_array_per_input(tmp_path):
    from tinygate import pipeline

    (tmp_path / "gate.toml").write_text(TWO_INPUTS.format(weights=REPO / "weights/digits.safetensors"))
    np.savez(tmp_path / "data.npz", a=np.zeros((3, 1, 8, 8), np.float32), b=np.ones((3, 4), np.float32))
    model = config.load(tmp_path / "gate.toml").models["pair"]
    assert model.inputs == (("a", (1, 1, 8, 8)), ("b", (1, 4))) and model.output_names == ("logits", "features")
    data = pipeline.load_data(model.eval, "models.pair.eval")
    assert [x.shape for x in data.sample(2)] == [(1, 1, 8, 8), (1, 4)]

    np.savez(tmp_path / "data.npz", a=np.zeros((3, 1, 8, 8), np.float32))
    with pytest.raises(GateError, match=r"data.npz: models.pair.eval: the .npz has no 'b' array \(one per model input"):
        pipeline.load_data(config.load(tmp_path / "gate.toml").models["pair"].eval, "models.pair.eval")
    np.savez(tmp_path / "data.npz", a=np.zeros((3, 1, 8, 8), np.float32), b=np.ones((2, 4), np.float32))
    with pytest.raises(GateError, match="2 samples of input 'b' for 3 inputs"):
        pipeline.load_data(config.load(tmp_path / "gate.toml").models["pair"].eval, "models.pair.eval")


def test_download_budgets_name_built_in_and_user_network_profiles(tmp_path):
    """max_download_s takes a table of profile -> seconds; [networks.NAME] adds a profile; the built-in ones are the
    ONNX seed's slow 3G (400 kbit/s, 400 ms), fast 3G and 4G, and the time is a round trip plus bits / bandwidth."""
    text = GOOD.replace("budgets = { max_size_ratio = 0.5 }",
                        'runtime = "web"\nbudgets = { max_download_s = { slow_3g = 30, office = 2 } }')
    (tmp_path / "gate.toml").write_text("[networks.office]\nkbit_s = 8000\nlatency_ms = 20\n" + text)
    (tmp_path / "weights").symlink_to(REPO / "weights")
    cfg = config.load(tmp_path / "gate.toml")
    variant = cfg.models["tinybeauty"].variants["onnx_int8_dynamic"]
    assert variant.runtime == "web" and variant.backend == "web"
    assert variant.max_download_s == {"slow_3g": 30.0, "office": 2.0}
    assert cfg.networks["slow_3g"].seconds(50_000) == pytest.approx(0.4 + 1.0)
    assert cfg.networks["office"].seconds(1_000_000) == pytest.approx(0.02 + 1.0)



def test_npz_inputs_of_float64_are_read_as_float32_and_may_be_named_after_the_input(tmp_path):
    """numpy's default float64 is what most users save; a single-input model's array may carry the input's name."""
    from tinygate.config import DataSpec
    from tinygate.pipeline import load_data

    np.savez(tmp_path / "a.npz", digit=np.random.default_rng(0).random((5, 1, 8, 8)))  # float64, named as the input
    data = load_data(DataSpec(npz=tmp_path / "a.npz", sole_input="digit"), "models.digits.eval")
    assert data.inputs.dtype == np.float32 and data.inputs.shape == (5, 1, 8, 8)
    with pytest.raises(GateError, match="the .npz has no 'inputs' array"):
        load_data(DataSpec(npz=tmp_path / "a.npz", sole_input="image"), "models.digits.eval")


@pytest.mark.parametrize("arrays", [{"inputs": np.float32(3.0)}, {"inputs": np.zeros((4, 8), np.float32),
                                                                   "labels": np.int64(1)}], ids=["inputs", "labels"])
def test_a_zero_dimensional_array_is_refused_in_one_line(tmp_path, arrays):
    from tinygate.config import DataSpec
    from tinygate.pipeline import load_data

    np.savez(tmp_path / "a.npz", **arrays)
    with pytest.raises(GateError, match=r"a.npz: models.m.eval: \w+ is a single number \(a 0-d array\)"):
        load_data(DataSpec(npz=tmp_path / "a.npz"), "models.m.eval")


def test_an_onnx_input_of_fixed_size_must_match_the_declared_shape(tmp_path):
    """A graph exported with batch 4 (or another fixed size) cannot take the declared one sample per call: said at
    load, naming the input and both shapes, instead of ONNX Runtime's "invalid dimensions" per check."""
    import onnx
    from onnx import TensorProto, helper

    def write(dims):
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    np.savez(tmp_path / "e.npz", inputs=np.zeros((2, 1, 8, 8), np.float32))
    (tmp_path / "gate.toml").write_text('[models.m]\nonnx = "m.onnx"\ntask = "fidelity"\n'
                                        'input = { name = "x", shape = [1, 1, 8, 8] }\noutput = { name = "y" }\n'
                                        'eval = { npz = "e.npz" }\n[models.m.variants.float]\nsteps = []\n'
                                        'budgets = { max_size_kb = 10 }\n')
    write(["n", 1, 8, 8])  # a named batch dimension: any size
    config.load(tmp_path / "gate.toml")
    write([4, 1, 8, 8])
    with pytest.raises(GateError, match=r"models.m.input.shape: \[1, 1, 8, 8\] does not fit input 'x' of .*m.onnx, "
                                        r"shaped \[4, 1, 8, 8\]"):
        config.load(tmp_path / "gate.toml")
