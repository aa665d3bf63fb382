"""Removing token store entries (data/store.py) that nothing uses any more, so that a store does not
grow by a corpus's size each time its data or tokenizer change.

- A workspace's own store (WS/store) keeps only the entries its latest run used: every entry a run
  finds or builds is stamped as used (store.ensure_corpus sets its manifest's mtime), and after the run
  has its data, training/run.py removes the entries not stamped since the run began. Only the holder of
  the workspace lock does this, and only in WS/store.
- A shared store (--data-store DIR) is never pruned by a run: `seqtool tokenize FILES -t TOK --format
  store -o DIR --prune` removes the other entries of DIR built from any of FILES (their older contents,
  another tokenizer), and keeps the other corpora's.

An entry is renamed aside (.KEY.XXXXXXXX.tmp) before it is deleted, so a reader never maps half of one,
and a removal cut short by a kill leaves a temporary directory that the workspace lock clears.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

from seqtool.data.store import MANIFEST

ENTRY_NAME = re.compile(r"[0-9a-f]{32}")  # store.entry_path: the first 32 hex digits of the key
# how much older than the run's start an entry's stamp must be to count as unused: room for file
# systems that keep mtimes to the second (or two, FAT), so that an entry this run used is never taken
SETTLE_NS = 3 * 10**9


def entries(root: str | Path) -> list[Path]:
    """The entry directories of the store directory `root` (none if it does not exist)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and ENTRY_NAME.fullmatch(p.name))


def remove_entry(entry: Path) -> int:
    """Remove a store entry (renamed aside first); the bytes it held."""
    size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
    aside = entry.with_name(f".{entry.name}.{uuid.uuid4().hex[:8]}.tmp")  # lock.TEMP_NAME
    os.rename(entry, aside)
    shutil.rmtree(aside, ignore_errors=True)
    return size


def prune_unused(root: str | Path, since_ns: int) -> list[tuple[Path, int]]:
    """Remove the entries of a workspace's store `root` not used since `since_ns` (time.time_ns() when
    the run began; the caller holds the workspace lock); [(entry, bytes)] removed."""
    removed = []
    for entry in entries(root):
        try:
            used = (entry / MANIFEST).stat().st_mtime_ns
        except FileNotFoundError:  # not an entry a run could use
            used = 0
        if used < since_ns - SETTLE_NS:
            removed.append((entry, remove_entry(entry)))
    return removed


def prune_files(root: str | Path, keep: Sequence[Path], paths: Sequence[str]) -> list[tuple[Path, int]]:
    """Remove the entries of the store directory `root`, other than those in `keep`, built from any of
    the files `paths` (the paths their manifests record); [(entry, bytes)] removed. Entries whose manifest
    cannot be read are kept."""
    wanted = {str(Path(p).resolve()) for p in paths}
    kept = {Path(k).resolve() for k in keep}
    removed = []
    for entry in entries(root):
        if entry.resolve() in kept:
            continue
        try:
            sources = json.loads((entry / MANIFEST).read_text(encoding="utf-8")).get("sources", [])
            built_from = {s.get("path") for s in sources if isinstance(s, dict)}
        except (OSError, ValueError, AttributeError):
            continue
        if built_from & wanted:
            removed.append((entry, remove_entry(entry)))
    return removed


def describe_removed(removed: list[tuple[Path, int]], why: str) -> str:
    """One log line for the entries removed."""
    total = sum(size for _, size in removed)
    names = ", ".join(entry.name[:12] for entry, _ in removed)
    return (f"token store: removed {len(removed)} {'entry' if len(removed) == 1 else 'entries'} ({names}; "
            f"{total / 1e6:,.1f} MB) from {removed[0][0].parent}: {why}")
