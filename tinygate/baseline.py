"""The baseline: the last released state, kept under reports/baseline/ so candidates are compared with it.

baseline.json holds each variant's figures, its artifact's hash and kind, the evaluation data's hash per
model, the machine fingerprint, tool versions, commit, time and the reason it was accepted; artifacts/
holds copies of the artifacts (so latency is compared against the real thing); scores/ the per-sample
scores (so quality is compared sample by sample). first/ keeps the first baseline of the release line,
for the drift guard. Accepting is explicit (--gate-accept-baseline --reason ...) and only a run that
passed every check can become the baseline.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinygate.artifacts import Artifact
from tinygate.errors import GateError


@dataclass(frozen=True)
class Baseline:
    root: Path
    doc: dict

    def variant(self, variant_id: str) -> dict | None:
        return self.doc["variants"].get(variant_id)

    def data_digest(self, model: str) -> str | None:
        return self.doc.get("data", {}).get(model)

    def samples(self, variant_id: str) -> dict[str, np.ndarray] | None:
        path = self.root / "scores" / f"{variant_id}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except Exception as exc:  # an edited or corrupted baseline file: name it, in one line
            first = (str(exc).strip().splitlines() or [""])[0]
            raise GateError(path, None, f"is not a readable baseline score file ({type(exc).__name__}: {first}); "
                                        "accept a new baseline") from None

    def artifact(self, variant_id: str) -> Artifact | None:
        """The baseline's copy of a variant's artifact, ready for a runner (checked like any untrusted file)."""
        v = self.variant(variant_id)
        if v is None or not v.get("artifact_path"):
            return None
        path = self.root / v["artifact_path"]
        if not path.exists():
            raise GateError(path, None, "the baseline's artifact is missing; accept a new baseline")
        return Artifact(v["kind"], path, v["artifact"], v.get("factory", ""), tuple(map(tuple, v.get("meta", []))))

    def traced(self, variant_id: str) -> Artifact | None:
        """The TorchScript a PyTorch variant was frozen as when it was accepted (its code of that day), if kept."""
        from tinygate.cache import digest_path

        v = self.variant(variant_id) or {}
        path = self.root / v["traced_path"] if v.get("traced_path") else None
        if path is None or not path.is_file():
            return None
        return Artifact("torchscript", path, digest_path(path), v.get("factory", ""))

    @property
    def first(self) -> Baseline | None:
        """The first baseline of this release line (the drift guard compares with it)."""
        return load(self.root / "first")


def load(root: Path) -> Baseline | None:
    """The baseline under `root`, or None if none was accepted; an unreadable one is an error, not a skip."""
    path = root / "baseline.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc["variants"]  # noqa: B018 - the one key every baseline has
    except (ValueError, KeyError, TypeError) as exc:
        raise GateError(path, None, f"is not a readable baseline: {type(exc).__name__}: {exc}") from None
    return Baseline(root, doc)


def refusal(rec, exitstatus: int, variant_ids: list[str], needs_samples: set[str]) -> str | None:
    """Why this run cannot become the baseline, or None if it can."""
    failed = [c for c in rec.checks if not c.passed]
    if exitstatus != 0 or failed:
        return (f"this run did not pass (exit status {exitstatus}, {len(failed)} checks not passed"
                + (f", first: {failed[0].model}-{failed[0].variant} {failed[0].check}: {failed[0].verdict}"
                   if failed else "") + ")")
    missing = [v for v in variant_ids if v not in rec.artifacts]
    if missing:
        return f"variants not built in this run: {', '.join(missing)} (run the whole gate, without -k or -m)"
    unscored = sorted(v for v in needs_samples if v not in rec.samples)
    if unscored:
        return f"variants not evaluated in this run: {', '.join(unscored)} (run the quality tests too)"
    return None


def accept(root: Path, rec, doc: dict, new_release_line: bool = False, tracer=None) -> Path:
    """Write this run as the baseline under `root` (atomically: built beside it, then renamed into place).
    The first baseline, or one accepted with new_release_line, also becomes first/. `tracer(variant_id,
    artifact, path)` freezes a PyTorch artifact as TorchScript, so later runs time the code of this day."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".baseline.", dir=root.parent))
    try:
        variants = {}
        for vid, art in sorted(rec.artifacts.items()):
            src, dest = Path(art["path"]), tmp / "artifacts" / vid
            if src.is_dir():  # a Core ML package
                shutil.copytree(src, dest / src.name)
            else:  # a file, with an ONNX model's external data beside it
                for f in Artifact(art["kind"], src, art["digest"], art.get("factory", "")).files():
                    (dest / f.relative_to(src.parent)).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, dest / f.relative_to(src.parent))
            variants[vid] = {**rec.figures.get(vid, {}), "kind": art["kind"], "artifact": art["digest"],
                             "bytes": art["bytes"],
                             "factory": art.get("factory", ""), "meta": art.get("meta", []),
                             "artifact_path": (Path("artifacts") / vid / src.name).as_posix()}
            if tracer is not None and art["kind"] == "torch":
                tracer(vid, Artifact("torch", src, art["digest"], art.get("factory", "")), dest / "traced.pt")
                variants[vid]["traced_path"] = (Path("artifacts") / vid / "traced.pt").as_posix()
        (tmp / "scores").mkdir()
        for vid, values in rec.samples.items():
            np.savez(tmp / "scores" / f"{vid}.npz", **{k: np.asarray(v) for k, v in values.items()})
        accepted = {**doc, "accepted": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "variants": variants}
        (tmp / "baseline.json").write_text(json.dumps(accepted, indent=1), encoding="utf-8")
        first = root / "first"
        if first.is_dir() and not new_release_line:
            shutil.copytree(first, tmp / "first")
        else:
            (tmp / "first").mkdir()
            shutil.copy2(tmp / "baseline.json", tmp / "first" / "baseline.json")
            shutil.copytree(tmp / "scores", tmp / "first" / "scores")
        old = None
        if root.exists():
            old = root.parent / f".baseline.old.{os.getpid()}"
            os.replace(root, old)
        os.replace(tmp, root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
