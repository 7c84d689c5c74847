"""Offline TXM-XANES analysis on dask.distributed, block by block (``nanostrain analyze UID``
on a TXM run).

`analysis.txm_reduction.reduce_xanes` holds every energy's projections and volume in
memory: 4 bytes x energies x angles x pixels, 63 GB for a full FXI scan (21 energies x 721
angles x 1024^2). Here the same steps run as tasks on a cluster, each on a bounded piece,
with the intermediate arrays spilled to a chunked store (zarr; workers write distinct
chunks concurrently) and the result equal to `reduce_xanes` on the same frames:

1. *normalise* (a task per energy): darks, flats and the energy's projections read from
   the detector file (`callbacks.frames.TiledFrameSource`; through the catalog where the
   worker does not see the file), each frame screened as live (`screen_frame`), then
   A = -ln[(I - <D>)/(<F> - <D>)] in groups of ``GROUP_ANGLES`` angles -> ``absorbance``;
   returns the energy's mean absorbance (the registration's reference is the largest);
2. *shifts* (a task per energy): `energy_shift` on the picked angles against the
   reference energy; then *register* (a task per energy): `shift_projections` in groups,
   in place;
3. the rotation centre on the client from the reference energy's two opposed
   projections (`find_center`);
4. *reconstruct* (a task per energy and slab of rows): the slab's sinograms with a halo
   of rows (the Gaussian smoothing's reach, rounded up to the reconstruction's batches of
   `analysis.txm.SLICES_PER_BATCH` rows, so every batch is the one the whole volume
   would have) -> `reconstruct`, `smooth_volume`, the halo cut -> ``volumes``;
5. *edge jump* (a task per slab) -> ``edge_jump``, its range; *histogram* (per slab, over
   the global range, added on the client) -> Otsu's threshold (`particle_threshold`);
   *mask* (per slab, with a halo of the erosion's reach) -> ``mask``, its count;
6. *sample* (per slab): the particle's spectra at the global stride of
   `analysis.xanes.whiteline_operator`'s population; the client builds the estimator;
7. *white line* (per slab) -> ``wl_eV``; the particle's values come back for
   `whiteline_statistics` (4 bytes per particle voxel on the client);
8. *publish* (`publish`, on the client): the ``txm_xanes`` derived run made by the live
   callback from the result (`TxmXanesCallback.adopt`), the volumes as lazy arrays over
   the store that `ExternalArrays` copies, slab by slab, into the derived run's HDF5
   file. Besides, *preview* (a task per energy, after 1): the live reducer's preview, the
   central row reconstructed before registration; and every frame's quality row.

Memory per worker (float32): normalise/register ``GROUP_ANGLES`` frames x 3 plus the
darks and flats; reconstruct the slab's sinograms (angles x (slab + 2 halo) x columns)
and volume ((slab + 2 halo) x columns^2, x ~3 while filtering) plus the reconstruction
operator (140 MB at 1024 columns x 721 angles); edge jump, sample and white line
energies x slab x columns^2. Slabs are sized to ``task_bytes`` (default 256 MiB).
Disk: the store holds absorbance (4 x energies x angles x pixels) and volumes
(4 x energies x rows x columns^2) besides the results.

Known difference from the live reducer: a dark or flat set ends when a frame of another
kind arrives; live, a *skipped* projection between two flats does not end the set, here
the plan assumes projections are usable when it cuts the sets (it reads no projection
before the tasks run). An energy with a skipped projection is left out in both.

Units: energies eV, angles degrees, shifts and centre pixels, absorbance -ln T.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import event_model
import numpy as np
from tqdm import tqdm

from .analysis.txm import SLICES_PER_BATCH, find_center, normalize, opposed_pair, reconstruct
from .analysis.txm_reduction import (
    MIN_ENERGIES,
    EnergyPreview,
    XanesOptions,
    XanesReduction,
    edge_jump,
    edge_jump_energies,
    energy_shift,
    jump_histogram,
    particle_mask,
    particle_threshold,
    registration_picks,
    screen_frame,
    shift_projections,
    smooth_volume,
    smoothing_radius,
)
from .analysis.xanes import (
    WhitelineStatistics,
    population_stride,
    whiteline_energy,
    whiteline_operator,
    whiteline_statistics,
)
from .analyze import AnalyzeError, CatalogAccess, CatalogRun, plain_document, publish_adopted
from .callbacks.frames import TiledFrameSource
from .callbacks.txm import TxmXanesCallback, quality_row
from .replaying import recorded_analyses, run_documents
from .schema.start import TXM

Document = dict[str, Any]

GROUP_ANGLES = 8
"""Projections a normalise or register task holds at once (and the store's chunk along angles)."""

TASK_BYTES = 256 * 2**20
"""What one task's slab of volumes may take (bytes), the bulk of a worker's memory."""


@dataclass(frozen=True)
class FrameRef:
    """Where one frame is: its seq_num and the (StreamResource, StreamDatum) cut to it."""

    seq_num: int
    resource: Document
    datum: Document


@dataclass(frozen=True)
class EnergyFrames:
    """The frames that make energy ``index``: its projections by angle index, and the dark
    and flat sets in force when its last projection arrived."""

    index: int
    projections: tuple[tuple[int, FrameRef], ...]
    darks: tuple[FrameRef, ...]
    flats: tuple[FrameRef, ...]


@dataclass(frozen=True)
class TxmJob:
    """A raw TXM run made ready for `reduce`: scan, frames per energy, store, slabs."""

    uid: str
    energies_eV: np.ndarray
    angles_deg: np.ndarray
    frame_shape: tuple[int, int]
    options: XanesOptions
    energy_frames: tuple[EnergyFrames, ...]
    stream: str
    catalog: CatalogAccess
    store: str
    task_bytes: int = TASK_BYTES
    documents: list[tuple[str, Document]] = field(default_factory=list, repr=False)
    analysis: TxmXanesCallback | None = field(default=None, repr=False)
    n_incomplete: int = 0

    @property
    def n_frames(self) -> int:
        return sum(len(e.projections) for e in self.energy_frames)


@dataclass(frozen=True)
class TxmResult:
    """What `reduce` found; the arrays are in the job's store (``absorbance``, ``volumes``,
    ``edge_jump``, ``mask``, ``wl_eV``), only summaries here.

    energies_eV : the energies reduced (complete ones); shifts_px : (n, 2) per energy;
    reference_index, center_px, n_components, statistics : as `XanesReduction`;
    phase_seconds : wall time of each phase (module notes), s; previews : per energy,
    the live reducer's preview (central slice reconstructed before registration);
    quality_rows : the ``frame_quality`` rows of the frames read, by raw seq_num.
    """

    energies_eV: np.ndarray
    shifts_px: np.ndarray
    reference_index: int
    center_px: float
    n_components: int
    statistics: WhitelineStatistics
    store: str
    phase_seconds: dict[str, float]
    previews: tuple[EnergyPreview, ...] = ()
    quality_rows: tuple[dict[str, Any], ...] = ()

    def reduction(self) -> XanesReduction:
        """The result as the live reducer's `XanesReduction`, its volumes (``wl_eV``,
        ``mask``, ``edge_jump``) lazy dask arrays over the store (read as they are used)."""
        import dask.array

        def volume(name: str):
            return dask.array.from_zarr(self.store, component=name)

        return XanesReduction(self.energies_eV, volume("wl_eV"), volume("mask"), volume("edge_jump"), self.shifts_px,
                              self.reference_index, self.center_px, self.n_components, self.statistics)


# ----------------------------------------------------------------------------- planning


def _event_rows(documents: list[tuple[str, Document]], stream: str, keys: Iterable[str]) -> list[tuple[int, dict]]:
    """(seq_num, data of ``keys``) of every event of ``stream``, in seq_num order."""
    names = {doc["uid"] for name, doc in documents if name == "descriptor" and doc["name"] == stream}
    rows = []
    for name, doc in documents:
        events = ([doc] if name == "event" else list(event_model.unpack_event_page(doc)) if name == "event_page"
                  else [])
        rows += [(e["seq_num"], {k: e["data"][k] for k in keys}) for e in events if e["descriptor"] in names]
    return sorted(rows, key=lambda row: row[0])


def _frame_refs(documents: list[tuple[str, Document]], stream: str, image_key: str) -> dict[int, FrameRef]:
    """Every recorded frame of ``image_key`` by seq_num (one frame per event)."""
    names = {doc["uid"] for name, doc in documents if name == "descriptor" and doc["name"] == stream}
    resources = {doc["uid"]: doc for name, doc in documents if name == "stream_resource"}
    refs: dict[int, FrameRef] = {}
    for name, datum in documents:
        if name != "stream_datum" or datum["descriptor"] not in names:
            continue
        resource = resources[datum["stream_resource"]]
        if resource["data_key"] != image_key:
            continue
        first, stop, index = datum["seq_nums"]["start"], datum["seq_nums"]["stop"], datum["indices"]["start"]
        if stop - first != datum["indices"]["stop"] - index:
            raise AnalyzeError(f"StreamDatum {datum['uid']}: one frame per event is needed")
        for seq in range(first, stop):
            piece = {**datum, "seq_nums": {"start": seq, "stop": seq + 1},
                     "indices": {"start": index + seq - first, "stop": index + seq - first + 1}}
            refs[seq] = FrameRef(seq, resource, piece)
    return refs


def plan(run, catalog_url: str, api_key: str | None, store: str | Path, derived=None,
         task_bytes: int = TASK_BYTES) -> TxmJob:
    """The TXM-XANES analysis of raw ``run`` (a catalog client) cut into tasks, its arrays
    to go to the zarr ``store`` (a new folder); raises `AnalyzeError` for a run that is not
    a TXM tomography or cannot give ``MIN_ENERGIES`` energies."""
    documents = [(name, plain_document(doc)) for name, doc in run_documents(run)]
    start = documents[0][1]
    if start.get("technique") != TXM:
        raise AnalyzeError(f"run {start['uid']} is not a TXM run (technique {start.get('technique')!r})")
    if start.get("txm_mode") != "tomo":
        raise AnalyzeError(f"run {start['uid']} is a 2D XANES map ({start.get('txm_mode')!r}): it fits in one "
                           "process; use `nanostrain replay`")
    analyses = [a for a in recorded_analyses(run, derived) if isinstance(a, TxmXanesCallback)]
    analysis = analyses[0]
    if len(analyses) > 1:
        raise AnalyzeError("the run has txm_xanes derived runs of different parameters; analyse one with replay")
    image_key = analysis.parameters_for(start)["image_key"]
    keys = start["txm_keys"]
    energies = np.asarray(start["energies_eV"], dtype=np.float64)
    angles = np.asarray(start["angles_deg"], dtype=np.float64)
    refs = _frame_refs(documents, analysis.stream, image_key)
    if not refs:
        raise AnalyzeError(f"run {start['uid']} recorded no {image_key!r} frames")
    descriptor = next(doc for name, doc in documents if name == "descriptor" and image_key in doc["data_keys"])
    frame_shape = tuple(int(n) for n in descriptor["data_keys"][image_key]["shape"][-2:])
    # the live reducer's sets (`TxmXanesAccumulator.add`): a dark/flat after another kind starts a new set
    sets: dict[str, list[FrameRef]] = {"dark": [], "flat": []}
    last_kind = None
    seen: dict[int, dict[int, FrameRef]] = {}
    energy_frames: list[EnergyFrames] = []
    for seq, data in _event_rows(documents, analysis.stream, (keys["frame_type"], keys["energy"], keys["angle"])):
        kind = str(data[keys["frame_type"]])
        if seq not in refs:
            continue
        if kind in sets:
            if kind != last_kind:
                sets[kind] = []
            sets[kind].append(refs[seq])
        elif kind == "projection":
            e = int(np.argmin(np.abs(energies - float(data[keys["energy"]]))))
            a = int(np.argmin(np.abs(angles - float(data[keys["angle"]]))))
            if any(done.index == e for done in energy_frames):
                raise AnalyzeError(f"seq_num {seq}: a projection of energy {energies[e]} eV after it was complete")
            seen.setdefault(e, {})[a] = refs[seq]
            if len(seen[e]) == angles.size:
                energy_frames.append(EnergyFrames(e, tuple(sorted(seen.pop(e).items())), tuple(sets["dark"]),
                                                  tuple(sets["flat"])))
        last_kind = kind
    if len(energy_frames) < MIN_ENERGIES:
        raise AnalyzeError(f"only {len(energy_frames)} energies have every projection; the white-line fit needs "
                           f">= {MIN_ENERGIES}")
    if any(not e.darks or not e.flats for e in energy_frames):
        raise AnalyzeError("projections arrived before any dark and flat frames")
    store = Path(store)
    if store.exists() and any(store.iterdir()):
        raise AnalyzeError(f"the store {store} exists and is not empty; give a new folder")
    return TxmJob(start["uid"], energies, angles, frame_shape, analysis.options, tuple(energy_frames),
                  analysis.stream, CatalogAccess(catalog_url, api_key, start["uid"]), str(store), task_bytes,
                  documents, analysis, energies.size - len(energy_frames))


# ----------------------------------------------------------------------------- the store


def create_store(job: TxmJob) -> None:
    """The zarr group of the job's arrays (chunks: ``GROUP_ANGLES`` angles x 64 rows of a
    projection; ``SLICES_PER_BATCH`` rows of a volume), uncompressed: scratch written once,
    read once or twice."""
    import zarr

    rows, cols = job.frame_shape
    n_e, n_a = len(job.energy_frames), job.angles_deg.size
    group = zarr.open_group(job.store, mode="w")
    group.create_array("absorbance", shape=(n_e, n_a, rows, cols), chunks=(1, GROUP_ANGLES, 64, cols),
                       dtype="float32", compressors=None, fill_value=np.nan)
    group.create_array("volumes", shape=(n_e, rows, cols, cols), chunks=(1, SLICES_PER_BATCH, cols, cols),
                       dtype="float32", compressors=None, fill_value=np.nan)
    for name, dtype in (("edge_jump", "float32"), ("wl_eV", "float32"), ("mask", "bool")):
        group.create_array(name, shape=(rows, cols, cols), chunks=(SLICES_PER_BATCH, cols, cols), dtype=dtype,
                           fill_value=False if dtype == "bool" else np.nan)


def _array(store: str, name: str):
    import zarr

    return zarr.open_group(store, mode="r+")[name]


# ----------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class EnergyTask:
    """Normalise one energy: its frames, where it goes (``slot``: its index in the store)."""

    slot: int
    frames: EnergyFrames
    frame_shape: tuple[int, int]
    stream: str
    catalog: CatalogAccess
    store: str


def _read(source: TiledFrameSource, stream: str, refs: Iterable[FrameRef]) -> list[tuple[int, np.ndarray]]:
    return [item for ref in refs for item in source.iter_frames(stream, ref.resource, ref.datum)]


def normalize_energy(task: EnergyTask) -> tuple[int, float, str, list[dict[str, Any]]]:
    """Task 1 (on a worker): (slot, mean absorbance, "" or why the energy is incomplete,
    the ``frame_quality`` rows of the frames it read, `callbacks.txm.quality_row`)."""
    run = CatalogRun(task.catalog)
    source = TiledFrameSource(run)
    absorbance = _array(task.store, "absorbance")
    rows: list[dict[str, Any]] = []

    def screened(kind: str, seq_num: int, frame: np.ndarray) -> np.ndarray | None:
        quality, reason, usable = screen_frame(kind, frame, task.frame_shape)
        row = quality_row(seq_num, kind, quality, usable is not None, reason)
        if row is not None:
            rows.append(row)
        return usable

    try:
        references = {}
        for kind, refs in (("dark", task.frames.darks), ("flat", task.frames.flats)):
            usable = [screened(kind, seq, frame) for seq, frame in _read(source, task.stream, refs)]
            usable = [frame for frame in usable if frame is not None]
            if not usable:
                return task.slot, math.nan, f"no usable {kind} frame", rows
            references[kind] = np.stack(usable)
        total, count = 0.0, 0
        projections = task.frames.projections
        for first in range(0, len(projections), GROUP_ANGLES):
            group = projections[first: first + GROUP_ANGLES]
            frames = []
            for seq, frame in _read(source, task.stream, [ref for _, ref in group]):
                usable = screened("projection", seq, frame)
                if usable is None:
                    return task.slot, math.nan, f"projection seq_num {seq} skipped: {rows[-1]['reason']}", rows
                frames.append(usable)
            block = normalize(np.stack(frames), references["flat"], references["dark"], minus_log=True)
            total += float(block.sum(dtype=np.float64))
            count += block.size
            absorbance[task.slot, first: first + len(group)] = block
        return task.slot, total / count, "", rows
    finally:
        source.close()
        run.close()


def preview_energy(store: str, slot: int, angles_deg: np.ndarray) -> tuple[float, np.ndarray]:
    """Task 1b: the live reducer's preview of energy ``slot`` (before registration): the
    central row's sinogram, its rotation centre (px) and its reconstruction."""
    absorbance = _array(store, "absorbance")
    sinogram = absorbance[slot, :, absorbance.shape[2] // 2]
    center = find_center(sinogram, angles_deg)
    return float(center), reconstruct(sinogram, angles_deg, center)


def shift_of(store: str, slot: int, reference: int, picks: np.ndarray) -> np.ndarray:
    """Task 2a: the shift of energy ``slot`` onto the ``reference`` energy (rows, cols; px)."""
    absorbance = _array(store, "absorbance")
    return energy_shift(absorbance[slot, picks], absorbance[reference, picks])


def register_energy(store: str, slot: int, shift: np.ndarray) -> int:
    """Task 2b: energy ``slot``'s projections shifted in place, ``GROUP_ANGLES`` at a time."""
    absorbance = _array(store, "absorbance")
    for first in range(0, absorbance.shape[1], GROUP_ANGLES):
        block = absorbance[slot, first: first + GROUP_ANGLES]
        absorbance[slot, first: first + block.shape[0]] = shift_projections(block, shift)
    return slot


def reconstruct_slab(store: str, slot: int, rows: tuple[int, int], angles_deg: np.ndarray, center: float,
                     smooth_voxels: float) -> int:
    """Task 4: rows [lo, hi) of energy ``slot``'s smoothed volume (see the module notes)."""
    absorbance, volumes = _array(store, "absorbance"), _array(store, "volumes")
    lo, hi = rows
    halo = _batches(smoothing_radius(smooth_voxels))
    first, last = max(0, lo - halo), min(absorbance.shape[2], hi + halo)
    volume = smooth_volume(reconstruct(absorbance[slot, :, first:last], angles_deg, center), smooth_voxels)
    volumes[slot, lo:hi] = volume[lo - first: hi - first]
    return hi - lo


def edge_slab(store: str, rows: tuple[int, int], n_energies: int) -> tuple[float, float]:
    """Task 5a: the edge jump of rows [lo, hi) to the store; its (min, max)."""
    volumes, jump_store = _array(store, "volumes"), _array(store, "edge_jump")
    k = edge_jump_energies(n_energies)
    lo, hi = rows
    jump = edge_jump(volumes[:k, lo:hi], volumes[n_energies - k: n_energies, lo:hi])
    jump_store[lo:hi] = jump
    return float(jump.min()), float(jump.max())


def histogram_slab(store: str, rows: tuple[int, int], low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Task 5b: (counts, edges) of the slab's edge jump over the volume's [low, high]."""
    return jump_histogram(_array(store, "edge_jump")[rows[0]: rows[1]], low, high)


def mask_slab(store: str, rows: tuple[int, int], threshold: float, erosion: int) -> int:
    """Task 5c: the particle mask of rows [lo, hi) (read with ``erosion`` rows of halo); its count."""
    jump_store, mask_store = _array(store, "edge_jump"), _array(store, "mask")
    lo, hi = rows
    first, last = max(0, lo - erosion), min(jump_store.shape[0], hi + erosion)
    mask = particle_mask(jump_store[first:last], threshold, erosion)[lo - first: hi - first]
    mask_store[lo:hi] = mask
    return int(mask.sum())


def _spectra(store: str, rows: tuple[int, int], n_energies: int) -> tuple[np.ndarray, np.ndarray]:
    volumes, mask = _array(store, "volumes"), _array(store, "mask")[rows[0]: rows[1]]
    return np.moveaxis(volumes[:n_energies, rows[0]: rows[1]][:, mask], 0, -1), mask


def sample_slab(store: str, rows: tuple[int, int], n_energies: int, offset: int, stride: int) -> np.ndarray:
    """Task 6: the slab's particle spectra whose index in the whole particle (C order)
    is a multiple of ``stride`` (``offset``: particle voxels in the rows before)."""
    spectra, _ = _spectra(store, rows, n_energies)
    return spectra[(-offset) % stride:: stride]


def whiteline_slab(store: str, rows: tuple[int, int], energies_eV: np.ndarray, estimator) -> np.ndarray:
    """Task 7: the white-line energy of the slab's particle voxels (``estimator`` None:
    the 5-point quadratic) to the store; the particle's values (C order)."""
    spectra, mask = _spectra(store, rows, energies_eV.size)
    wl = (estimator(spectra)[0] if estimator is not None
          else whiteline_energy(spectra, energies_eV, method="quadratic")[0]).astype(np.float32)
    slab = np.full(mask.shape, np.nan, dtype=np.float32)
    slab[mask] = wl
    _array(store, "wl_eV")[rows[0]: rows[1]] = slab
    return wl


# ----------------------------------------------------------------------------- the job


def _batches(n: int) -> int:
    """``n`` rounded up to whole reconstruction batches (`SLICES_PER_BATCH` rows)."""
    return -(-n // SLICES_PER_BATCH) * SLICES_PER_BATCH


def slabs(n_rows: int, bytes_per_row: int, task_bytes: int) -> list[tuple[int, int]]:
    """Row ranges [lo, hi) of whole `SLICES_PER_BATCH` batches, about ``task_bytes`` each."""
    per = max(SLICES_PER_BATCH, task_bytes // max(1, bytes_per_row) // SLICES_PER_BATCH * SLICES_PER_BATCH)
    return [(lo, min(n_rows, lo + per)) for lo in range(0, n_rows, per)]


class _Runner:
    """Tasks on a dask client, or one after the other here (client None), with a bar;
    ``seconds``: wall time per phase."""

    def __init__(self, client, bar: tqdm):
        self.client, self.bar = client, bar
        self.seconds: dict[str, float] = {}

    def map(self, what: str, function, *iterables, **kwargs) -> list:
        began = time.perf_counter()
        try:
            return self._map(what, function, *iterables, **kwargs)
        finally:
            self.seconds[what] = time.perf_counter() - began

    def _map(self, what: str, function, *iterables, **kwargs) -> list:
        self.bar.set_description(what)
        if self.client is None:
            results = []
            for arguments in zip(*iterables, strict=True):
                results.append(function(*arguments, **kwargs))
                self.bar.update(1)
            return results
        from distributed import as_completed

        futures = self.client.map(function, *iterables, pure=False, **kwargs)
        for future in as_completed(futures, loop=self.client.loop):
            if future.status == "error":
                future.result()  # raises the task's error
            self.bar.update(1)
        return self.client.gather(futures)


def reduce(job: TxmJob, client=None, progress: bool | None = None) -> TxmResult:
    """Run the job's tasks (module notes) on dask ``client`` (a `distributed.Client`), or one
    after the other in this process (None); the arrays go to the job's store."""
    create_store(job)
    rows, cols = job.frame_shape
    n_slots = len(job.energy_frames)
    options = job.options
    volume_row = 4 * cols * cols
    recon_slabs = slabs(rows, job.angles_deg.size * cols * 4 + 3 * volume_row, job.task_bytes)
    energy_slabs = slabs(rows, n_slots * volume_row, job.task_bytes)
    total = (4 * n_slots + n_slots * len(recon_slabs) + 5 * len(energy_slabs))
    bar = tqdm(total=total, unit="task", desc="analyze", file=sys.stderr, mininterval=0.5,
               disable=None if progress is None else not progress, dynamic_ncols=True)
    run = _Runner(client, bar)
    store = job.store
    try:
        tasks = [EnergyTask(slot, frames, job.frame_shape, job.stream, job.catalog, store)
                 for slot, frames in enumerate(job.energy_frames)]
        normalised = run.map("normalise", normalize_energy, tasks)
        skipped = [f"{job.energies_eV[job.energy_frames[slot].index]} eV: {why}" for slot, _, why, _ in normalised
                   if why]
        if skipped:  # the live reducer would leave these energies out; `replay` does
            raise AnalyzeError(f"energies with frames skipped as bad ({'; '.join(skipped)}); "
                               "`nanostrain replay` reduces such runs")
        energies = np.array([job.energies_eV[frames.index] for frames in job.energy_frames])
        order = np.argsort(energies)
        if np.any(order != np.arange(n_slots)):
            raise AnalyzeError("the energies were taken out of increasing order")
        quality_rows = tuple(sorted({row["raw_seq_num"]: row for *_, rows_read in normalised
                                     for row in rows_read}.values(), key=lambda row: row["raw_seq_num"]))
        previews = tuple(
            EnergyPreview(energy_index=frames.index, energy_eV=float(job.energies_eV[frames.index]),
                          center_px=center, image=image)
            for frames, (center, image) in zip(job.energy_frames, run.map(
                "preview", preview_energy, [store] * n_slots, range(n_slots), angles_deg=job.angles_deg), strict=True))
        reference = int(np.argmax([mean for _, mean, _, _ in normalised]))
        picks = registration_picks(job.angles_deg.size, options.registration_angles)
        shifts = np.stack(run.map("shifts", shift_of, [store] * n_slots, range(n_slots), [reference] * n_slots,
                                  [picks] * n_slots))
        run.map("register", register_energy, [store] * n_slots, range(n_slots), list(shifts))
        first, second = opposed_pair(job.angles_deg)
        absorbance = _array(store, "absorbance")
        center = find_center(np.stack([absorbance[reference, first], absorbance[reference, second]]),
                             job.angles_deg[[first, second]])
        pieces = [(slot, piece) for slot in range(n_slots) for piece in recon_slabs]
        run.map("reconstruct", reconstruct_slab, [store] * len(pieces), [s for s, _ in pieces],
                [p for _, p in pieces], angles_deg=job.angles_deg, center=center, smooth_voxels=options.smooth_voxels)
        n = len(energy_slabs)
        ranges = run.map("edge jump", edge_slab, [store] * n, energy_slabs, [n_slots] * n)
        low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
        histograms = run.map("histogram", histogram_slab, [store] * n, energy_slabs, [low] * n, [high] * n)
        threshold = particle_threshold(np.sum([counts for counts, _ in histograms], axis=0), histograms[0][1])
        erosion = options.mask_erosion + math.ceil(options.smooth_voxels)
        voxels = run.map("mask", mask_slab, [store] * n, energy_slabs, [threshold] * n, [erosion] * n)
        estimator, n_components = None, 0
        n_voxels = int(sum(voxels))
        if options.denoise and n_voxels > n_slots:
            stride = population_stride(n_voxels)
            offsets = np.concatenate([[0], np.cumsum(voxels)[:-1]]).astype(int)
            population = np.concatenate(run.map("sample", sample_slab, [store] * n, energy_slabs, [n_slots] * n,
                                                list(offsets), [stride] * n))
            estimator = whiteline_operator(population, energies)
            n_components = estimator.n_components
        else:
            bar.update(n)
        values = run.map("white line", whiteline_slab, [store] * n, energy_slabs, [energies] * n, [estimator] * n)
        statistics = whiteline_statistics(np.concatenate(values), None, bins=options.bins)
    finally:
        bar.close()
    return TxmResult(energies, shifts, reference, float(center), int(n_components), statistics, store, run.seconds,
                     previews, quality_rows)


def publish(job: TxmJob, result: TxmResult, writer=None) -> list[tuple[str, Document]]:
    """The ``txm_xanes`` derived run of ``result``, made by the live callback
    (`TxmXanesCallback.adopt`, `analyze.publish_adopted`): frame quality rows, previews,
    registration, the ``whiteline`` volumes and statistics. The volumes are lazy arrays
    over the store, so ``writer`` must write through `ExternalArrays` (which copies them
    to the derived run's HDF5 file slab by slab, in bounded memory) before anything
    records them; with no writer the documents are only returned."""
    return publish_adopted(job.documents, [job.analysis], lambda analysis: analysis.adopt(
        result.reduction(), result.previews, result.quality_rows, job.n_incomplete), writer)


def analyze(run, catalog_url: str, api_key: str | None, store: str | Path, client=None, derived=None,
            progress: bool | None = None, task_bytes: int = TASK_BYTES) -> TxmResult:
    """`plan` and `reduce` (on dask ``client``, or in this process if None)."""
    return reduce(plan(run, catalog_url, api_key, store, derived, task_bytes), client, progress)
