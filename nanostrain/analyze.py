"""Offline SXDM analysis on dask.distributed (``nanostrain analyze UID``).

The 5D strain analysis of a raw SXDM run (`callbacks.sxdm.SxdmCallback`, analysis
``sxdm_strain``) is a streaming reduction whose state is sums (`analysis.sxdm.SxdmAccumulator`),
so it splits over frames: each task reduces a chunk of the run's frames to a partial
state, the partial states are merged (``a + b``: exact, sums of different raster cells
add exactly), and the maps are made from the merged state by the same callback, with
the same parameters, as live.

* Tasks: chunks of ``frames_per_task`` consecutive frames (whole raster lines when a line
  fits; about ``task_bytes``, default 256 MiB, of frames as stored). A task reads its
  frames itself (`callbacks.frames.TiledFrameSource` over the StreamResource/StreamDatum
  documents cut to the chunk): from the detector file where its worker sees it
  (`callbacks.frames.local_file`), else through the catalog, connecting with the URL and
  API key it is given (workers get plain data, never a live client). Each frame is
  screened as live (`callbacks.sxdm.screen_frame`) and added in batches of the analysis's
  ``batch_frames``. Memory per worker: the task's frames (<= task_bytes, read as one
  block) + one batch + the accumulator state (n_theta x ny x nx x 32 bytes) + the
  detector weights (16 bytes per ROI pixel).
* Reduction: as tasks complete, partial states are merged pairwise on the cluster (a
  tree built as results arrive); the client receives one state.
* Publication: the run's recorded ``sxdm_strain`` analyses are rebuilt from their
  parameters (`replaying.recorded_analyses`, as replay does); each is handed the raw run's
  documents without the frames and, before the raw stop, the merged state
  (`SxdmCallback.adopt`), so its derived run (quality rows, per-angle running maps,
  final maps, registration) is built by the live code. With a writer (``--write``) it
  supersedes the earlier derived run of the same computation (`schema.catalog.SupersedingWriter`).

The cluster is a `distributed.LocalCluster` of ``workers`` single-threaded processes, or
the scheduler at ``scheduler`` (a facility's). Progress: a tqdm bar of frames reduced on
standard error.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from .callbacks.derived import AnalysisCallback, GuardedCallback
from .callbacks.frames import TiledFrameSource, frames_per_block
from .callbacks.sxdm import SxdmCallback, SxdmRaster, screen_frame
from .analysis.sxdm import SxdmAccumulator
from .catalog import connect
from .replaying import recorded_analyses, run_documents
from .schema.catalog import RAW_NODE
from .schema.start import SXDM

logger = logging.getLogger(__name__)

Document = dict[str, Any]
Partial = tuple[SxdmAccumulator, list[dict[str, Any]]]
"""A task's result: its accumulator state and the frame-quality rows of its frames."""

TASK_BYTES = 256 * 2**20
"""Frames (as stored) one task reads and reduces: the bulk of a worker's memory."""

CONNECT_TIMEOUT_S = 10.0
"""How long to try a scheduler address before saying it is unreachable."""


class AnalyzeError(ValueError):
    """A run `analyze` cannot work on (not SXDM, no frames); the message says why."""


class SchedulerUnreachable(ConnectionError):
    """No dask scheduler answered at the address given."""


@dataclass(frozen=True)
class CatalogAccess:
    """How a task reaches the run through the catalog: plain data, no client."""

    url: str
    api_key: str | None
    uid: str


@dataclass(frozen=True)
class FrameTask:
    """One task: the frames of ``pieces`` (StreamResource, StreamDatum cut to the task)."""

    raster: SxdmRaster
    frame_shape: tuple[int, int]
    stream: str
    pieces: tuple[tuple[Document, Document], ...]
    catalog: CatalogAccess
    batch_frames: int
    block_bytes: int

    @property
    def seq_nums(self) -> list[int]:
        return [seq for _, datum in self.pieces for seq in range(datum["seq_nums"]["start"], datum["seq_nums"]["stop"])]


@dataclass
class SxdmJob:
    """A raw SXDM run made ready for `reduce`: its documents, analyses and tasks."""

    uid: str
    documents: list[tuple[str, Document]]
    analyses: list[SxdmCallback]
    tasks: list[FrameTask]

    @property
    def n_frames(self) -> int:
        return sum(len(task.seq_nums) for task in self.tasks)


class CatalogRun:
    """The raw run, connected to on first use: a task whose frames are all in files it
    sees never opens a connection."""

    def __init__(self, access: CatalogAccess):
        self.access = access
        self._client = None

    def __getitem__(self, key: str):
        if self._client is None:
            self._client = connect(self.access.url, api_key=self.access.api_key)
        return self._client[RAW_NODE][self.access.uid][key]

    def close(self) -> None:
        if self._client is not None:
            self._client.context.close()


def reduce_frames(task: FrameTask) -> Partial:
    """Reduce the task's frames (runs on a worker): read them (file, else catalog), screen
    each as live, add the usable ones in batches; the partial state and quality rows."""
    accumulator = task.raster.accumulator(task.frame_shape, n_threads=1)  # one thread per worker
    rows: list[dict[str, Any]] = []
    batch: list[tuple[int, int, int, np.ndarray]] = []
    run = CatalogRun(task.catalog)
    source = TiledFrameSource(run, block_bytes=task.block_bytes)

    def flush() -> None:
        if batch:
            index = np.array([item[:3] for item in batch], dtype=np.intp)
            accumulator.add_many(index[:, 0], index[:, 1], index[:, 2], np.stack([item[3] for item in batch]))
            batch.clear()

    try:
        for resource, datum in task.pieces:
            for seq_num, frame in source.iter_frames(task.stream, resource, datum):
                row, item = screen_frame(accumulator, task.raster, seq_num, frame)
                if row is not None:
                    rows.append(row)
                if item is not None:
                    batch.append(item)
                if len(batch) >= task.batch_frames:
                    flush()
        flush()
    finally:
        source.close()
        run.close()
    return accumulator, rows


def merge(a: Partial, b: Partial) -> Partial:
    """Two partial results as one (`SxdmAccumulator.__add__`; quality rows joined)."""
    return a[0] + b[0], a[1] + b[1]


def plain_document(doc: Any) -> Document:
    """A document as a plain dict (the catalog's exported documents are read-only)."""
    return doc.to_dict() if hasattr(doc, "to_dict") else dict(doc)


def frame_pieces(
    datums: list[tuple[Document, Document]], frames_per_task: int
) -> list[tuple[tuple[Document, Document], ...]]:
    """The (StreamResource, StreamDatum) pairs of a run cut into tasks of at most
    ``frames_per_task`` consecutive frames (one frame per seq_num; a datum spanning two
    tasks is cut in two)."""
    tasks: list[tuple[tuple[Document, Document], ...]] = []
    current: list[tuple[Document, Document]] = []
    count = 0
    for resource, datum in datums:
        first, stop, index = datum["seq_nums"]["start"], datum["seq_nums"]["stop"], datum["indices"]["start"]
        if stop - first != datum["indices"]["stop"] - index:
            raise AnalyzeError(f"StreamDatum {datum['uid']}: one frame per event is needed")
        lo = first
        while lo < stop:
            take = min(stop - lo, frames_per_task - count)
            piece = {**datum, "seq_nums": {"start": lo, "stop": lo + take},
                     "indices": {"start": index + lo - first, "stop": index + lo - first + take}}
            current.append((resource, piece))
            count, lo = count + take, lo + take
            if count == frames_per_task:
                tasks.append(tuple(current))
                current, count = [], 0
    if current:
        tasks.append(tuple(current))
    return tasks


def plan(run, catalog_url: str, api_key: str | None, derived=None, task_bytes: int = TASK_BYTES) -> SxdmJob:
    """The analysis of raw ``run`` (a catalog client) cut into tasks; raises `AnalyzeError`
    for a run that is not SXDM or holds no frames. ``catalog_url``/``api_key``: how tasks
    reach the catalog if their worker does not see the detector files."""
    documents = [(name, plain_document(doc)) for name, doc in run_documents(run)]
    start = documents[0][1]
    if start.get("technique") != SXDM:
        raise AnalyzeError(f"run {start['uid']} is not an SXDM run (technique {start.get('technique')!r}); "
                           "`nanostrain analyze` runs the SXDM strain analysis (use `nanostrain replay` for others)")
    analyses = [a for a in recorded_analyses(run, derived) if isinstance(a, SxdmCallback)]
    first = analyses[0]
    image_key, stream = first.parameters_for(start)["image_key"], first.stream
    if any(a.parameters_for(start)["image_key"] != image_key or a.stream != stream for a in analyses):
        raise AnalyzeError("the recorded sxdm_strain analyses read different frames; analyse them one by one")
    streams = {doc["uid"]: doc for name, doc in documents if name == "descriptor"}
    resources = {doc["uid"]: doc for name, doc in documents if name == "stream_resource"}
    datums = [(resources[doc["stream_resource"]], doc) for name, doc in documents if name == "stream_datum"
              and streams[doc["descriptor"]]["name"] == stream
              and resources[doc["stream_resource"]]["data_key"] == image_key]
    if not datums:
        raise AnalyzeError(f"run {start['uid']} recorded no {image_key!r} frames in its {stream!r} stream")
    key = streams[datums[0][1]["descriptor"]]["data_keys"][image_key]
    frame_shape = tuple(int(n) for n in key["shape"][-2:])
    per_task = frames_per_block(frame_shape, key.get("dtype_numpy", "<f8"), task_bytes)
    raster = SxdmRaster.from_start(start)
    if per_task >= raster.shape[1]:
        per_task -= per_task % raster.shape[1]  # whole raster lines
    access = CatalogAccess(catalog_url, api_key, start["uid"])
    block = per_task * int(np.prod(frame_shape)) * np.dtype(key.get("dtype_numpy", "<f8")).itemsize
    tasks = [FrameTask(raster, frame_shape, stream, pieces, access, first.batch_frames, block)
             for pieces in frame_pieces(datums, per_task)]
    return SxdmJob(start["uid"], documents, analyses, tasks)


def reduce(job: SxdmJob, client=None, progress: bool | None = None) -> Partial:
    """Run the job's tasks on dask ``client`` (a `distributed.Client`) and merge their
    partial states as they complete (pairwise, on the cluster); ``client=None`` reduces
    them one after the other in this process (the single-process reference).
    ``progress``: a tqdm bar of frames on standard error (None: only on a terminal)."""
    bar = tqdm(total=job.n_frames, unit="frame", desc="analyze", file=sys.stderr, mininterval=0.5,
               disable=None if progress is None else not progress, dynamic_ncols=True)
    try:
        if client is None:
            result = None
            for task in job.tasks:
                partial = reduce_frames(task)
                result = partial if result is None else merge(result, partial)
                bar.update(len(task.seq_nums))
            return result
        return _tree_reduce(job, client, bar)
    finally:
        bar.close()


def _tree_reduce(job: SxdmJob, client, bar: tqdm) -> Partial:
    from distributed import as_completed

    futures = client.map(reduce_frames, job.tasks, pure=False)
    frames = {future.key: len(task.seq_nums) for future, task in zip(futures, job.tasks)}
    completed = as_completed(futures, loop=client.loop)
    del futures  # each result is released once merged
    pending = None
    for future in completed:
        if future.status == "error":
            completed.clear()
            future.result()  # raises the task's error (e.g. a detector file it could not read)
        bar.update(frames.get(future.key, 0))
        if pending is None:
            pending = future
        else:
            completed.add(client.submit(merge, pending, future, pure=False))
            pending = None
    return pending.result()


def publish_adopted(documents: list[tuple[str, Document]], analyses: list[AnalysisCallback],
                    adopt: Callable[[AnalysisCallback], None], writer=None) -> list[tuple[str, Document]]:
    """The derived runs of ``analyses``, each made by the live code from the raw run's
    ``documents`` without the frames (they were reduced on the cluster) and the cluster's
    result, which ``adopt(analysis)`` hands to it before the raw stop; a failing adoption
    fails that derived run with the reason, as live. ``writer`` (e.g. a
    `SupersedingWriter`) gets each document too. Returns the documents published."""
    published: list[tuple[str, Document]] = []

    def emit(name: str, doc: Document) -> None:
        published.append((name, doc))
        if writer is not None:
            writer(name, doc)

    for analysis in analyses:
        analysis.subscribe(emit)
        guard = GuardedCallback(analysis)
        for name, doc in documents:
            if name == "stop" and analysis.active:
                try:
                    adopt(analysis)
                except Exception as error:  # noqa: BLE001 - the derived run fails with the reason, as live
                    logger.exception("%s of %s failed", analysis.analysis, doc["run_start"])
                    analysis.abandon(f"{analysis.analysis} failed: {type(error).__name__}: {error}")
            if name != "stream_datum":
                guard(name, doc)
    return published


def publish(job: SxdmJob, partial: Partial, writer=None) -> list[tuple[str, Document]]:
    """The derived runs of the job's analyses, made by each from the merged ``partial``
    (`SxdmCallback.adopt`) by `publish_adopted`."""
    accumulator, rows = partial
    seq_nums = [seq for task in job.tasks for seq in task.seq_nums]
    return publish_adopted(job.documents, job.analyses, lambda analysis: analysis.adopt(accumulator, rows, seq_nums),
                           writer)


def analyze(run, catalog_url: str, api_key: str | None = None, client=None, derived=None, writer=None,
            progress: bool | None = None, task_bytes: int = TASK_BYTES) -> list[tuple[str, Document]]:
    """`plan`, `reduce` (on dask ``client``, or in this process if None) and `publish`:
    the SXDM derived run(s) of raw ``run``, as documents."""
    job = plan(run, catalog_url, api_key, derived, task_bytes)
    return publish(job, reduce(job, client, progress), writer)


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int = 2) -> Iterator[Any]:
    """A `distributed.Client` of the scheduler at ``scheduler``, or of a `LocalCluster` of
    ``workers`` single-threaded worker processes (closed at the end); raises
    `SchedulerUnreachable` if no scheduler answers. The client is not made dask's default
    scheduler: Tiled computes its arrays with dask, and a catalog served in this process
    (``--data-dir``) would otherwise send its own reads to the cluster."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError) as error:
            raise SchedulerUnreachable(f"no dask scheduler answered at {scheduler} within "
                                       f"{CONNECT_TIMEOUT_S:.0f} s ({error})") from error
        with client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster, set_as_default=False) as client:
        yield client
