"""`tinygate init` warns where a variant made to shrink the file is no smaller than the float model: on a tiny
model an int8 or fp16 file's format overhead outweighs the weights it saves, and a user gating size would ship
the larger file unawares."""

from __future__ import annotations

import re

from tests.conftest import init_project as _init

NO_SMALLER = re.compile(r"it is no smaller on disk than the float model's own file \(([\d.]+) KB against ([\d.]+) KB\)")


def _warned(text: str) -> dict[str, tuple[float, float]]:
    """Variant name -> (its KB, the float model's KB), for each variant whose WARNING says it is no smaller."""
    out = {}
    for block in re.split(r"^(?=\[models\.mlp\.variants\.)", text, flags=re.M)[1:]:
        name = re.match(r"\[models\.mlp\.variants\.(\w+)\]", block).group(1)
        if found := NO_SMALLER.search(block):
            out[name] = (float(found.group(1)), float(found.group(2)))
    return out


def test_a_compressed_variant_no_smaller_than_the_float_model_is_warned_of(mlp_project):
    text = _init(mlp_project(8, 16, 4, samples=16))  # 0.9 KB of weights: an int8 ONNX file is larger
    warned = _warned(text)
    assert "onnx_int8_dynamic" in warned, text
    assert warned["onnx_int8_dynamic"][1] == 1.1  # the float model's safetensors file: 0.9 KB of weights
    assert "onnx" not in warned  # a conversion, not a step made to shrink the file


def test_a_model_large_enough_to_shrink_gets_no_such_warning(mlp_project):
    text = _init(mlp_project(256, 256, 16, samples=16))  # 280 KB of weights: int8 is about a quarter
    assert not _warned(text), text
    assert re.search(r"\[models\.mlp\.variants\.onnx_int8_dynamic\]", text), text
