"""Hostile artifacts are refused before any library parses them (tinygate.safety)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinygate.errors import GateError
from tinygate.safety import check_mlpackage, check_onnx, check_size


def _onnx_with_external_data(folder: Path, location: str) -> Path:
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    weight.external_data.add(key="location", value=location)
    weight.external_data.add(key="offset", value="0")
    weight.external_data.add(key="length", value="64")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    path = folder / "model.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_onnx_external_data_inside_the_folder_is_accepted(tmp_path):
    (tmp_path / "w.bin").write_bytes(np.ones(16, np.float32).tobytes())
    check_onnx(_onnx_with_external_data(tmp_path, "w.bin"))


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../x.bin"],
                         ids=["parent", "absolute", "escaping_subpath"])
def test_onnx_external_data_pointing_outside_is_refused(tmp_path, location):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    with pytest.raises(GateError, match="points outside"):
        check_onnx(_onnx_with_external_data(model_dir, location))


def test_onnx_external_data_through_a_symlink_is_refused(tmp_path):
    (tmp_path / "real.bin").write_bytes(np.ones(16, np.float32).tobytes())
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "w.bin").symlink_to(tmp_path / "real.bin")
    with pytest.raises(GateError, match="symlink"):
        check_onnx(_onnx_with_external_data(model_dir, "w.bin"))


@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage" * 10], ids=["empty", "garbage"])
def test_truncated_or_corrupted_onnx_is_refused_with_its_name(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(GateError) as err:
        check_onnx(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _package(tmp_path: Path) -> Path:
    pkg = tmp_path / "m.mlpackage"
    (pkg / "Data" / "com.apple.CoreML").mkdir(parents=True)
    (pkg / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"\x00")
    (pkg / "Manifest.json").write_text(json.dumps({"itemInfoEntries": {
        "A": {"path": "com.apple.CoreML/model.mlmodel", "author": "x"}}}))
    return pkg


def test_a_clean_package_is_accepted(tmp_path):
    check_mlpackage(_package(tmp_path))


def test_a_manifest_path_escaping_the_package_is_refused(tmp_path):
    pkg = _package(tmp_path)
    (pkg / "Manifest.json").write_text(json.dumps({"itemInfoEntries": {"A": {"path": "../../outside.bin"}}}))
    with pytest.raises(GateError, match=r"itemInfoEntries\.A\.path: path '../../outside.bin' points outside"):
        check_mlpackage(pkg)


def test_a_symlink_inside_a_package_is_refused(tmp_path):
    pkg = _package(tmp_path)
    (tmp_path / "secret").write_text("x")
    (pkg / "Data" / "com.apple.CoreML" / "weights").symlink_to(tmp_path / "secret")
    with pytest.raises(GateError, match="symlinks are refused"):
        check_mlpackage(pkg)


def test_a_file_over_the_cap_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.onnx"
    with open(path, "wb") as fh:
        fh.truncate(3_000_000)  # sparse: 3 MB on paper, nothing read
    with pytest.raises(GateError, match="over the 2 MB cap"):
        check_size(path, max_mb=2)
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_corrupted_cache_entry_is_detected_by_its_hash_and_rebuilt(tmp_path):
    from tinygate import config, pipeline
    from tinygate.cache import Cache

    repo = Path(__file__).resolve().parents[1]
    model = config.load(repo / "gate.toml").models["digits"]
    ctx = pipeline.Context(model, Cache(tmp_path))
    step = model.variants["onnx_int8_dynamic"].steps[0]
    first = pipeline.apply_step(pipeline.float_artifact(model), step, ctx)
    first.path.write_bytes(first.path.read_bytes()[:100])  # bit rot, or a half-written copy
    again = pipeline.apply_step(pipeline.float_artifact(model), step, ctx)
    assert again.path == first.path and again.digest == first.digest
    assert len(ctx.cache.built) == 2  # built, then rebuilt once it no longer matched its hash


BUILD_ONCE = """
import sys, time
from pathlib import Path
from tinygate.cache import Cache

def build(out):
    with open(sys.argv[2], "a") as log:
        log.write("built\\n")
    time.sleep(1.0)  # long enough that the other worker arrives while this one builds
    (out / "artifact.bin").write_bytes(b"x" * 1000)

print(Cache(Path(sys.argv[1])).get_or_build("same-key", build))
"""


def test_concurrent_workers_build_an_entry_once(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(BUILD_ONCE)
    log = tmp_path / "builds.log"
    workers = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache"), str(log)],
                                stdout=subprocess.PIPE, text=True) for _ in range(3)]
    entries = {w.communicate(timeout=120)[0].strip() for w in workers}
    assert all(w.returncode == 0 for w in workers)
    assert log.read_text().count("built") == 1
    assert len(entries) == 1 and (Path(entries.pop()) / "artifact.bin").stat().st_size == 1000


def test_sparse_initializer_external_data_counts_and_stays_inside(tmp_path):
    """A sparse initializer may keep its values in an external file: that file is part of the model's size, and
    it must lie inside the model's folder like any other external data."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import set_external_data

    from tinygate.errors import GateError
    from tinygate.safety import check_onnx, onnx_files

    arr = np.ones(5000, np.float32)
    (tmp_path / "w.bin").write_bytes(arr.tobytes())

    def model(location: str, name: str):
        values = numpy_helper.from_array(arr, "w")
        set_external_data(values, location, 0, arr.nbytes)
        values.data_location = TensorProto.EXTERNAL
        values.ClearField("raw_data")
        sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.arange(5000, dtype=np.int64)), [5000])
        graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5000])],
                                  sparse_initializer=[sparse])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / name))
        return tmp_path / name

    assert onnx_files(model("w.bin", "ok.onnx")) == [tmp_path / "ok.onnx", tmp_path / "w.bin"]
    with pytest.raises(GateError, match="sparse initializer w external data: path '../x.bin' points outside"):
        check_onnx(model("../x.bin", "out.onnx"))


@pytest.mark.parametrize("damage", ["seal_with_non_ascii_bytes", "entry_replaced_by_a_file"])
def test_a_cache_entry_damaged_in_any_way_is_rebuilt_not_a_traceback(tmp_path, damage):
    from tinygate.cache import Cache

    def build(out):
        (out / "artifact.bin").write_bytes(b"x" * 100)

    cache = Cache(tmp_path)
    entry = cache.get_or_build("k", build)
    if damage == "seal_with_non_ascii_bytes":
        (entry / ".complete").write_bytes("é\xff garbage".encode())
    else:
        import shutil

        shutil.rmtree(entry)
        entry.write_text("not a folder")
    again = Cache(tmp_path).get_or_build("k", build)
    assert again.is_dir() and (again / "artifact.bin").read_bytes() == b"x" * 100


def test_a_cache_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    import os

    from tinygate.cache import Cache

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a user without write permission (not root)
    with pytest.raises(GateError, match="the cache folder is not writable and holds no trusted entry"):
        Cache(tmp_path).get_or_build("k", lambda out: None)
    (tmp_path / "file").write_text("")
    with pytest.raises(GateError, match="cannot make the cache folder"):
        Cache(tmp_path / "file" / "cache")


def test_an_edited_baseline_score_file_is_one_line_naming_it(tmp_path):
    from tinygate.baseline import Baseline

    (tmp_path / "scores").mkdir()
    np.save(tmp_path / "scores" / "m-v.npz", np.array([object()], dtype=object), allow_pickle=True)
    (tmp_path / "scores" / "m-v.npz.npy").rename(tmp_path / "scores" / "m-v.npz")
    with pytest.raises(GateError, match=r"m-v.npz: is not a readable baseline score file .ValueError"):
        Baseline(tmp_path, {"variants": {}}).samples("m-v")
