"""A content-addressed, on-disk cache of built artifacts and evaluations.

An entry's key hashes its inputs (the input artifact's hash, the step, its parameters, the tool
versions); a second run with nothing changed finds every entry and rebuilds nothing. Entries are
built in a temporary folder and renamed into place, under a file lock, so a killed run leaves no
half-written entry and parallel workers build each entry once.

The cache is a speed-up, never a source of truth: each entry is sealed with an HMAC of its key and contents
under a secret kept outside the project (~/.cache/tinygate/cache.key, made on first use), and verified when
read. An entry that does not verify (edited, corrupted, or committed by a pull request, whose author cannot
know the key) is rebuilt, so it can slow a run but never change a verdict.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock

# scipy and Pillow: scikit-image's filters and image reading run on them, and a new scipy release changed the
# bundled evaluation data (and so its hash) without any other version moving; scikit-learn ships the digits.
TOOLS = ("tinygate", "torch", "onnx", "onnxruntime", "onnxscript", "coremltools", "numpy", "scikit-image", "scipy",
         "pillow", "scikit-learn")


@functools.cache
def tool_versions(*uses: str) -> dict[str, str]:
    """Installed versions of every tool that can change an artifact or a figure. tinygate's own entry also hashes
    the source of the tinygate modules that `uses` (dotted names) import, transitively, or of the whole package if
    none are named: a change to a step or to the interpreter never reuses a stale entry, and a change to the
    reports or the plugin does not make every cached artifact cold."""
    out = {}
    for name in TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    package = Path(__file__).parent
    files = sorted(set().union(*(_imports(m) for m in uses))) if uses else sorted(package.rglob("*.py"))
    source = hashlib.sha256(b"".join(p.relative_to(package).as_posix().encode() + b"\0" + p.read_bytes()
                                     for p in files))
    out["tinygate"] += f"+{source.hexdigest()[:12]}"
    return out


def tinygate_sources(files: list[Path]) -> list[Path]:
    """The tinygate modules that these (user) source files import, transitively: a factory built on
    tinygate.zoo, or a step wrapping a built-in, is keyed by that code too."""
    return sorted(set().union(*(_imports(name) for f in files for name in _tinygate_imports(Path(f)))))


def _tinygate_imports(path: Path) -> list[str]:
    """The dotted tinygate names a source file imports anywhere in it (function-level imports too); none for a
    file that cannot be read or parsed."""
    import ast

    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]  # `from tinygate import x`
    return [n for n in names if n.split(".")[0] == "tinygate"]


@functools.cache
def _imports(module: str) -> frozenset[Path]:
    """The source files of a tinygate module and of every tinygate module it imports anywhere in its source
    (function-level imports too, which tinygate uses to stay cheap to load), transitively."""
    package = Path(__file__).parent
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name.split(".")[0] != "tinygate":  # a user's module: its own source is keyed by the caller
            continue
        rel = Path(*name.split(".")[1:])
        path = package / rel / "__init__.py" if (package / rel).is_dir() else package / rel.with_suffix(".py")
        if not path.is_file() or path in seen:
            continue
        seen.add(path)
        if path.name != "__init__.py" and (path.parent / "__init__.py").is_file() and path.parent != package:
            todo.append(".".join(["tinygate", *path.parent.relative_to(package).parts]))
        todo += _package_imports(path)
    return frozenset(seen)


_package_imports = functools.cache(_tinygate_imports)  # tinygate's own files, parsed once a process


def digest_path(path: Path) -> str:
    """sha256 of a file, or of a folder's relative paths and file contents (an .mlpackage)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f != path:
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def key_of(**parts: Any) -> str:
    """A stable key from JSON-serialisable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


@functools.cache
def _secret() -> bytes:
    """This machine's cache key, outside any project: only what this machine built verifies."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinygate"
    home.mkdir(parents=True, exist_ok=True)
    path = home / "cache.key"
    with FileLock(str(home / "cache.key.lock")):
        if not path.is_file() or len(path.read_bytes()) != 32:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(32))
        return path.read_bytes()


def seal(key: str, entry: Path) -> str:
    """The HMAC of an entry: its key and every file in it (the seal itself aside)."""
    mac = hmac.new(_secret(), key.encode(), hashlib.sha256)
    for f in sorted(p for p in entry.rglob("*") if p.is_file() and p.name != ".complete"):
        mac.update(f.relative_to(entry).as_posix().encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return mac.hexdigest()


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from tinygate.errors import GateError

            raise GateError(root, None, f"cannot make the cache folder: {exc.strerror} (--gate-cache-dir)") from None
        self.built: list[str] = []  # keys built (not found) in this process, for tests and the report
        self._verified: set[str] = set()

    def _trusted(self, key: str, entry: Path) -> bool:
        """The entry is complete and its seal verifies (checked once per process)."""
        if key in self._verified:
            return True
        marker = entry / ".complete"
        if not marker.is_file() or not entry.is_dir():
            return False
        if not hmac.compare_digest(marker.read_bytes().strip(), seal(key, entry).encode()):
            return False
        self._verified.add(key)
        return True

    def has(self, key: str) -> bool:
        """A trusted entry for `key` is stored (nothing is built)."""
        return self._trusted(key, self.root / key)

    def get_or_build(self, key: str, build: Callable[[Path], None],
                     intact: Callable[[Path], bool] = lambda entry: True, optional: bool = False) -> Path:
        """The entry folder for `key`; `build(tmp_dir)` fills a fresh folder when it is absent, or when
        `intact(entry)` says a stored entry was corrupted (it is then rebuilt). `optional`: a small entry that only
        saves time; in a cache folder that is not writable it is built into a temporary folder instead."""
        entry = self.root / key
        if self._trusted(key, entry) and intact(entry):
            return entry
        if optional and not os.access(self.root, os.W_OK):
            tmp = Path(tempfile.mkdtemp(prefix="tinygate-"))
            build(tmp)
            return tmp
        if not os.access(self.root, os.W_OK):
            from tinygate.errors import GateError

            raise GateError(self.root, None, "the cache folder is not writable and holds no trusted entry for this "
                                             "step: give --gate-cache-dir a writable folder")
        with FileLock(str(self.root / f"{key}.lock")):
            self._verified.discard(key)
            if self._trusted(key, entry) and intact(entry):
                return entry
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.root))
            try:
                build(tmp)
                (tmp / ".complete").write_text(seal(key, tmp))
                if entry.is_dir() and not entry.is_symlink():  # an incomplete leftover of a killed run
                    shutil.rmtree(entry)
                elif entry.exists() or entry.is_symlink():  # not a folder at all: not ours
                    entry.unlink()
                os.replace(tmp, entry)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            self.built.append(key)
            self._verified.add(key)
        return entry
