"""The span store: labelled digits added after MNIST, as numbered spans under the data root.

    <data_root>/spans/open/<utc-time>-<uuid>.npz   one digit each: the OPEN span, appended to without a lock
    <data_root>/spans/span-0001/                   a SEALED span: images.npy, labels.npy, records.jsonl and
                                                   manifest.json, written last: the seal mark
    <data_root>/spans/.lock                        flock held by seal, add and drop

Every file appears whole (temporary name, fsync, rename), so a run never sees a half-written digit or
span: a span directory without manifest.json is ignored by readers and removed by the next seal/add/drop.
Span numbers start at 1 (MNIST is span 0) and only grow, even after a drop, so a number in ML Metadata
always means the same digits. Each digit's split comes from its pixels alone (``split_of``): the same
image can never be tested on in one span and trained on in another.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import io
import json
import logging
import os
import re
import shutil
import time
import uuid
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from components.data import span_files
from components.data.span_checks import (SIZE, SOURCE_MNIST, SpanError, SpanInUseError, check_batch, check_image,
                                    check_label, check_source, check_version, now, npy_bytes, per_label, split_of)
from components.data.span_files import TEMP_SUFFIX, atomic_write, fsync_dir, locked

__all__ = ["SIZE", "SOURCE_MNIST", "SpanError", "SpanInUseError", "SpanInfo", "SpanStore", "check_source", "split_of"]

MANIFEST = "manifest.json"
_SPAN_DIR = re.compile(r"^span-(\d{4,})$")
_STALE_TEMP_SECONDS = 3600  # an append's temporary file older than this was left by a crash
_LAST_NUMBER = ".last_span"  # the highest number ever given, so a dropped span's number is never reused


@dataclasses.dataclass(frozen=True)
class SpanInfo:
    number: int
    source: str
    count: int
    per_label: Dict[int, int]
    sealed_at: str
    sha256: str
    path: str
    origin: str = ""


class SpanStore:
    """The spans under ``data_root``. With ``metadata_path`` (the pipeline's ML Metadata SQLite file),
    ``drop`` refuses a span that runs used unless forced."""

    def __init__(self, data_root: str, *, metadata_path: Optional[str] = None) -> None:
        self.data_root = os.fspath(data_root)
        self.spans_dir = span_files.join(self.data_root, "spans")
        self.open_dir = span_files.join(self.spans_dir, "open")
        self.lock_path = span_files.join(self.spans_dir, ".lock")
        self.metadata_path = metadata_path

    # ---- the open span --------------------------------------------------------------------------

    def append(self, image: np.ndarray, label: int, *, answer: Optional[int] = None,
               model_version: Optional[int] = None, source: str = "feedback") -> str:
        """One labelled digit into the open span, durably; returns its record id."""
        check_image(image)
        label = check_label(label)
        answer = check_label(answer, "answer (the model's digit)", allow_none=True)
        check_version(model_version)
        check_source(source)
        self._writable()
        stamp = datetime.datetime.now(datetime.timezone.utc)
        record_id = f"{stamp:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:12]}"
        buffer = io.BytesIO()
        np.savez(buffer, image=image, label=np.int64(label), answer=np.int64(answer),
                 model_version=np.int64(-1 if model_version is None else model_version),
                 time=np.str_(stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")), source=np.str_(source))
        os.makedirs(self.open_dir, exist_ok=True)
        atomic_write(os.path.join(self.open_dir, record_id + ".npz"), buffer.getvalue())
        return record_id

    def _open_names(self) -> List[str]:
        return sorted(n for n in span_files.listdir(self.open_dir) if n.endswith(".npz") and not n.startswith("."))

    def open_count(self) -> int:
        return len(self._open_names())

    def open_per_label(self) -> Dict[int, int]:
        """Digits of the open span per label (reads every file: for listings, not hot paths)."""
        labels = [int(self._read_open(name)["label"]) for name in self._open_names()]
        return per_label(np.asarray(labels, np.int64))

    def _read_open(self, name: str) -> Dict:
        with np.load(os.path.join(self.open_dir, name), allow_pickle=False) as data:
            record = {key: data[key][()] for key in data.files}
        check_image(record["image"], f"{name}: image")
        return record

    # ---- sealing --------------------------------------------------------------------------------

    def seal(self) -> Optional[SpanInfo]:
        """The open span, as a new sealed span (None when it is empty); later appends start a new one."""
        self._writable()
        with self._lock():
            images, labels, records, names = [], [], [], []
            for name in self._open_names():
                try:
                    record = self._read_open(name)
                    label = check_label(int(record["label"]))
                except (OSError, ValueError, KeyError) as error:  # not made by append: set aside, never lost
                    logging.warning("span store: %s is unreadable (%s); renamed to %s.bad", name, error, name)
                    os.replace(os.path.join(self.open_dir, name), os.path.join(self.open_dir, name + ".bad"))
                    continue
                images.append(record["image"])
                labels.append(label)
                answer, version = int(record["answer"]), int(record["model_version"])
                records.append({"id": name[:-4], "answer": None if answer < 0 else answer,
                                "model_version": None if version < 0 else version, "time": str(record["time"]),
                                "source": str(record["source"]), "file": name})
                names.append(name)
            if not names:
                return None
            sources = sorted({r["source"] for r in records})
            info = self._write_span(np.stack(images), np.asarray(labels, np.int64), records,
                                    ",".join(sources), origin=f"open span sealed: {len(names)} digits")
            for name in names:  # only what was sealed: digits appended meanwhile stay open
                os.remove(os.path.join(self.open_dir, name))
            fsync_dir(self.open_dir)
            return info

    def add(self, images: np.ndarray, labels, *, source: str = "import", origin: str = "",
            files: Optional[Sequence[str]] = None) -> SpanInfo:
        """A new sealed span holding ``images`` (uint8 [N, 28, 28]) with ``labels`` (0..9 [N]) at once;
        ``files`` optionally names where each digit came from. Safe to retry: digits identical to a sealed
        span's return that span, unchanged."""
        labels = check_batch(images, labels)
        if files is not None and len(files) != len(images):
            raise ValueError(f"files names {len(files)} sources for {len(images)} images: give one per image")
        check_source(source)
        self._writable()
        stamp = now()
        records = [{"id": f"{i:06d}", "answer": None, "model_version": None, "time": stamp, "source": source,
                    "file": None if files is None else str(files[i])} for i in range(len(images))]
        digest = hashlib.sha256(npy_bytes(images) + npy_bytes(labels)).hexdigest()
        with self._lock():
            for info in self.sealed():  # a retried add: the same digits are that span already
                if info.sha256 == digest:
                    return info
            return self._write_span(images, labels, records, source, origin)

    def _write_span(self, images: np.ndarray, labels: np.ndarray, records: List[Dict], source: str,
                    origin: str) -> SpanInfo:
        """Called under the lock: the span's files, each atomic, then the manifest that seals them."""
        number = self._next_number()
        path = os.path.join(self.spans_dir, f"span-{number:04d}")
        os.mkdir(path)
        images_npy, labels_npy = npy_bytes(images), npy_bytes(labels)
        atomic_write(os.path.join(path, "images.npy"), images_npy, sync_dir=False)
        atomic_write(os.path.join(path, "labels.npy"), labels_npy, sync_dir=False)
        lines = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records)
        atomic_write(os.path.join(path, "records.jsonl"), lines.encode(), sync_dir=False)
        fsync_dir(path)  # the data is durable before the mark that says it is complete
        manifest = {"span": number, "source": source, "count": int(len(labels)),
                    "per_label": {str(k): v for k, v in per_label(labels).items()},
                    "sealed_at": now(), "sha256": hashlib.sha256(images_npy + labels_npy).hexdigest(),
                    "origin": origin}
        atomic_write(os.path.join(path, MANIFEST), json.dumps(manifest, indent=1).encode())
        fsync_dir(self.spans_dir)
        return self._info(manifest, path)

    def _next_number(self) -> int:
        last_path = os.path.join(self.spans_dir, _LAST_NUMBER)
        last = int(span_files.read_bytes(last_path)) if os.path.exists(last_path) else 0
        numbers = [int(m.group(1)) for m in map(_SPAN_DIR.match, span_files.listdir(self.spans_dir)) if m]
        number = max([last] + numbers) + 1
        atomic_write(last_path, str(number).encode())
        return number

    # ---- reading sealed spans (tf.io.gfile for object stores) ------------------------------------

    def sealed(self) -> List[SpanInfo]:
        """Every complete span, by number; directories without a manifest are not spans yet."""
        spans = []
        for name in span_files.listdir(self.spans_dir):
            match = _SPAN_DIR.match(name)
            path = span_files.join(self.spans_dir, name)
            manifest_path = span_files.join(path, MANIFEST)
            if match and span_files.exists(manifest_path):
                try:
                    spans.append(self._info(self._manifest(manifest_path), path))
                except FileNotFoundError:  # dropped while we looked
                    continue
        return sorted(spans, key=lambda info: info.number)

    def load(self, span: int) -> Tuple[np.ndarray, np.ndarray, List[Dict]]:
        """(images uint8 [N, 28, 28], labels int64 [N], records) of a sealed span, checked against its manifest."""
        info = self._find(span)
        images_npy = span_files.read_bytes(span_files.join(info.path, "images.npy"))
        labels_npy = span_files.read_bytes(span_files.join(info.path, "labels.npy"))
        if hashlib.sha256(images_npy + labels_npy).hexdigest() != info.sha256:
            raise SpanError(f"span {span} at {info.path} does not match its manifest's sha256: its files were changed "
                            f"or damaged; restore them or remove the span with 'digits data drop {span} --force'")
        images = np.load(io.BytesIO(images_npy), allow_pickle=False)
        labels = np.load(io.BytesIO(labels_npy), allow_pickle=False)
        text = span_files.read_bytes(span_files.join(info.path, "records.jsonl")).decode()
        return images, labels, [json.loads(line) for line in text.splitlines() if line.strip()]

    def _find(self, span: int) -> SpanInfo:
        for info in self.sealed():
            if info.number == span:
                return info
        numbers = ", ".join(str(info.number) for info in self.sealed()) or "none"
        raise SpanError(f"no sealed span {span} under {self.spans_dir} (sealed spans: {numbers}); "
                        f"'digits data' lists them")

    @staticmethod
    def _manifest(path: str) -> Dict:
        try:
            return json.loads(span_files.read_bytes(path))
        except ValueError as error:
            raise SpanError(f"{path} is not valid JSON ({error}): it was edited by hand; restore it or "
                            f"remove the span with 'digits data drop'") from None

    @staticmethod
    def _info(manifest: Dict, path: str) -> SpanInfo:
        return SpanInfo(number=int(manifest["span"]), source=manifest["source"], count=int(manifest["count"]),
                        per_label={int(k): int(v) for k, v in manifest["per_label"].items()},
                        sealed_at=manifest["sealed_at"], sha256=manifest["sha256"], path=path,
                        origin=manifest.get("origin", ""))

    # ---- dropping -------------------------------------------------------------------------------

    def drop(self, span: Union[int, str], force: bool = False) -> List[str]:
        """Removes sealed span ``span``, or the open span's digits with ``span="open"``. A span that runs
        used (per ``metadata_path``) needs ``force``; returns the runs that used it."""
        self._writable()
        with self._lock():
            if span == "open":
                for name in self._open_names():
                    os.remove(os.path.join(self.open_dir, name))
                if os.path.isdir(self.open_dir):
                    fsync_dir(self.open_dir)
                return []
            info = self._find(int(span))
            runs = []
            if self.metadata_path:
                from components.data import span_usage  # ML Metadata only for drop

                try:
                    runs = span_usage.runs_by_span(self.metadata_path).get(info.number, [])
                except SpanError:
                    if not force:
                        raise
            if runs and not force:
                raise SpanInUseError(info.number, runs)
            os.remove(os.path.join(info.path, MANIFEST))  # incomplete from here on: readers skip it
            fsync_dir(info.path)
            shutil.rmtree(info.path)
            fsync_dir(self.spans_dir)
            return runs

    # ---- the lock and crash leftovers -----------------------------------------------------------

    def _writable(self) -> None:
        if span_files.is_uri(self.data_root):
            raise SpanError(f"data root {self.data_root} is an object store: spans are read there but written on "
                            f"a local or mounted filesystem; point --data-root at the mounted volume")

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """The store lock, with crash leftovers cleaned first."""
        os.makedirs(self.spans_dir, exist_ok=True)
        with locked(self.lock_path):
            self._clean()
            yield

    def _clean(self) -> None:
        """Under the lock: spans without a manifest (a crashed seal, add or drop), temporary files, and open
        digits that the newest span already holds (a seal that crashed before deleting them)."""
        for name in span_files.listdir(self.spans_dir):
            path = os.path.join(self.spans_dir, name)
            if _SPAN_DIR.match(name) and not os.path.exists(os.path.join(path, MANIFEST)):
                logging.warning("span store: removing %s, left incomplete by an interrupted write", path)
                shutil.rmtree(path)
            elif name.endswith(TEMP_SUFFIX):
                os.remove(path)
        now = time.time()
        for name in span_files.listdir(self.open_dir):
            path = os.path.join(self.open_dir, name)
            with contextlib.suppress(FileNotFoundError):  # an append may finish meanwhile
                if name.endswith(TEMP_SUFFIX) and now - os.path.getmtime(path) > _STALE_TEMP_SECONDS:
                    os.remove(path)
        spans = self.sealed()
        if spans and os.path.isdir(self.open_dir):
            with open(os.path.join(spans[-1].path, "records.jsonl")) as f:
                records = [json.loads(line) for line in f if line.strip()]
            held = {r["file"] for r in records if r.get("file") == f"{r.get('id')}.npz"}
            for name in set(self._open_names()) & held:
                os.remove(os.path.join(self.open_dir, name))

