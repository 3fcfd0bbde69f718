"""Curation's worker processes: the raw files read in chunks, each chunk curated in one of
`num_proc` forked processes, the results yielded in file order with a bounded queue."""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pricer.data import raw
from pricer.data.records import curate_chunk
from pricer.data.source import parse_source

if TYPE_CHECKING:
    from pricer.data.curate import CurationSpec


def _chunks(lines: Iterator[tuple[int, bytes]], size: int) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    for item in lines:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _pool(num_proc: int):
    # fork, where there is one: workers start instantly and need no importable __main__ (spawn
    # re-runs the caller's script). They never touch torch, only json and the fast tokenizer.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return context.Pool(num_proc, initializer=_default_signals)


def _default_signals() -> None:
    """A worker dies of SIGTERM and Ctrl-C as a plain process does: the command's own handlers
    (pricer/train/stopping.py), inherited through fork, are the parent's to run."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def chunk_results(
    spec: CurationSpec, tokenizer_source: str, num_proc: int, chunk_size: int, commit: str | None
):
    """(category, ChunkResult, lines read) in file order, from `num_proc` processes."""
    files = raw.check_files(parse_source(spec.source), spec.categories, commit)
    pool = _pool(num_proc) if num_proc > 1 else None
    in_flight: deque = deque()
    try:
        for category, path in zip(spec.categories, files, strict=True):
            chunks = 0
            for index, chunk in enumerate(_chunks(raw.read_lines(path), chunk_size)):
                chunks += 1
                if index == 0:
                    raw.check_schema(path, chunk)
                args = (path, category, chunk, spec.rules, tokenizer_source, spec.count_tokens)
                if pool is None:
                    yield category, curate_chunk(*args), len(chunk)
                    continue
                in_flight.append((category, pool.apply_async(curate_chunk, args), len(chunk)))
                # A bounded queue keeps memory flat: reading never runs far ahead of the workers.
                while len(in_flight) > 2 * num_proc:
                    category_done, pending, n = in_flight.popleft()
                    yield category_done, pending.get(), n
            if chunks == 0:
                raise raw.SourceError(
                    f"{path} holds no records: data.categories asks for {category}; give its file "
                    "records or take it out of data.categories"
                )
        while in_flight:
            category_done, pending, n = in_flight.popleft()
            yield category_done, pending.get(), n
    finally:
        if pool is not None:
            pool.terminate()
