"""The bad-input battery: every user mistake or hostile file ends the gate with a non-zero exit and one
line that names the file and the problem; never a pass, never an unhandled traceback."""

from __future__ import annotations

import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from bundled import REPO, model_table
from safetensors.torch import load_file, save_file

WEIGHTS = REPO / "weights/digits.safetensors"
pytestmark = pytest.mark.slow

VARIANTS = """
[models.digits.variants.float]
steps = []
budgets = { min_accuracy_pct = 97 }
"""


def _digits_npz(path: Path, **edits) -> Path:
    from tinygate.zoo.digits import eval_set

    data = eval_set()
    arrays = {"inputs": data.inputs, "labels": data.labels, **edits}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def _weights(tmp: Path, edit) -> Path:
    state = load_file(WEIGHTS)
    edit(state)
    save_file(state, tmp / "weights.safetensors")
    return tmp / "weights.safetensors"


class Callable:  # pickled into a .pt to prove torch.load(weights_only=True) refuses it
    def __reduce__(self):
        return (print, ("this ran while loading the weights",))


def case_corrupted_safetensors_header(tmp):
    path = tmp / "weights.safetensors"
    data = bytearray(WEIGHTS.read_bytes())
    data[8:20] = b"{not json!!!"
    path.write_bytes(bytes(data))
    return {"weights": path}, "cannot read safetensors weights"


def case_truncated_safetensors(tmp):
    path = tmp / "weights.safetensors"
    path.write_bytes(WEIGHTS.read_bytes()[: 2000])
    return {"weights": path}, "cannot read safetensors weights"


def case_safetensors_header_larger_than_file(tmp):
    path = tmp / "weights.safetensors"
    path.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    return {"weights": path}, "cannot read safetensors weights"


def case_pt_holding_a_pickled_callable(tmp):
    path = tmp / "weights.pt"
    with open(path, "wb") as fh:
        pickle.dump({"features.0.weight": Callable()}, fh)
    return {"weights": path}, "refused by torch.load(weights_only=True)"


def case_pt_that_is_not_a_state_dict(tmp):
    path = tmp / "weights.pt"
    torch.save([torch.zeros(3)], path)
    return {"weights": path}, "is not a state dict"


def case_weights_whose_shapes_do_not_fit_the_factory(tmp):
    return {"weights": _weights(tmp, lambda s: s.update({"head.weight": torch.zeros(10, 8)}))}, \
        "weights do not fit tinygate.zoo.digits:build"


def case_weights_missing_a_tensor(tmp):
    return {"weights": _weights(tmp, lambda s: s.pop("head.bias"))}, "weights do not fit"


def case_nan_weights(tmp):
    return {"weights": _weights(tmp, lambda s: s["features.0.weight"].view(-1).__setitem__(0, float("nan")))}, \
        "features.0.weight: holds NaN or Inf weights"


def case_inf_weights(tmp):
    return {"weights": _weights(tmp, lambda s: s["head.bias"].__setitem__(3, float("inf")))}, \
        "head.bias: holds NaN or Inf weights"


def case_model_that_outputs_nan_on_the_evaluation_set(tmp):
    # finite weights, finite inputs, but large enough that the logits overflow to inf and then NaN
    weights = _weights(tmp, lambda s: s["head.weight"].mul_(3e38))
    return {"weights": weights}, "outputs NaN or Inf on"


def case_input_shape_mismatch(tmp):
    npz = _digits_npz(tmp / "eval.npz", inputs=np.zeros((10, 1, 7, 7), np.float32), labels=np.zeros(10, np.int64))
    return {"eval": npz}, "inputs have shape (1, 7, 7) per sample"


def case_missing_data_file(tmp):
    return {"eval": tmp / "nowhere.npz"}, "models.digits.eval.npz: file not found"


def case_empty_data_file(tmp):
    npz = _digits_npz(tmp / "eval.npz", inputs=np.zeros((0, 1, 8, 8), np.float32), labels=np.zeros(0, np.int64))
    return {"eval": npz}, "the data set is empty"


def case_zero_byte_data_file(tmp):
    (tmp / "eval.npz").write_bytes(b"")
    return {"eval": tmp / "eval.npz"}, "cannot read the .npz"


def case_data_file_that_is_not_an_npz(tmp):
    (tmp / "eval.npz").write_text("inputs,labels\n1,2\n")
    return {"eval": tmp / "eval.npz"}, "cannot read the .npz"


def case_labels_whose_count_differs_from_the_inputs(tmp):
    npz = _digits_npz(tmp / "eval.npz", labels=np.zeros(7, np.int64))
    return {"eval": npz}, "7 labels for 500 inputs"


def case_data_without_inputs(tmp):
    np.savez(tmp / "eval.npz", images=np.zeros((3, 1, 8, 8), np.float32))
    return {"eval": tmp / "eval.npz"}, "the .npz has no 'inputs' array"


def case_data_with_nan_inputs(tmp):
    inputs = np.zeros((10, 1, 8, 8), np.float32)
    inputs[3, 0, 0, 0] = np.nan
    return {"eval": _digits_npz(tmp / "eval.npz", inputs=inputs, labels=np.zeros(10, np.int64))}, \
        "inputs must be finite"


def case_budget_typo(tmp):
    return {"text": lambda t: t.replace("min_accuracy_pct", "min_acuracy_pct")}, \
        "models.digits.variants.float.budgets.min_acuracy_pct: unknown key"


def case_unknown_key(tmp):
    return {"text": lambda t: t.replace('task = "classifier"', 'task = "classifier"\nowner = "me"')}, \
        "models.digits.owner: unknown key"


def case_budget_of_the_wrong_type(tmp):
    return {"text": lambda t: t.replace("min_accuracy_pct = 97", 'min_accuracy_pct = "97%"')}, \
        "min_accuracy_pct: must be float"


def case_negative_budget(tmp):
    return {"text": lambda t: t.replace("min_accuracy_pct = 97", "min_accuracy_pct = -1")}, \
        "min_accuracy_pct: must be in [0.0, 100.0]"


def case_unknown_step(tmp):
    variant = '\n[models.digits.variants.q]\nsteps = [{ step = "quantize_magic" }]\nbudgets = {}\n'
    return {"text": lambda t: t + variant}, "models.digits.variants.q.steps[0].step: unknown step 'quantize_magic'"


def case_prune_rate_out_of_range(tmp):
    return {"text": lambda t: t + '\n[models.digits.variants.p]\nsteps = [{ step = "prune", rate = 1.5 }]\n'
                                  'budgets = {}\n'}, \
        "models.digits.variants.p.steps[0].rate: must be in (0.0, 1.0], got 1.5"


def case_config_that_is_not_valid_toml(tmp):
    return {"text": lambda t: t.replace("[models.digits]", "[models.digits")}, "not valid TOML"


def case_two_models_with_one_name(tmp):
    return {"text": lambda t: t + model_table("digits")}, "not valid TOML"


def case_weights_with_an_unknown_format(tmp):
    (tmp / "weights.bin").write_bytes(WEIGHTS.read_bytes())
    return {"weights": tmp / "weights.bin"}, "weights must be a .safetensors, .pt or .pth file"


def case_unsafe_torch_load_environment(tmp):
    return {"env": {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}}, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD: is set"


def _onnx_model(path: Path, external: str | None = None) -> Path:
    """A one-layer digits classifier written with onnx.helper (8x8 input, 10 logits); with `external`, its
    weight is stored as external data at that location."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32), "w")
    if external is not None:
        weight.data_location = TensorProto.EXTERNAL
        weight.ClearField("raw_data")
        weight.ClearField("float_data")
        for key, value in (("location", external), ("offset", "0"), ("length", "2560")):
            weight.external_data.add(key=key, value=value)
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 64])
    nodes = [helper.make_node("Reshape", ["digit", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    graph = helper.make_graph(
        nodes,
        "digits", [helper.make_tensor_value_info("digit", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], [weight, shape])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _as_onnx(path: Path):
    """Replace the model table's factory and weights with `onnx = path`."""
    def edit(text: str) -> str:
        lines = [line for line in text.splitlines() if not line.startswith(("factory =", "weights ="))]
        lines.insert(1, f'onnx = "{path}"')
        return "\n".join(lines) + "\n"
    return edit


def case_truncated_onnx_file(tmp):
    path = _onnx_model(tmp / "model.onnx")
    path.write_bytes(path.read_bytes()[:300])
    return {"text": _as_onnx(path), "named": path}, "is not a readable ONNX model"


def case_onnx_external_data_pointing_outside_its_folder(tmp):
    (tmp / "secret.bin").write_bytes(bytes(2560))
    (tmp / "model").mkdir()
    path = _onnx_model(tmp / "model" / "model.onnx", external="../secret.bin")
    return {"text": _as_onnx(path), "named": path}, "points outside"


def case_onnx_whose_input_name_differs_from_the_config(tmp):
    path = _onnx_model(tmp / "model.onnx")
    return {"text": lambda t: _as_onnx(path)(t).replace('name = "digit"', 'name = "image"'), "named": path}, \
        "are not the graph's inputs in order"


def case_prune_step_on_an_onnx_model(tmp):
    path = _onnx_model(tmp / "model.onnx")
    variant = '\n[models.digits.variants.pruned]\nsteps = [{ step = "prune" }]\nbudgets = {}\n'
    return {"text": lambda t: _as_onnx(path)(t) + variant, "named": "gate.toml"}, \
        "prune takes a torch model, but the model is onnx"


def case_corrupt_image_in_the_evaluation_folder(tmp):
    from skimage.io import imsave

    (tmp / "digits" / "0").mkdir(parents=True)
    imsave(tmp / "digits" / "0" / "a.png", np.zeros((8, 8), np.uint8), check_contrast=False)
    (tmp / "digits" / "0" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    folder = f'eval = {{ images = "{tmp / "digits"}", scale = 16.0 }}'
    return {"text": lambda t: re.sub(r"^eval = .*$", folder, t, flags=re.M), "named": tmp / "digits" / "0" / "b.png"}, \
        "is not a readable image"


def case_float8_weights(tmp):
    return {"weights": _weights(tmp, lambda s: s.update({k: v.to(torch.float8_e4m3fn) for k, v in s.items()}))}, \
        "the gate reads float32, float16 or bfloat16 weights"


def _pt(tmp: Path, edit) -> Path:
    state = load_file(WEIGHTS)
    edit(state)
    torch.save(state, tmp / "weights.pt")
    return tmp / "weights.pt"


def case_sparse_weights(tmp):
    return {"weights": _pt(tmp, lambda s: s.update({k: v.to_sparse() for k, v in s.items() if v.ndim == 2}))}, \
        "tensor; the gate reads dense weights"


def case_meta_weights(tmp):
    return {"weights": _pt(tmp, lambda s: s.update({k: torch.empty(v.shape, device="meta") for k, v in s.items()}))}, \
        "is a meta tensor, which holds no data"


FACTORY = """
import torch
from tinygate.zoo.digits import build as real

def build():
    return {made}

class NoneOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = real()

    def forward(self, x):
        self.inner(x)
"""


def _factory(tmp: Path, made: str) -> dict:
    (tmp / "userfactory.py").write_text(FACTORY.format(made=made))
    return {"text": lambda t: t.replace('"tinygate.zoo.digits:build"', '"userfactory:build"')}


def case_factory_that_returns_none(tmp):
    return {**_factory(tmp, "None"), "named": "userfactory:build"}, "returned NoneType, not a torch.nn.Module"


def case_factory_that_raises(tmp):
    return {**_factory(tmp, "1 / 0"), "named": "userfactory:build"}, "raised ZeroDivisionError: division by zero"


def case_forward_that_returns_none(tmp):
    state = {f"inner.{k}": v for k, v in load_file(WEIGHTS).items()}
    save_file(state, tmp / "weights.safetensors")
    return {**_factory(tmp, "NoneOut()"), "weights": tmp / "weights.safetensors"}, \
        "the model's forward returned NoneType; it must return a tensor"


CASES = {name.removeprefix("case_"): fn for name, fn in dict(globals()).items() if name.startswith("case_")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_ends_the_gate_with_one_line_naming_the_file_and_the_problem(case, tmp_path, run_gate):
    setup, problem = CASES[case](tmp_path)
    eval_spec = f'{{ npz = "{setup["eval"]}" }}' if "eval" in setup else None
    text = model_table("digits", setup.get("weights"), eval_spec) + VARIANTS
    text = setup.get("text", lambda t: t)(text)
    config = tmp_path / "gate.toml"
    config.write_text(text)
    run = run_gate(config, env=setup.get("env"))
    assert run.returncode != 0, run.output
    assert "Traceback" not in run.output and "\nE   " not in run.output, run.output
    line = run.line(problem)
    named = [str(setup[k]) for k in ("weights", "eval", "named") if k in setup] or [str(config), "environment"]
    assert any(name in line for name in named), f"{line!r} names none of {named}"
    assert "passed" not in run.output.splitlines()[-1] or "failed" in run.output.splitlines()[-1] \
        or "error" in run.output.splitlines()[-1]


def test_the_battery_has_at_least_25_cases():
    assert len(CASES) >= 25
