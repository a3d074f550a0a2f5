"""Atomic writes and content hashes shared by every artifact writer."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import numbers
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_HOST = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40] or "host"


def _temp_prefix(target: Path) -> str:
    """Temporary names beside ``target``: ``.<name>.<host>-<pid>.<random>.tmp``, unique per process and call."""
    return f".{target.name}.{_HOST}-{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(target: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files of ``target`` left by writers on this host that were killed (their process is gone).

    Temporary files of live writers (a concurrent run of the same stage) and of other hosts sharing the
    folder are left alone. Returns the files removed.
    """
    target = Path(target)
    removed = []
    prefix = f".{target.name}.{_HOST}-"
    for path in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        rest = path.name[len(prefix) :] if path.name.startswith(prefix) else ""
        pid = rest.split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def current_umask() -> int:
    """The process's umask, read without changing it where /proc allows (os.umask can only set it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    A killed or failing writer leaves the previous ``target`` (if any) untouched and no
    half-written file that a later run could trust. The temporary name carries the host, the
    process id and a random part, so concurrent writers of one target (two runs of a stage on
    one folder) never share a temporary file, and the last rename wins with a complete file.
    Temporary files of killed writers are removed by the next write of the same target.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes 0600 (and some writers replace the file): an artifact gets the mode any new file would.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON's null), recursively.

    ``json.dumps`` writes bare NaN and Infinity, which are not JSON: DVC, jq and browsers reject the file.
    Non-integral numbers (numpy floats too) become plain floats; tuples become lists.
    """
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


def write_json_atomic(target: str | os.PathLike[str], payload: Any) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(json_safe(payload), indent=2, sort_keys=True, allow_nan=False) + "\n")


def dvc_metrics(payload: Any, digits: int = 6) -> Any:
    """``payload`` as a DVC metrics file holds it: numbers rounded to ``digits`` (so reruns diff cleanly), NaN and
    inf as None (null)."""
    if isinstance(payload, dict):
        return {key: dvc_metrics(item, digits) for key, item in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [dvc_metrics(item, digits) for item in payload]
    if isinstance(payload, numbers.Real) and not isinstance(payload, (numbers.Integral, bool)):
        number = float(payload)
        return round(number, digits) if math.isfinite(number) else None
    return payload


def write_dvc_metrics(target: str | os.PathLike[str], payload: Any) -> Path:
    """A DVC metrics file of ``dvc_metrics(payload)``, atomically."""
    write_json_atomic(target, dvc_metrics(payload))
    return Path(target)


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def sha256_json(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def sha256_tree(path: str | os.PathLike[str]) -> str:
    """Content hash of a file, or of every file under a folder (relative names and bytes, sorted)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        return "missing"
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(item.relative_to(path)).encode() + b"\0" + sha256_file(item).encode())
    return digest.hexdigest()
