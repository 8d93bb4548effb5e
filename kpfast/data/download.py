"""Fetch the official COCO 2017 person-keypoint data into the layout the loader reads.

    python -m kpfast.data.coco download ROOT [--split val|train|all] [--annotations-only]

After it, ``ROOT/annotations/person_keypoints_{val,train}2017.json`` and ``ROOT/{val,train}2017/``
exist (the layout ``kpfast.data.coco.resolve_coco_paths`` reads), so ``--data_root ROOT`` works.

Each archive is downloaded to ``ROOT/NAME.zip.part`` with a progress bar; an interrupted transfer
resumes with an HTTP Range request, both within the run (a few retries) and on the next run.
The finished file must have the expected size and MD5 before it is renamed to ``ROOT/NAME.zip``
and extracted (zipfile checks each member's CRC while reading). Extraction refuses to overwrite
an existing file whose content differs. A stamp ``ROOT/.NAME.complete`` makes a rerun skip an
archive already extracted; the archive itself is deleted after extraction unless
``--keep-archives``.

Every size and duration is bounded: the server's bytes are read only up to the archive's known
size (a mirror without Content-Length is stopped there), and a transfer slower than
``MIN_THROUGHPUT`` over ``STALL_SECONDS`` is given up like a dropped connection.

Checksums: cocodataset.org publishes no checksums. The MD5s below are the ones independent
projects (e.g. MLCommons' and PaddleDetection's COCO scripts) verify against, and agree with one
another; the sizes are those files' sizes, which the server's Content-Length must also match.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import shutil
import socket
import time
import types
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DEFAULT_BASE_URL = "http://images.cocodataset.org/"
BASE_URL_ENV = "KPFAST_COCO_URL"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One downloadable zip: its path under the base URL, size in bytes and MD5."""

    url_path: str
    size: int
    md5: str

    @property
    def filename(self) -> str:
        return PurePosixPath(self.url_path).name


ARCHIVES = {
    "annotations": Archive("annotations/annotations_trainval2017.zip", 252_907_541,
                           "f4bbac642086de4f52a3fdda2de5fa2c"),
    "val": Archive("zips/val2017.zip", 815_585_330, "442b8da7639aecaf257c1dceb8ba8c80"),
    "train": Archive("zips/train2017.zip", 19_336_861_798, "cced6f7f71b7629ddf16f17bbcfab6b2"),
}
SPLITS = {"val": ("val",), "train": ("train",), "all": ("val", "train")}


class DownloadError(ValueError):
    """A download or verification failure; the message names the file and what to do."""


def plan(split: str, annotations_only: bool) -> list[tuple[str, list[str] | None]]:
    """(archive key, members to extract or None for all) in download order.

    Only the person-keypoint annotation files of the chosen splits are extracted from the
    annotations archive (the loader reads nothing else; the rest is ~1 GB of other tasks' labels).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    splits = SPLITS[split]
    steps: list[tuple[str, list[str] | None]] = [
        ("annotations", [f"annotations/person_keypoints_{s}2017.json" for s in splits])]
    if not annotations_only:
        steps += [(s, None) for s in splits]
    return steps


def download_coco(root, split: str = "val", annotations_only: bool = False, *, base_url: str | None = None,
                  archives: dict[str, Archive] | None = None, keep_archives: bool = False, retries: int = 3,
                  progress: bool = True, timeout: float = 60.0) -> Path:
    """Download, verify and extract the archives ``split`` needs into ``root``; returns ``root``."""
    root = Path(root)
    archives = ARCHIVES if archives is None else archives
    base_url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    if not base_url.endswith("/"):
        base_url += "/"
    root.mkdir(parents=True, exist_ok=True)
    for key, members in plan(split, annotations_only):
        archive = archives[key]
        stamp = root / f".{archive.filename}.complete"
        if _stamp_covers(stamp, archive, members, root):
            print(f"{archive.filename}: already downloaded and extracted in {root}", flush=True)
            continue
        zip_path = fetch(archive, base_url, root, retries=retries, progress=progress, timeout=timeout)
        extracted = extract(zip_path, root, members)
        previous = _read_stamp(stamp, archive)
        done = sorted(set(previous or []) | set(extracted))
        stamp.write_text(json.dumps({"md5": archive.md5, "members": done}))
        if not keep_archives:
            zip_path.unlink()
        print(f"{archive.filename}: {len(extracted)} files in {root}", flush=True)
    return root


def fetch(archive: Archive, base_url: str, root: Path, *, retries: int = 3, progress: bool = True,
          timeout: float = 60.0) -> Path:
    """``root/NAME.zip``, verified: reused if already complete, else downloaded (resuming a .part)."""
    final = root / archive.filename
    if final.exists():
        _verify(final, archive, on_mismatch=(
            f"{final} exists but is not the expected archive ({{why}}): delete or move it, then rerun"),
            error=FileExistsError)
        return final
    part = root / (archive.filename + ".part")
    url = base_url + archive.url_path
    _download_part(url, part, archive.size, None, retries=retries, progress=progress, timeout=timeout)
    _verify(part, archive, on_mismatch=f"{part}: {{why}}; the file was deleted, rerun to download it again",
            error=DownloadError, delete_on_mismatch=True)
    os.replace(part, final)
    return final


def download_file(url: str, destination: Path, *, sha256_prefix: str | None = None, limit: int,
                  retries: int = 3, progress: bool = True, timeout: float = 60.0) -> Path:
    """``destination``, downloaded from ``url`` unless already there, through ``destination.part``
    (resumed with a Range request, within the run and on the next), at most ``limit`` bytes, and
    checked against ``sha256_prefix`` (the start of its SHA-256, as published file names carry it)
    before it is renamed into place. An existing ``destination`` is checked too, never replaced."""
    destination = Path(destination)
    if destination.exists():
        _check_sha256(destination, sha256_prefix, f"{destination} exists but is not the published file "
                      "({why}): delete or move it, then rerun", FileExistsError)
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    _download_part(url, part, None, limit, retries=retries, progress=progress, timeout=timeout)
    _check_sha256(part, sha256_prefix, f"{part}: {{why}}; the file was deleted, rerun to download it again",
                  DownloadError, delete=True)
    os.replace(part, destination)
    return destination


def _check_sha256(path: Path, prefix: str | None, message: str, error: type[Exception], delete: bool = False) -> None:
    if prefix is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    if not digest.hexdigest().startswith(prefix.lower()):
        if delete:
            path.unlink()
        raise error(message.format(why=f"SHA-256 {digest.hexdigest()[:16]}..., expected {prefix}..."))


def _download_part(url: str, part: Path, size: int | None, limit: int | None, *, retries: int, progress: bool,
                   timeout: float) -> None:
    """Complete ``part`` from ``url`` with ``retries`` retries of a dropped or stalled transfer."""
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, size, limit, progress=progress, timeout=timeout)
            return
        except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError,
                urllib.error.URLError) as exc:
            if isinstance(exc, urllib.error.HTTPError) or attempt == retries:
                have = part.stat().st_size if part.exists() else 0
                of = f" of {size}" if size is not None else ""
                raise DownloadError(f"downloading {url} failed ({_reason(exc)}); {have}{of} bytes "
                                    f"kept in {part}: rerun the same command to resume") from None
            time.sleep(min(2.0 ** attempt, 10.0))


def _progress_bar(total: int | None, initial: int, label: str, enabled: bool):
    """tqdm's bar (a trainer dependency); without tqdm, none: downloading must not need it."""
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
    if not enabled:
        return contextlib.nullcontext(types.SimpleNamespace(update=lambda n: None))
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=True)


def _transfer(url: str, part: Path, size: int | None, limit: int | None, *, progress: bool, timeout: float) -> None:
    """Append the missing bytes of ``url`` to ``part`` (Range request when ``part`` is non-empty).

    ``size``: the file's known size (an archive's), which the server must match; else ``limit``,
    the most this download may write, so that a server sending no (or a false) Content-Length
    cannot fill the disk."""
    cap = size if size is not None else limit
    offset = part.stat().st_size if part.exists() else 0
    if offset > cap:  # our own temporary file, longer than the file can be: cannot be resumed
        part.unlink()
        offset = 0
    if size is not None and offset == size:
        return
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if offset and response.status != 206:  # the server ignored the Range header: start over
            offset = 0
        length = _content_length(response, url)
        if size is not None and length is not None and length != size - offset:
            raise DownloadError(f"{url}: the server sends {length + offset} bytes, expected {size}: "
                                f"the file on the server is not the expected archive (wrong --base-url?)")
        if size is None and length is not None and length + offset > limit:
            raise DownloadError(f"{url}: the server sends {length + offset} bytes, more than the {limit} "
                                f"this download may take: not the expected file")
        total = size if size is not None else (None if length is None else length + offset)
        with open(part, "ab" if offset else "wb") as out, _progress_bar(total, offset, part.name[:-5],
                                                                          progress) as bar:
            received = offset
            watch = _ThroughputWatch(url)
            while True:
                # read1: whatever has arrived (read(CHUNK) would wait for a whole chunk from a
                # server trickling bytes, and the throughput check would never run).
                chunk = response.read1(min(CHUNK, cap - received + 1))
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
                if received > cap:  # no (or a false) Content-Length: stop at the known size or limit
                    out.close()
                    part.unlink()
                    what = f"the archive's {size}" if size is not None else f"the {limit} this download may take"
                    raise DownloadError(f"{url}: the server sent more than {what} bytes "
                                        f"(no Content-Length); {part} was deleted: check --base-url")
                watch.update(received)
            out.flush()
            os.fsync(out.fileno())
        if total is not None and received < total:  # a server that closes early
            raise ConnectionError(f"connection closed after {received} bytes")


# A transfer slower than MIN_THROUGHPUT bytes per second over a whole STALL_SECONDS window is
# given up (and retried): a server trickling a byte every 20-30 s never hits the socket timeout.
MIN_THROUGHPUT = 16 * 1024
STALL_SECONDS = 120.0


class DownloadStalled(ConnectionError):
    """The server sends too slowly; caught by fetch's retries like a dropped connection."""


class _ThroughputWatch:
    def __init__(self, url: str):
        self.url = url
        self.window_start = time.monotonic()
        self.window_bytes: int | None = None

    def update(self, received: int) -> None:
        now = time.monotonic()
        if self.window_bytes is None:
            self.window_bytes = received
        if now - self.window_start >= STALL_SECONDS:
            rate = (received - self.window_bytes) / (now - self.window_start)
            if rate < MIN_THROUGHPUT:
                raise DownloadStalled(f"{self.url} sends {rate:.0f} B/s, below {MIN_THROUGHPUT} B/s over "
                                      f"{STALL_SECONDS:g} s")
            self.window_start, self.window_bytes = now, received


def _content_length(response, url: str) -> int | None:
    """The Content-Length header as an int, None when absent; anything else names the URL."""
    text = response.headers.get("Content-Length")
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit() or len(text) > 18:
        raise DownloadError(f"{url}: the server sent an invalid Content-Length {text[:40]!r}; check --base-url")
    return int(text)


def _verify(path: Path, archive: Archive, *, on_mismatch: str, error: type[Exception],
            delete_on_mismatch: bool = False) -> None:
    size = path.stat().st_size
    why = None
    if size != archive.size:
        why = f"{size} bytes, expected {archive.size}"
    else:
        md5 = file_md5(path)
        if md5 != archive.md5:
            why = f"MD5 {md5}, expected {archive.md5}"
    if why is not None:
        if delete_on_mismatch:
            path.unlink()
        raise error(on_mismatch.format(why=why))


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def extract(zip_path: Path, root: Path, members: list[str] | None = None) -> list[str]:
    """Extract ``members`` (all files when None) under ``root``; returns the names extracted.

    A file already present with the same size and CRC-32 is kept; one that differs is never
    overwritten (FileExistsError naming it). zipfile verifies each member's CRC while reading.
    """
    root_resolved = root.resolve()
    with zipfile.ZipFile(zip_path) as archive:
        infos = {info.filename: info for info in archive.infolist() if not info.is_dir()}
        if members is None:
            names = sorted(infos)
        else:
            missing = [m for m in members if m not in infos]
            if missing:
                raise DownloadError(f"{zip_path} lacks {', '.join(missing)}: not the expected archive")
            names = list(members)
        for name in names:
            info = infos[name]
            target = (root / name).resolve()
            if root_resolved not in target.parents:
                raise DownloadError(f"{zip_path}: member {name!r} would be written outside {root}")
            if target.exists():
                if target.stat().st_size == info.file_size and _file_crc32(target) == info.CRC:
                    continue
                raise FileExistsError(f"{target} exists and differs from {name} in {zip_path.name}: "
                                      f"move it away (or choose another ROOT), then rerun")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".extracting")
            try:
                with archive.open(info) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            except zipfile.BadZipFile as exc:
                tmp.unlink(missing_ok=True)
                raise DownloadError(f"{zip_path}: {name} is corrupt ({exc}); delete {zip_path} and rerun") from None
            os.replace(tmp, target)
    return names


def _file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            crc = zlib.crc32(block, crc)
    return crc


def _read_stamp(stamp: Path, archive: Archive) -> list[str] | None:
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    return data.get("members") if data.get("md5") == archive.md5 else None


def _stamp_covers(stamp: Path, archive: Archive, wanted: list[str] | None, root: Path) -> bool:
    """True when a previous run extracted every wanted member of this archive and they still exist."""
    done = _read_stamp(stamp, archive)
    if done is None:
        return False
    names = done if wanted is None else wanted
    return set(names) <= set(done) and all((root / n).exists() for n in names)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kpfast.data.coco",
                                     description="COCO 2017 person keypoints: data tools")
    commands = parser.add_subparsers(dest="command", required=True)
    dl = commands.add_parser("download", help="download, verify and extract the official COCO 2017 archives",
                             description=__doc__.split("\n\n")[0])
    dl.add_argument("root", help="dataset root; afterwards pass it as --data_root")
    dl.add_argument("--split", choices=sorted(SPLITS), default="val",
                    help="val: 5k images, 0.8 GB; train: 118k images, 19.3 GB; all: both (default: val)")
    dl.add_argument("--annotations-only", action="store_true",
                    help="only the person keypoint annotations (0.25 GB archive)")
    dl.add_argument("--keep-archives", action="store_true", help="keep the .zip files after extraction")
    dl.add_argument("--base-url", default=None,
                    help=f"mirror to download from (default: ${BASE_URL_ENV} or {DEFAULT_BASE_URL})")
    dl.add_argument("--retries", type=int, default=3, help="resume attempts per archive within one run")
    return parser


def main(argv=None) -> int:
    from kpfast.cli import run_cli

    def _main(argv):
        args = build_parser().parse_args(argv)
        try:
            download_coco(args.root, args.split, args.annotations_only, base_url=args.base_url,
                          keep_archives=args.keep_archives, retries=args.retries)
        except OSError as exc:  # FileExistsError, disk full, permissions: one line, not a traceback
            raise DownloadError(str(exc) if str(exc) else repr(exc)) from None
        return 0

    return run_cli(_main, argv)
