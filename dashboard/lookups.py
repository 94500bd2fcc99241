"""Lookups for the dashboard: one at a time per server, under a time limit, torch imported only here,
only when the first lookup starts.

A lookup runs in one worker thread; a page waits for it at most TIME_LIMIT_S and then reports a
timeout (the lookup finishes in the background and frees the worker; a new one waits for that).
A second lookup while one runs is refused with a message rather than queued: it takes seconds, and
a visitor can simply press the button again.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, TimeoutError

TIME_LIMIT_S = 60
SHOWN = 5                       # units per layer on the page

_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facet-atlas-lookup")
_busy = threading.Lock()
_loaded: dict[tuple[str, str], object] = {}     # (database, run) -> Lookup: the model stays loaded


class LookupRefused(Exception):
    """A lookup that did not run (busy, too slow, a bad image); the message is for the visitor."""


def look_up(store: str, database: str, run_id: str, image: bytes | None = None, name: str = "the upload",
            image_id: int | None = None):
    """The precompute.lookup Result of one image: uploaded bytes, or an image of the store's dataset by id
    (`database`: the store's atlas.duckdb the pages read, which the lookup reads through the same connection)."""
    if not _busy.acquire(blocking=False):
        raise LookupRefused("Another lookup is running on this server; try again in a moment.")
    try:
        future = _worker.submit(_run, store, database, run_id, image, name, image_id)
    except BaseException:
        _busy.release()
        raise
    future.add_done_callback(lambda _: _busy.release())
    try:
        return future.result(timeout=TIME_LIMIT_S)
    except TimeoutError:
        raise LookupRefused(f"The lookup took longer than {TIME_LIMIT_S} s and was given up.") from None


def _run(store: str, database: str, run_id: str, image: bytes | None, name: str, image_id: int | None):
    from dashboard.sql import cursor_for
    from precompute.core.errors import AtlasError
    from precompute import Lookup
    try:
        lookup = _loaded.get((database, run_id))
        if lookup is None:
            _loaded.clear()
            lookup = _loaded[database, run_id] = Lookup(store, run_id, connect=lambda: cursor_for(database))
        pixels = lookup.pixels_of_bytes(image, name) if image is not None else lookup.pixels_of_id(image_id)
        return lookup(pixels[None], [name if image is not None else f"image {image_id}"], top=SHOWN)[0]
    except AtlasError as exc:   # a bad image, an id out of range: the visitor's to fix
        raise LookupRefused(str(exc)) from None

