"""The [models.NAME] table of a bundled model, for the configs the self-tests write (variants appended)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MODELS = {
    "tinybeauty": ('task = "image"', 'input = { name = "image", shape = [1, 3, 256, 256] }',
                   'output = { name = "retouched" }'),
    "digits": ('task = "classifier"', 'input = { name = "digit", shape = [1, 1, 8, 8] }',
               'output = { name = "logits" }'),
}


def model_table(name: str, weights: Path | str | None = None, eval_spec: str | None = None,
                calibration: bool = False) -> str:
    """TOML for a bundled model: its factory, weights (the shipped file unless given), task, input, output,
    evaluation data (its data source unless `eval_spec` is given) and, if asked, its calibration source."""
    eval_spec = eval_spec or f'{{ source = "tinygate.zoo.{name}:eval_set" }}'
    lines = [f"[models.{name}]", f'factory = "tinygate.zoo.{name}:build"',
             f'weights = "{weights or REPO / "weights" / f"{name}.safetensors"}"', *MODELS[name], f"eval = {eval_spec}"]
    if calibration:
        lines.append(f'calibration = {{ source = "tinygate.zoo.{name}:calibration_set" }}')
    return "\n".join(lines) + "\n"
