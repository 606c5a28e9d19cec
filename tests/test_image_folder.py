"""Image folders as evaluation and calibration data: the declared preprocessing, checked against arithmetic done
by hand on images already at the input size, and the mistakes a folder can hold, each refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data
from skimage.io import imsave

from tinygate import config, pipeline
from tinygate.data import ImagePrep, image_folder
from tinygate.errors import GateError

ASTRONAUT = data.astronaut()[:16, :24]  # RGB uint8, already the input size: no resampling in the oracle
CAMERA = data.camera()[:16, :24]  # gray uint8


def _folder(root: Path, files: dict[str, np.ndarray]) -> Path:
    for name, img in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        imsave(root / name, img, check_contrast=False)
    return root


def test_preprocessing_matches_the_arithmetic_nchw(tmp_path):
    folder = _folder(tmp_path / "imgs", {"a.png": ASTRONAUT, "b.png": CAMERA})
    prep = ImagePrep("NCHW", (16, 24), 3, 255.0, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    got = image_folder(folder, prep, "eval")
    mean, std = np.array(prep.mean, np.float32), np.array(prep.std, np.float32)
    want_a = ((ASTRONAUT / np.float32(255) - mean) / std).transpose(2, 0, 1)
    want_b = ((np.repeat(CAMERA[..., None], 3, -1) / np.float32(255) - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(got.inputs, np.stack([want_a, want_b]), rtol=1e-5, atol=1e-5)
    assert got.labels is None


def test_nhwc_layout_alpha_dropped_and_labels_from_subfolders(tmp_path):
    rgba = np.dstack([ASTRONAUT, np.full(ASTRONAUT.shape[:2], 7, np.uint8)])
    folder = _folder(tmp_path / "imgs", {"zebra/x.png": ASTRONAUT, "ant/y.png": rgba, "ant/z.png": ASTRONAUT})
    got = image_folder(folder, ImagePrep("NHWC", (16, 24), 3, 1.0), "eval")
    assert got.inputs.shape == (3, 16, 24, 3)
    np.testing.assert_allclose(got.inputs[0], ASTRONAUT, atol=1e-3)  # ant/y.png: alpha dropped
    assert got.labels.tolist() == [0, 0, 1]  # ant = 0, zebra = 1


def test_images_are_resized_to_the_input_shape(tmp_path):
    folder = _folder(tmp_path / "imgs", {"big.png": data.coffee()})
    got = image_folder(folder, ImagePrep("NCHW", (32, 48), 3), "eval")
    assert got.inputs.shape == (1, 3, 32, 48) and 0.0 <= got.inputs.min() and got.inputs.max() <= 1.0


def _config(tmp_path: Path, eval_table: str, shape="[1, 3, 16, 24]") -> Path:
    path = tmp_path / "gate.toml"
    path.write_text(f"""
[models.m]
factory = "tinygate.zoo.tinybeauty:build"
weights = "{Path(__file__).resolve().parents[1] / 'weights/tinybeauty.safetensors'}"
task = "fidelity"
input = {{ name = "image", shape = {shape} }}
output = {{ name = "y" }}
eval = {eval_table}
[models.m.variants.float]
steps = []
budgets = {{}}
""")
    return path


def test_the_config_declares_the_folder_and_its_preprocessing(tmp_path):
    _folder(tmp_path / "imgs", {"a.png": ASTRONAUT})
    cfg = config.load(_config(tmp_path, '{ images = "imgs", mean = [0.5, 0.5, 0.5], std = 0.5 }'))
    spec = cfg.models["m"].eval
    assert spec.prep == ImagePrep("NCHW", (16, 24), 3, 255.0, (0.5,) * 3, (0.5,) * 3)
    got = pipeline.load_data(spec, "models.m.eval")
    np.testing.assert_allclose(got.inputs[0], ((ASTRONAUT / 255 - 0.5) / 0.5).transpose(2, 0, 1), atol=1e-5)


@pytest.mark.parametrize("table, problem", [
    ('{ images = "missing" }', "models.m.eval.images: folder not found"),
    ('{ images = "imgs", mean = [0.5, 0.5] }', "models.m.eval.mean: must be a number or a list of 3"),
    ('{ images = "imgs", std = 0 }', "models.m.eval.std: must be positive"),
    ('{ images = "imgs", layout = "CHW" }', "models.m.eval.layout: must be NCHW or NHWC"),
    ('{ images = "imgs", scale = -1 }', "models.m.eval.scale: must be positive"),
    ('{ npz = "data.npz", mean = 0.5 }', "models.m.eval.mean: preprocessing applies to an 'images' folder only"),
])
def test_a_bad_folder_declaration_stops_the_config_in_one_line(tmp_path, table, problem):
    _folder(tmp_path / "imgs", {"a.png": ASTRONAUT})
    np.savez(tmp_path / "data.npz", inputs=np.zeros((1, 3, 16, 24), np.float32))
    with pytest.raises(GateError, match=problem.replace("(", r"\(").replace("'", ".")):
        config.load(_config(tmp_path, table))


@pytest.mark.parametrize("setup, problem", [
    (lambda root: (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated"),
     "bad.png: eval: is not a readable image"),
    (lambda root: None, "imgs: eval: holds no images"),
    (lambda root: (_folder(root, {"a.png": CAMERA, "cls/b.png": CAMERA})), "mixes images at the top with class"),
    (lambda root: (root / "link.png").symlink_to(Path(__file__)), "link.png: eval: symlinks are refused"),
    (lambda root: __import__("PIL.Image").Image.fromarray(CAMERA).save(
        root / "pages.tif", save_all=True, append_images=[__import__("PIL.Image").Image.fromarray(CAMERA)]),
     "pages.tif: holds 2 frames .a multipage file.; give one image per file"),
])
def test_a_bad_image_folder_fails_in_one_line_naming_the_file(tmp_path, setup, problem):
    root = tmp_path / "imgs"
    root.mkdir()
    setup(root)
    with pytest.raises(GateError, match=problem):
        image_folder(root, ImagePrep("NCHW", (16, 24), 3), "eval")


def test_a_gray_and_alpha_image_is_read_as_gray_its_alpha_dropped(tmp_path):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.stack([CAMERA, np.full_like(CAMERA, 7)], axis=-1), "LA").save(tmp_path / "imgs/la.png")
    got = image_folder(tmp_path / "imgs", ImagePrep("NCHW", (16, 24), 1, 1.0), "eval")
    np.testing.assert_array_equal(got.inputs[0, 0], CAMERA.astype(np.float32))
