"""A gate bundle: what `tinygate build` exports from a pull request, and all that `tinygate judge` reads of it.

build runs the pull request's code (no secrets): every variant's chain of artifacts, the float model's outputs on
the evaluation inputs, the pull request's gate.toml, and manifest.json with the sha256 of every file.

judge runs the target branch's code and opens a bundle as data: every file must be listed with its hash, no
other file may be there, no symlink, nothing outside the folder; each model file then goes through its safe
loader (ONNX Runtime, the MIL interpreter; PyTorch weights through safetensors into the target branch's own
factory). Nothing in a bundle is imported or executed: not Python, not TorchScript (TorchScript can read and
write files), so a TorchScript step is rebuilt by the judge from its PyTorch input (tinygate.gate).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np

from tinygate.artifacts import Artifact
from tinygate.cache import digest_path, key_of
from tinygate.errors import GateError

FORMAT = 1
MANIFEST = "manifest.json"
CANDIDATE = "candidate.toml"
KINDS = ("torch", "torchscript", "onnx", "mlpackage")
ENGINES = ("fbgemm", "x86", "qnnpack", "onednn")  # the only artifact meta a judge honours: torch's int8 engine
MAX_MANIFEST_BYTES = 16 << 20


def build(gate, out: Path, log: Callable[[str], None] = print) -> dict:
    """Export every variant of the gate's config into the empty folder `out`; the manifest written."""
    from tinygate import __version__
    from tinygate.evaluate import outputs_all

    out = Path(out)
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise GateError(out, None, "is not an empty folder: a bundle is written into a new one")
    out.mkdir(parents=True, exist_ok=True)
    by_digest: dict[str, str] = {}
    manifest: dict = {"format": FORMAT, "tinygate": __version__, "config": CANDIDATE, "artifacts": {},
                      "variants": {}, "models": {}, "float_outputs": {}}
    for v in gate.variants:
        model = gate.config.models[v.model]
        try:
            chain = gate.variant(v).chain()
        except GateError as exc:  # the judge reports it; the build goes on with the other variants
            manifest["variants"][v.id] = {"error": str(exc)}
            log(f"  {v.id}: not built: {exc}")
            continue
        names = []
        for art in chain:
            if art.digest not in by_digest:
                name = by_digest[art.digest] = f"a{len(by_digest):03d}-{art.kind}"
                manifest["artifacts"][name] = _export(art, out / "artifacts" / name)
            names.append(by_digest[art.digest])
        manifest["variants"][v.id] = {"chain": names}
        manifest["models"][v.model] = names[0]
        log(f"  {v.id}: {' -> '.join(names)}")
        if v.model not in manifest["float_outputs"]:
            outs = outputs_all(chain[0], gate.variant(v).evaluation(), gate.threads)
            path = out / "float_outputs" / f"{len(manifest['float_outputs']):03d}.npz"
            path.parent.mkdir(exist_ok=True)
            np.savez(path, **dict(zip(model.output_names, outs, strict=True)))
            manifest["float_outputs"][v.model] = path.relative_to(out).as_posix()
    shutil.copyfile(gate.config.path, out / CANDIDATE)
    manifest["files"] = {p.relative_to(out).as_posix(): digest_path(p) for p in sorted(out.rglob("*")) if p.is_file()}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    return manifest


def _export(art: Artifact, dest: Path) -> dict:
    """Copy an artifact's files into dest, keeping their layout (an ONNX model's external data beside it)."""
    dest.mkdir(parents=True)
    if art.path.is_dir():  # an .mlpackage
        shutil.copytree(art.path, dest / art.path.name, symlinks=True)
    else:
        for f in art.files():
            target = dest / f.relative_to(art.path.parent)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
    meta = dict(art.meta)
    return {"kind": art.kind, "path": art.path.name, **({"engine": meta["engine"]} if "engine" in meta else {})}


class Bundle:
    """A verified bundle: its artifacts by variant, the float outputs the build computed, the candidate config."""

    def __init__(self, root: Path, manifest: dict) -> None:
        self.root, self.manifest = root, manifest
        self._artifacts: dict[str, Artifact] = {}

    def chain(self, variant_id: str, model: str, kinds: list[str], factory: str = "", code: str = "") -> list[Artifact]:
        """The variant's artifacts, float model first; `kinds` is what the judged config's steps make, `factory`
        the target branch's code for the model's PyTorch weights (`code`: that code's hash, for cache keys)."""
        entry = self.manifest["variants"].get(variant_id)
        where = self.root / MANIFEST
        if entry is None:
            raise GateError(where, f"variants.{variant_id}", "not in the bundle: the pull request's build did not "
                                                             "make this variant")
        if "error" in entry:
            error = " ".join(entry["error"].split())[:500]  # one line, whatever the build wrote
            raise GateError(where, f"variants.{variant_id}", f"the pull request's build failed: {error}")
        if entry["chain"][0] != self.manifest["models"].get(model):
            raise GateError(where, f"variants.{variant_id}.chain", f"starts from {entry['chain'][0]}, not from model "
                                                                   f"{model}'s float model: every variant of a model "
                                                                   "is made from the same one")
        chain = [self.artifact(name, factory, code) for name in entry["chain"]]
        if [a.kind for a in chain] != kinds:
            raise GateError(where, f"variants.{variant_id}.chain", f"holds {[a.kind for a in chain]}, but the "
                                                                   f"variant's steps make {kinds}")
        return chain

    def artifact(self, name: str, factory: str = "", code: str = "") -> Artifact:
        """One artifact of the bundle, identified by its files' hashes and its manifest entry; PyTorch weights are
        run by `factory` (the target branch's), never by code from the bundle."""
        if (name, factory) not in self._artifacts:
            entry = self.manifest["artifacts"][name]
            folder = self.root / "artifacts" / name
            files = sorted(f for f in self.manifest["files"] if f.startswith(f"artifacts/{name}/"))
            digest = key_of(bundle=[(f, self.manifest["files"][f]) for f in files], entry=sorted(entry.items()),
                            factory=factory, code=code)
            meta = (("engine", entry["engine"]),) if "engine" in entry else ()
            self._artifacts[name, factory] = Artifact(entry["kind"], folder / entry["path"], digest, factory, meta)
        return self._artifacts[name, factory]

    def float_outputs(self, model: str) -> dict[str, np.ndarray] | None:
        """What the pull request's own code computed for the float model on the evaluation inputs."""
        from tinygate.safety import check_npz

        rel = self.manifest["float_outputs"].get(model)
        if rel is None:
            return None
        check_npz(self.root / rel)
        with np.load(self.root / rel, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def candidate_config(self) -> dict:
        """The pull request's gate.toml, as TOML data (nothing it names is imported)."""
        import tomllib

        path = self.root / self.manifest["config"]
        try:
            return tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise GateError(path, None, f"the pull request's gate config is not valid TOML: {exc}") from None


def open_bundle(path: Path) -> Bundle:
    """Open and verify a bundle, or fail with one line naming the file and what is wrong."""
    from tinygate.safety import check_size

    root = Path(path).absolute()
    if root.is_symlink() or not root.is_dir():
        raise GateError(root, None, "not a bundle folder (made by `tinygate build --out DIR`)")
    where = root / MANIFEST
    if where.is_symlink() or not where.is_file():
        raise GateError(where, None, "missing: not a bundle made by `tinygate build`")
    if where.stat().st_size > MAX_MANIFEST_BYTES:
        raise GateError(where, None, f"is over {MAX_MANIFEST_BYTES >> 20} MB")
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GateError(where, None, f"is not valid JSON: {exc}") from None
    _check_schema(manifest, where)
    listed = manifest["files"]
    present = set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                raise GateError(p, None, "is a symlink: a bundle holds only plain files")
            if p.is_file() and rel != MANIFEST:
                present.add(rel)
            elif not p.is_dir() and rel != MANIFEST:
                raise GateError(p, None, "is not a plain file")
    if present - set(listed):
        raise GateError(where, "files", f"does not list {sorted(present - set(listed))[0]} (and "
                                        f"{len(present - set(listed)) - 1} more): a bundle holds only what it lists")
    for rel, digest in listed.items():
        p = root / rel
        if rel not in present:
            raise GateError(where, f"files.{rel}", "is listed but missing from the bundle")
        check_size(p)
        if digest_path(p) != digest:
            raise GateError(p, None, f"does not match its sha256 in {MANIFEST}: the bundle was altered")
    for name, entry in manifest["artifacts"].items():
        main = f"artifacts/{name}/{entry['path']}"
        if main not in listed and not any(f.startswith(main + "/") for f in listed):
            raise GateError(where, f"artifacts.{name}.path", f"names {entry['path']!r}, which the bundle lacks")
    return Bundle(root, manifest)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _check_schema(m: object, where: Path) -> None:
    """The manifest's shape, so that every later read of it is safe: names are plain, paths stay inside."""
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise GateError(where, key, what)

    need(isinstance(m, dict), "", "must be a JSON object")
    need(m.get("format") == FORMAT, "format", f"must be {FORMAT} (made by another tinygate version?)")
    for key, kind in (("artifacts", dict), ("variants", dict), ("models", dict), ("float_outputs", dict),
                      ("files", dict), ("config", str)):
        need(isinstance(m.get(key), kind), key, f"must be a {kind.__name__}")
    for rel, digest in m["files"].items():
        need(_relative(rel) and isinstance(digest, str) and len(digest) == 64, f"files.{rel}",
             "must map a relative path inside the bundle to a sha256")
    need(m["config"] == CANDIDATE and m["config"] in m["files"], "config", f"must be the listed {CANDIDATE}")
    for name, entry in m["artifacts"].items():
        need(_plain(name) and isinstance(entry, dict), f"artifacts.{name}", "must be a plain name with an object")
        need(entry.get("kind") in KINDS, f"artifacts.{name}.kind", f"must be one of {', '.join(KINDS)}")
        need(isinstance(entry.get("path"), str) and _relative(entry["path"]), f"artifacts.{name}.path",
             "must be a relative path")
        need(set(entry) <= {"kind", "path", "engine"}, f"artifacts.{name}", "holds keys a bundle does not have")
        need(entry.get("engine", ENGINES[0]) in ENGINES, f"artifacts.{name}.engine", f"must be one of {ENGINES}")
    for vid, entry in m["variants"].items():
        chain = entry.get("chain") if isinstance(entry, dict) else None
        ok = isinstance(entry, dict) and (isinstance(entry.get("error"), str) or (
            isinstance(chain, list) and bool(chain) and all(isinstance(n, str) and n in m["artifacts"] for n in chain)))
        need(ok, f"variants.{vid}", "must hold a chain of listed artifacts, or the error that stopped its build")
    for model, name in m["models"].items():
        need(isinstance(name, str) and name in m["artifacts"], f"models.{model}", "must name its float artifact")
    for model, rel in m["float_outputs"].items():
        need(isinstance(rel, str) and rel in m["files"] and rel.startswith("float_outputs/") and rel.endswith(".npz"),
             f"float_outputs.{model}", "must name a listed float_outputs/*.npz file")
    owned = {m["config"], *m["float_outputs"].values()}
    for rel in m["files"]:  # nothing else rides along (a conftest.py, a .pth, a plugin): only what is judged
        parts = PurePosixPath(rel).parts
        need(rel in owned or (len(parts) > 2 and parts[0] == "artifacts" and parts[1] in m["artifacts"]),
             f"files.{rel}", "is neither an artifact's file, nor float outputs, nor the config")
        need(PurePosixPath(rel).suffix not in (".py", ".pyc", ".pth", ".so", ".dll", ".dylib", ".sh", ".ini", ".cfg"),
             f"files.{rel}", "code has no place in a bundle")


def _relative(rel: object) -> bool:
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel:
        return False
    p = PurePosixPath(rel)
    return not p.is_absolute() and ".." not in p.parts and rel == p.as_posix()


def _plain(name: object) -> bool:
    return isinstance(name, str) and _relative(name) and "/" not in name and not name.startswith(".")
