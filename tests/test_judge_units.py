"""The judge's pieces without a gate run: the config review (tinygate.review) and the bundle's verification
(tinygate.bundle.open_bundle) against a bundle altered after it was built."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundled import model_table

from tinygate import bundle, review
from tinygate.artifacts import load_torch
from tinygate.cache import digest_path
from tinygate.config import load as load_config
from tinygate.errors import GateError
from tinygate.gate import Gate

TARGET = {
    "models": {"digits": {"factory": "tinygate.zoo.digits:build", "variants": {
        "float": {"steps": [], "budgets": {"max_size_kb": 45, "min_accuracy_pct": 98}},
        "int8": {"steps": [{"step": "ort_int8_dynamic"}], "budgets": {"max_size_ratio": 0.4,
                                                                       "min_accuracy_pct": 97.5}},
        "int8_web": {"steps": [{"step": "ort_int8_dynamic"}], "runtime": "web",
                     "budgets": {"min_accuracy_pct": 97.5, "max_download_s": {"slow_3g": 2.0}}},
    }}},
    "regression": {"psnr_drop_db": 0.2},
}


def _candidate(**edit) -> dict:
    import copy

    c = copy.deepcopy(TARGET)
    for path, value in edit.items():
        *keys, last = path.split("__")
        node = c
        for k in keys:
            node = node[k]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return c


def _changes(candidate: dict) -> dict[str, review.Change]:
    return {c.where: c for c in review.changes(TARGET, candidate)}


def test_an_unchanged_config_has_no_changes():
    assert review.changes(TARGET, _candidate()) == []


@pytest.mark.parametrize("edit, where, what, approval", [
    ({"models__digits__variants__float__budgets__min_accuracy_pct": 90}, "budgets.min_accuracy_pct", "loosened", True),
    ({"models__digits__variants__float__budgets__min_accuracy_pct": 99}, "budgets.min_accuracy_pct", "tightened",
     False),
    ({"models__digits__variants__int8__budgets__max_size_ratio": 0.9}, "budgets.max_size_ratio", "loosened", True),
    ({"models__digits__variants__int8__budgets__max_size_ratio": 0.3}, "budgets.max_size_ratio", "tightened", False),
    ({"models__digits__variants__float__budgets__max_size_kb": None}, "budgets.max_size_kb", "check removed", True),
    ({"models__digits__variants__int8": None}, "variants.int8", "variant removed", True),
    ({"models__digits__variants__int8__steps": [{"step": "ort_int8_static"}]}, "variants.int8.steps", "changed",
     False),
    ({"models__digits__variants__int8__steps": [{"step": "ort_optimize"}]}, "variants.int8.steps",
     "drops ort_int8_dynamic and its quantization checks", True),
    ({"models__digits__variants__int8__speedup_reference": "int8"}, "variants.int8.speedup_reference", "changed",
     True),
    ({"regression__psnr_drop_db": 5.0}, "regression.psnr_drop_db", "loosened", True),
    ({"regression__psnr_drop_db": None}, "regression.psnr_drop_db", "tightened", False),  # back to the default, 0.1
    ({"models__digits__variants__int8_web__budgets__max_download_s": {"slow_3g": 9.0}},
     "budgets.max_download_s.slow_3g", "loosened", True),
    ({"models__digits__variants__int8_web__budgets__max_download_s": {"slow_3g": 1.0}},
     "budgets.max_download_s.slow_3g", "tightened", False),
    ({"models__digits__variants__int8_web__budgets__max_download_s": {"slow_3g": 2.0, "4g": 0.3}},
     "budgets.max_download_s.4g", "check added", False),
    ({"models__digits__variants__int8_web__budgets__max_download_s": {}}, "budgets.max_download_s.slow_3g",
     "check removed", True),
    ({"models__digits__variants__int8_web__runtime": None}, "variants.int8_web.runtime", "changed", True),
    ({"networks": {"slow_3g_fast": {"kbit_s": 1e6, "latency_ms": 0}}}, "networks", "network profiles changed", True),
])
def test_each_change_is_listed_and_a_loosening_needs_approval(edit, where, what, approval):
    found = [c for w, c in _changes(_candidate(**edit)).items() if w.endswith(where)]
    assert len(found) == 1, review.changes(TARGET, _candidate(**edit))
    assert what in found[0].what and found[0].needs_approval is approval


def test_an_added_model_needs_approval_and_an_added_variant_needs_a_quality_budget():
    c = _candidate(models__other={"variants": {}})
    assert _changes(c)["models.other"].needs_approval
    c = _candidate(models__digits__variants__tiny={"steps": [{"step": "ort_fp16"}], "budgets": {"max_size_kb": 1}})
    assert _changes(c)["models.digits.variants.tiny"].needs_approval
    c["models"]["digits"]["variants"]["tiny"]["budgets"]["min_accuracy_pct"] = 0  # meaningless: looser than any
    assert "looser than the model's others" in _changes(c)["models.digits.variants.tiny"].what
    c["models"]["digits"]["variants"]["tiny"]["budgets"]["min_accuracy_pct"] = 97.5
    assert not _changes(c)["models.digits.variants.tiny"].needs_approval


@pytest.mark.parametrize("body, key", [
    ({"models": [1]}, "models"),
    ({"models": {"digits": "x"}}, "models.digits"),
    ({"models": {"digits": {"variants": [1]}}}, "models.digits.variants"),
    ({"models": {"digits": {"variants": {"float": {"budgets": [1]}}}}}, "models.digits.variants.float.budgets"),
    ({"models": {"digits": {"variants": {"float": {"steps": [{"step": ["a"]}]}}}}},
     "models.digits.variants.float.steps"),
    ({"regression": 5}, "regression"),
    ({"models": {"digits": {"variants": {"float": {"budgets": {"max_size_kb": True}}}}}},
     "models.digits.variants.float.budgets.max_size_kb"),
])
def test_a_pull_request_config_of_the_wrong_shape_is_one_line(body, key, tmp_path):
    with pytest.raises(GateError, match=f"{key}: the pull request's gate config") as exc:
        review.check_shape(body, tmp_path / "candidate.toml")
    assert "\n" not in str(exc.value)


def test_the_judged_config_keeps_the_targets_budgets_unless_approved():
    known = {"ort_int8_dynamic", "ort_int8_static", "ort_fp16"}
    c = _candidate(models__digits__variants__float__budgets__min_accuracy_pct=10,
                   models__digits__variants__int8__steps=[{"step": "ort_int8_static"}], regression__psnr_drop_db=9)
    merged, unknown = review.judged_config(TARGET, c, approved=False, known_steps=known)
    float_ = merged["models"]["digits"]["variants"]["float"]
    assert float_["budgets"]["min_accuracy_pct"] == 98 and merged["regression"]["psnr_drop_db"] == 0.2
    assert merged["models"]["digits"]["variants"]["int8"]["steps"] == [{"step": "ort_int8_static"}]  # as built
    assert unknown == []
    merged, _ = review.judged_config(TARGET, c, approved=True, known_steps=known)
    assert merged["models"]["digits"]["variants"]["float"]["budgets"]["min_accuracy_pct"] == 10
    c = _candidate(models__digits__variants__int8__steps=[{"step": "evil_step"}])
    merged, unknown = review.judged_config(TARGET, c, approved=False, known_steps=known)
    assert merged["models"]["digits"]["variants"]["int8"]["steps"] == [{"step": "ort_int8_dynamic"}]
    assert [u.where for u in unknown] == ["models.digits.variants.int8.steps"] and "evil_step" in unknown[0].what


# -- the bundle ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A real bundle of the digits model (float PyTorch, dynamic int8 ONNX, PyTorch int8), made as a pull request's
    build makes it: `tinygate build` in a process of its own."""
    root = tmp_path_factory.mktemp("project")
    (root / "gate.toml").write_text(model_table("digits", calibration=True) + """
[models.digits.variants.float]
steps = []
budgets = { min_accuracy_pct = 90 }
[models.digits.variants.int8]
steps = [{ step = "onnx_export" }, { step = "ort_int8_dynamic" }]
budgets = { min_accuracy_pct = 90 }
[models.digits.variants.torch_int8]
steps = [{ step = "torch_int8" }]
budgets = { min_accuracy_pct = 90 }
""")
    done = subprocess.run([sys.executable, "-m", "tinygate", "build", "--out", str(root / "bundle")], cwd=root,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "bundle"


@pytest.fixture
def copy(built, tmp_path) -> Path:
    shutil.copytree(built, tmp_path / "b")
    return tmp_path / "b"


def test_a_built_bundle_opens_with_every_chain_from_one_float_model(built):
    b = bundle.open_bundle(built)
    chain = b.chain("digits-int8", "digits", ["torch", "onnx", "onnx"], "tinygate.zoo.digits:build")
    assert [a.kind for a in chain] == ["torch", "onnx", "onnx"] and chain[0].factory == "tinygate.zoo.digits:build"
    assert chain[0] == b.chain("digits-float", "digits", ["torch"], "tinygate.zoo.digits:build")[0]
    assert set(b.float_outputs("digits")) == {"logits"}
    assert b.candidate_config()["models"]["digits"]["variants"]["float"]["budgets"] == {"min_accuracy_pct": 90}
    with pytest.raises(GateError, match="steps make"):
        b.chain("digits-int8", "digits", ["torch", "onnx"])
    with pytest.raises(GateError, match="did not make this variant"):
        b.chain("digits-other", "digits", ["torch"])


def test_a_variant_made_from_another_float_model_is_refused(copy):
    m = _manifest(copy)
    m["variants"]["digits-int8"]["chain"][0] = m["variants"]["digits-int8"]["chain"][1]
    _write(copy, m)
    with pytest.raises(GateError, match="not from model digits's float model"):
        bundle.open_bundle(copy).chain("digits-int8", "digits", ["onnx", "onnx", "onnx"])


def test_an_artifact_is_identified_by_its_manifest_entry_too(copy, built):
    m = _manifest(copy)
    name = m["variants"]["digits-int8"]["chain"][-1]
    before = bundle.open_bundle(built).artifact(name).digest
    m["artifacts"][name]["engine"] = "qnnpack"
    _write(copy, m)
    assert bundle.open_bundle(copy).artifact(name).digest != before


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _write(root: Path, manifest: dict) -> None:
    (root / "manifest.json").write_text(json.dumps(manifest))


def _onnx(root: Path) -> Path:
    return sorted(root.glob("artifacts/*-onnx/*.onnx"))[-1]


def _swap_for_symlink(path: Path) -> None:
    path.unlink()
    os.symlink("/etc/passwd", path)


@pytest.mark.parametrize("tamper, message", [
    (lambda r: _onnx(r).write_bytes(_onnx(r).read_bytes() + b"\0"), "does not match its sha256"),
    (lambda r: (r / "artifacts" / "extra.onnx").write_bytes(b"x"), "does not list artifacts/extra.onnx"),
    (lambda r: (r / "conftest.py").write_text("import os"), "does not list conftest.py"),
    (lambda r: _swap_for_symlink(_onnx(r)), "is a symlink"),
    (lambda r: os.symlink("/etc", r / "artifacts" / "etc"), "is a symlink"),
    (lambda r: _write(r, {**_manifest(r), "files": {**_manifest(r)["files"], "../../x": "0" * 64}}),
     "relative path inside the bundle"),
    (lambda r: ((r / "conftest.py").write_text("x"),
                _write(r, {**_manifest(r), "files": {**_manifest(r)["files"], "conftest.py": digest_path(
                    r / "conftest.py")}})), "is neither an artifact's file"),
    (lambda r: _write(r, {**_manifest(r), "artifacts": {
        k: {**v, "engine": "evil"} for k, v in _manifest(r)["artifacts"].items()}}), "engine"),
    (lambda r: (r / "manifest.json").write_text('{"format": NaN}'), "not valid JSON"),
    (lambda r: (r / "manifest.json").unlink(), "missing"),
])
def test_an_altered_bundle_is_refused_in_one_line_naming_the_file(copy, tamper, message):
    tamper(copy)
    with pytest.raises(GateError, match=message) as exc:
        bundle.open_bundle(copy)
    assert "\n" not in str(exc.value)


def test_build_refuses_a_folder_that_is_not_empty(tmp_path, built):
    (tmp_path / "x").write_text("")
    with pytest.raises(GateError, match="not an empty folder"):
        bundle.build(None, tmp_path)


def _rehash(root: Path) -> None:
    """What a hostile build does after altering its bundle: list the new hashes."""
    m = _manifest(root)
    m["files"] = {rel: digest_path(root / rel) for rel in m["files"]}
    _write(root, m)


def test_weights_that_the_targets_model_cannot_hold_fail_in_one_line(copy):
    from safetensors.torch import load_file, save_file

    weights = next(copy.glob("artifacts/*-torch/*.safetensors"))
    state = load_file(str(weights))
    state["hidden.table"] = state["head.bias"].repeat(1000)  # a second model beside the weights
    save_file(state, str(weights))
    _rehash(copy)
    float_ = bundle.open_bundle(copy).chain("digits-float", "digits", ["torch"], "tinygate.zoo.digits:build")[0]
    with pytest.raises(GateError, match="weights do not fit tinygate.zoo.digits:build") as exc:
        load_torch(float_)
    assert "\n" not in str(exc.value)


def test_the_bundles_torchscript_is_never_loaded_the_judge_rebuilds_it(copy, tmp_path):
    """TorchScript is code (it can read and write files): the judge makes the PyTorch int8 variant again from the
    bundle's weights with its own step, so a hostile TorchScript file in the bundle is never opened."""
    script = next(copy.glob("artifacts/*-torchscript/*.pt"))
    script.write_bytes(b"not TorchScript at all")
    _rehash(copy)
    target = tmp_path / "gate.toml"
    target.write_text((copy / "candidate.toml").read_text())
    gate = Gate(load_config(target), tmp_path / "cache", bundle=bundle.open_bundle(copy))
    chain = gate.variant("digits-torch_int8").chain()
    assert chain[-1].kind == "torchscript" and copy not in chain[-1].path.parents
    assert chain[0].path.parent.parent.parent == copy  # the weights are the bundle's


def test_float_outputs_the_judge_cannot_reproduce_fail_the_export_check(copy, tmp_path):
    """The pull request's code computed other float outputs than the target's factory does on the bundle's
    weights (its model code changed): test_bundle_float_matches_build fails, naming the output."""
    outputs = next(copy.glob("float_outputs/*.npz"))
    with np.load(outputs) as z:
        logits = z["logits"] * 1.5
    np.savez(outputs, logits=logits)
    _rehash(copy)
    target = tmp_path / "target"
    (target / "model_tests").mkdir(parents=True)
    (target / "model_tests" / "test_gate.py").write_text("from tinygate.pytest_checks import *  # noqa: F403\n")
    (target / "gate.toml").write_text((copy / "candidate.toml").read_text())
    done = subprocess.run([sys.executable, "-m", "tinygate", "judge", str(copy), "--config", str(target / "gate.toml"),
                           "-m", "judge", "--gate-reports-dir", str(tmp_path / "reports")], cwd=target,
                          capture_output=True, text=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "does not compute what the pull request's build computed" in done.stdout
    assert "output 'logits':" in done.stdout


def test_the_bundled_config_with_web_variants_and_download_tables_has_the_shape_of_a_config():
    from tinygate.config import read_toml

    path = Path(__file__).resolve().parents[1] / "gate.toml"
    review.check_shape(read_toml(path), path)
    with pytest.raises(GateError, match="must be a table of seconds per network profile"):
        review.check_shape({"models": {"m": {"variants": {"v": {"budgets": {"max_download_s": {"slow_3g": "x"}}}}}}}
                           | {"models": {"m": {"variants": {"v": {"budgets": {"max_download_s": {"a": True}}}}}}},
                           path)
