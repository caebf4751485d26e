"""Files the harness writes: the cache directory, cache keys (a digest of everything a cached entry's
content depends on), checksums of what was written, a lock per cache entry while it is built, and atomic
publishing, so a reader never sees a half-written file or directory. Written files and folders follow the
process umask (a shared results folder or cache stays readable by the group); a full, read-only or
forbidden disk is one UserError line naming the folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

from speckd_bench.distributed import process_context
from speckd_bench.errors import UserError
from speckd_bench.progress import warn

DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


"""What a full, read-only or forbidden folder raises; anything else is a bug, not a disk."""


def _cache_root() -> Path:
    env = os.environ.get("SPECKD_CACHE_DIR")
    return (
        Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "speckd-bench"
    )


def cache_dir() -> Path:
    """$SPECKD_CACHE_DIR, else the user's cache dir (~/.cache/speckd-bench)."""
    base = _cache_root()
    if base.exists() and not base.is_dir():
        raise UserError(f"the cache folder {base} is a file: set SPECKD_CACHE_DIR to a folder")
    try:
        base.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(
            f"the cache folder {base} is inside a file: set SPECKD_CACHE_DIR to a folder"
        ) from None
    except OSError as exc:
        raise disk_error(exc, base) from None
    return base


def _errno_of(exc: Exception) -> int | None:
    """The errno of an OSError, or of a library error that quotes one (safetensors: '(os error 28)')."""
    if isinstance(exc, OSError):
        return exc.errno
    found = re.search(r"\(os error (\d+)\)", str(exc))
    return int(found.group(1)) if found else None


def disk_error(exc: Exception, directory: Path) -> Exception:
    """The one-line UserError for a disk that refuses a write into `directory`; other errors unchanged."""
    code = _errno_of(exc)
    if code not in DISK_ERRORS:
        return exc
    in_cache = Path(directory).resolve().is_relative_to(_cache_root().resolve())
    fix = "set SPECKD_CACHE_DIR to another folder" if in_cache else "pass --results-dir DIR"
    return UserError(
        f"cannot write to {directory} ({os.strerror(code)}): free space or fix its permissions, or {fix}"
    )


@contextmanager
def writing(directory: Path) -> Iterator[None]:
    """Raise disk_error for an error of a write into `directory`."""
    try:
        yield
    except Exception as exc:
        error = disk_error(exc, directory)
        if error is exc:
            raise
        raise error from None


def probe_writable(directory: Path) -> None:
    """Create `directory` and write, fsync and remove a small file there: a full or read-only disk fails
    here, in one line, before anything is trained."""
    with writing(directory):
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory) as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())


def sha256_of(chunks: Iterable[bytes]) -> str:
    """Hex SHA-256 of the concatenated chunks."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes: written beside weights when they are saved, checked when loaded."""
    with open(path, "rb") as fh:
        return sha256_of(iter(lambda: fh.read(1 << 22), b""))


def checksums(folder: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """{name: {"sha256", "bytes"}} of files in `folder`: written with them, checked by checksum_problem."""
    return {n: {"sha256": file_sha256(folder / n), "bytes": (folder / n).stat().st_size} for n in names}


def checksum_problem(folder: Path, expected: Any, full: bool = True) -> str | None:
    """Why the files of `folder` do not match the checksums written with them, or None when they do.
    Not `full`: sizes only (a cheap check for large entries that are read every run)."""
    if not isinstance(expected, dict) or not expected:
        return "it has no checksums (written by an older version, or cut short)"
    for name, want in expected.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if not isinstance(want, dict) or path.stat().st_size != want.get("bytes"):
            return f"{name} has the wrong size (truncated or overwritten)"
        if full and file_sha256(path) != want.get("sha256"):
            return f"{name} does not match its checksum (overwritten)"
    return None


def read_json(path: Path) -> Any:
    """A JSON file's content; ValueError (with the reason) when it is missing, unreadable or garbled."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path.name} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path.name} is unreadable ({type(exc).__name__}: {str(exc)[:80]})") from None


def entry_lock(target: Path) -> FileLock:
    """The lock of one cache entry, held while it is checked and built, so a second process waits and then
    reuses it: <cache>/.locks/<kind>-<name>.lock (entry folders hold nothing else)."""
    locks = cache_dir() / ".locks"
    with writing(locks):
        locks.mkdir(exist_ok=True)
    return FileLock(locks / f"{target.parent.name}-{target.name}.lock")


def discard_broken(target: Path, reason: str) -> None:
    """Remove a broken cache entry (file or folder), saying so in one line on stderr; it is then rebuilt."""
    warn(f"warning: cache entry {target} is broken ({reason}); removed, rebuilding it")
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(path: Path | str, directory: bool = False) -> None:
    """Give a temp file (0600) or folder (0700) the mode open() or mkdir() would have given it."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def digest(obj: Any, length: int = 16) -> str:
    """`length` hex digits of the SHA-256 of obj as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:length]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same directory, fsync, then rename over the target."""
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            follow_umask(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


@contextmanager
def publish_dir(target: Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temp directory beside `target`; when the block ends without error its files are
    fsynced and it is renamed to `target`, else it is removed. An existing `target` is replaced when
    `replace`, else kept (another process published the same entry first) and the new copy dropped."""
    with writing(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            yield tmp
            for path in tmp.rglob("*"):
                if path.is_file():
                    _fsync(path)
                follow_umask(path, directory=path.is_dir())
            follow_umask(tmp, directory=True)
            if replace and target.exists():
                shutil.rmtree(target)
            try:
                tmp.rename(target)
            except OSError:
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def publish_file(target: Path, write: Any) -> None:
    """`write(tmp_path)` into a temp file beside `target`, then rename it over `target`."""
    with writing(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-")
        os.close(fd)
        try:
            write(tmp)
            follow_umask(tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextmanager
def building(target: Path, problem: Callable[[Path], str | None], collective: bool = True) -> Iterator[bool]:
    """Hold the lock of cache entry `target` for the block, which gets whether a good entry is there to
    reuse; else it builds and publishes one, and a second process waiting for the lock then reuses that.
    A broken entry (`problem` says why) is discarded first, so nothing ever trains from half of one.
    `collective`: every process of a multi-process run calls this and the build may need them all, so the
    main process alone locks and checks, and every process gets its answer."""
    dist = process_context()
    if collective and not dist.is_main:
        yield dist.broadcast(None)
        return
    with entry_lock(target):
        why = problem(target) if target.exists() else None
        if why is not None:
            discard_broken(target, why)
        ready = target.exists()
        yield dist.broadcast(ready) if collective else ready
