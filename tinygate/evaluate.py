"""Run an artifact over the evaluation set and keep its per-sample scores, cached by content.

The cache key is the artifact's hash, the evaluation data's hash and the tool versions, so changed
weights, data or tools always re-evaluate, and an unchanged run reads its scores back.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinygate import fidelity as fidelity_
from tinygate import metrics
from tinygate.artifacts import Artifact, backend_name, runner_all
from tinygate.cache import Cache, key_of, tool_versions
from tinygate.config import Model
from tinygate.data import Dataset
from tinygate.errors import GateError


@dataclass(frozen=True)
class Scores:
    """Per-sample scores of one artifact: psnr/ssim for image models, predictions/correct for classifiers."""

    values: dict[str, np.ndarray]
    backend: str

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]


def eval_threads() -> int:
    given = os.environ.get("TINYGATE_EVAL_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, usable // max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)))


@contextlib.contextmanager
def all_cores(threads: int):
    """Evaluation is not timed, so it runs on every core this process may use, shared among pytest-xdist workers
    (at least --gate-threads; $TINYGATE_EVAL_THREADS overrides); timing keeps --gate-threads. Yields the thread
    count; torch's global setting (the MIL interpreter's convolutions use it) is put back."""
    n = max(threads, eval_threads())
    torch = sys.modules.get("torch")  # not imported: a torch runner imports it and sets n itself
    before = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch = sys.modules.get("torch")  # imported in the block: left at the gate's own thread count
        if torch:
            torch.set_num_threads(before if before is not None else threads)


PROGRESS_EVERY_S = 10.0  # a longer pass over the evaluation set says how far it is, this often


def per_sample(art: Artifact, data: Dataset, threads: int,
               progress: Callable[[str], None] | None = None) -> list[list[np.ndarray]]:
    """Every output of the artifact on each sample, sample-major (the browser takes them in chunks of 64, a
    request each way per chunk). A pass that runs past PROGRESS_EVERY_S tells `progress` how far it is."""
    samples = [data.sample(i) for i in range(len(data))]
    with all_cores(threads) as n:
        run = runner_all(art, n, evaluating=True)
        if hasattr(run, "many"):
            step, call = 64, run.many
        else:
            step, call = 1, lambda xs: [run(*x) for x in xs]
        out: list[list[np.ndarray]] = []
        start = said = time.monotonic()
        for at in range(0, len(samples), step):
            out += call(samples[at:at + step])
            now = time.monotonic()
            if progress is not None and now - said >= PROGRESS_EVERY_S and len(out) < len(samples):
                left = (now - start) / len(out) * (len(samples) - len(out))
                progress(f"{len(out)} of {len(samples)} inputs in {now - start:.0f} s, about {left:.0f} s to go")
                said = now
        return out


def outputs_of(art: Artifact, data: Dataset, threads: int,
               progress: Callable[[str], None] | None = None) -> np.ndarray:
    """The artifact's first output on every sample, concatenated along the batch."""
    return np.concatenate([outs[0] for outs in per_sample(art, data, threads, progress)])


def outputs_all(art: Artifact, data: Dataset, threads: int) -> list[np.ndarray]:
    """Every output of the artifact on every sample, each concatenated along the batch, in output order."""
    return [np.concatenate(outs) for outs in zip(*per_sample(art, data, threads), strict=True)]


def check_inputs(model: Model, data: Dataset) -> None:
    """The evaluation inputs must have the configured per-sample shape."""
    for (name, shape), arr in zip(model.inputs, data.arrays(), strict=True):
        if tuple(arr.shape[1:]) != tuple(shape[1:]):
            raise GateError(model.eval.origin, f"models.{model.name}.eval",
                            f"inputs have shape {tuple(arr.shape[1:])} per sample, but "
                            f"models.{model.name}.input.shape is {list(shape)}"
                            + (f" (input {name!r})" if len(model.inputs) > 1 else ""))


def _score_key(art: Artifact, model: Model, data: Dataset) -> str:
    return key_of(evaluate=art.digest, data=data.digest(), tools=tool_versions("tinygate.evaluate"), task=model.task,
                  backend=backend_name(art.kind, art.meta))


def _fidelity_key(art: Artifact, reference: Artifact, model: Model, data: Dataset) -> str:
    return key_of(fidelity=art.digest, reference=reference.digest, data=data.digest(),
                  tools=tool_versions("tinygate.evaluate"), backend=backend_name(art.kind, art.meta),
                  outputs=model.output_names, class_axis=model.class_axis)


def _score_values(art: Artifact, model: Model, data: Dataset, outputs: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample scores of the first output: PSNR and SSIM against the targets, or predictions against labels."""
    bad = ~np.isfinite(outputs.reshape(len(outputs), -1)).all(axis=1)
    if bad.any():
        raise GateError(art.path, None, f"outputs NaN or Inf on {int(bad.sum())} of {len(bad)} evaluation "
                                        f"samples (first: #{int(np.argmax(bad))})")
    if model.task == "image":
        if data.targets is None:
            raise GateError(f"models.{model.name}.eval", "targets", "an image model's evaluation set needs targets")
        if outputs.shape != data.targets.shape:
            raise GateError(art.path, None, f"output shape {outputs.shape[1:]} does not match "
                                            f"the targets' {data.targets.shape[1:]}")
        return metrics.image_scores(outputs, data.targets, workers=eval_threads())
    if data.labels is None:
        raise GateError(f"models.{model.name}.eval", "labels", "a classifier's evaluation set needs labels")
    predictions = outputs.reshape(len(outputs), -1).argmax(1)
    predictions[~np.isfinite(outputs.reshape(len(outputs), -1)).all(1)] = -1  # NaN never counts
    return {"predictions": predictions, "correct": predictions == data.labels}


def score(art: Artifact, model: Model, data: Dataset, cache: Cache, threads: int = 1,
          progress: Callable[[str], None] | None = None, reference: Artifact | None = None) -> Scores:
    """Per-sample scores on the evaluation set, cached. Given the float model as `reference`, a variant's outputs
    are compared with it in the same pass (see `_measure`), so that fidelity() finds its figures cached."""
    check_inputs(model, data)
    key = _score_key(art, model, data)
    if reference is not None and reference.digest != art.digest and not cache.has(key):
        with contextlib.suppress(Exception):  # the float model, or the comparison, failed: scored alone below
            _measure(art, reference, model, data, cache, threads, progress)

    def build(out: Path) -> None:
        if progress is not None:
            progress(f"evaluating on {len(data)} inputs ({backend_name(art.kind, art.meta)})")
        if reference is not None and reference.digest == art.digest:  # the float model: its outputs are kept
            outputs = np.concatenate([outs[0] for outs in _float_outputs(art, data, threads, progress)])
        else:
            outputs = outputs_of(art, data, threads, progress)
        np.savez(out / "scores.npz", **_score_values(art, model, data, outputs))

    entry = cache.get_or_build(key, build)
    with np.load(entry / "scores.npz", allow_pickle=False) as npz:
        return Scores({k: npz[k] for k in npz.files}, backend_name(art.kind, art.meta))


def fidelity(art: Artifact, reference: Artifact, model: Model, data: Dataset, cache: Cache,
             threads: int = 1, progress: Callable[[str], None] | None = None) -> list[fidelity_.OutputFidelity]:
    """Per-output fidelity of an artifact to the float model on the evaluation inputs, cached by both hashes."""
    import json

    check_inputs(model, data)
    entry = cache.get_or_build(_fidelity_key(art, reference, model, data),
                               lambda out: _measure(art, reference, model, data, cache, threads, progress,
                                                    fidelity_out=out))
    return [fidelity_.OutputFidelity(**r) for r in json.loads((entry / "fidelity.json").read_text())]


_reference_outputs: dict[tuple[str, str], list[list[np.ndarray]]] = {}  # (float model, data) -> outputs, oldest first
REFERENCE_BYTES = 256 << 20  # kept for the process: tinybeauty's float outputs are 78 MB, digits' 20 KB


def _float_outputs(reference: Artifact, data: Dataset, threads: int,
                   progress: Callable[[str], None] | None = None) -> list[list[np.ndarray]]:
    """Every output of the reference (the float model) on every sample, sample-major; kept for the process, the
    most recent first to stay, under REFERENCE_BYTES, so each variant's pass reuses them (one set at a time was
    not enough: the tests run model by model within each check, and each model evicted the other's)."""
    key = (reference.digest, data.digest())
    if key not in _reference_outputs:
        _reference_outputs[key] = per_sample(reference, data, threads, progress)
        while len(_reference_outputs) > 1 and sum(a.nbytes for outs in _reference_outputs.values() for sample in outs
                                                  for a in sample) > REFERENCE_BYTES:
            del _reference_outputs[next(iter(_reference_outputs))]  # the oldest
    return _reference_outputs[key]


def _measure(art: Artifact, reference: Artifact, model: Model, data: Dataset, cache: Cache, threads: int,
             progress: Callable[[str], None] | None, fidelity_out: Path | None = None) -> None:
    """One pass of the artifact over the evaluation inputs that fills both cache entries: its fidelity to the
    float model and (when they can be scored) its scores. A cold run used to run each variant twice and the float
    model once more per variant. Writes the fidelity into `fidelity_out` when given (fidelity()'s cache build),
    else through the cache; scores that cannot be computed (NaN, no targets) are left to score(), which says
    why."""
    import json

    if progress is not None:
        progress(f"evaluating on {len(data)} inputs and comparing with the float model "
                 f"({backend_name(art.kind, art.meta)})")
    outputs = per_sample(art, data, threads, progress)  # the variant first: its own failure is the one to report
    if progress is not None and (reference.digest, data.digest()) not in _reference_outputs:
        progress(f"running the float model on {len(data)} inputs ({backend_name(reference.kind, reference.meta)})")
    refs = _float_outputs(reference, data, threads, progress and (lambda said: progress(f"the float model: {said}")))
    acc = [fidelity_.Accumulator(name, model.class_axis) for name in model.output_names]
    for mine, ref in zip(outputs, refs, strict=True):
        if len(mine) != len(acc) or len(ref) != len(acc):
            raise GateError(art.path, None, f"returns {len(mine)} outputs and the float model {len(ref)}, "
                                            f"but models.{model.name}.output names {len(acc)}")
        for a, r, m in zip(acc, ref, mine, strict=True):
            if r.shape != m.shape:
                raise GateError(art.path, a.name, f"output shape {m.shape} differs from the float model's "
                                                  f"{r.shape}")
            a.add(r, m)
    text = json.dumps([a.result().__dict__ for a in acc])
    if fidelity_out is not None:
        (fidelity_out / "fidelity.json").write_text(text)
    else:
        cache.get_or_build(_fidelity_key(art, reference, model, data),
                           lambda out: (out / "fidelity.json").write_text(text))
    try:
        values = _score_values(art, model, data, np.concatenate([outs[0] for outs in outputs]))
    except GateError:
        return
    cache.get_or_build(_score_key(art, model, data), lambda out: np.savez(out / "scores.npz", **values))


def summary_figures(result: Scores) -> dict[str, float]:
    """The figures a report shows for per-sample scores: mean and 5th-percentile PSNR and SSIM, or accuracy."""
    if "psnr" in result.values:
        return {"psnr_db": metrics.mean(result["psnr"]), "psnr_p5_db": metrics.percentile(result["psnr"], 5),
                "ssim": metrics.mean(result["ssim"])}
    return {"accuracy_pct": metrics.mean(result["correct"]) * 100.0}
