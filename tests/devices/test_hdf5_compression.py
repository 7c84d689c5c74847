"""Detector frames compressed as areaDetector writes them (bitshuffle/LZ4, "BSLZ4"): the
filter in the file, frames read back bit-identical through h5py and through a real
Tiled server process, the real areaDetector class setting its HDF5 plugin (soft IOC
over Channel Access), and a clear error for an unknown choice."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from urllib.parse import urlparse

import bluesky.plans as bp
import h5py
import numpy as np
import pytest
from bluesky.run_engine import call_in_bluesky_event_loop

from nanostrain.beamline import connect_devices, detector_path_provider, real_devices
from nanostrain.devices.hdf5_compression import COMPRESSIONS, dataset_options, hdf_writer
from nanostrain.devices.sim_area_detector import DATA_PATH, SimAreaDetector

from ..conftest import run_python, running_ioc

IOC_SCRIPT = Path(__file__).resolve().parents[1] / "iocs" / "ad_ioc.py"
#: HDF5 filter id of bitshuffle and its options (block size 0 = automatic, 2 = LZ4)
BITSHUFFLE, BSLZ4_OPTIONS = 32008, (0, 2)
SHAPE = (64, 48)


class Frames:
    """A renderer of known frames: Poisson counts (mostly small, a few large), kept."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.drawn: list[np.ndarray] = []

    def __call__(self, exposure_s: float) -> np.ndarray:
        frame = self.rng.poisson(5.0, SHAPE).astype(np.uint32)
        frame[self.rng.integers(0, SHAPE[0], 10), self.rng.integers(0, SHAPE[1], 10)] = 3_000_000
        self.drawn.append(frame)
        return frame


def detector(tmp_path, frames: Frames, **kwargs) -> SimAreaDetector:
    det = SimAreaDetector(detector_path_provider(tmp_path), frames, SHAPE, dtype="uint32", name="det", **kwargs)
    connect_devices({"det": det})
    return det


def count(RE, det, num: int = 4) -> list[tuple[str, dict]]:
    docs: list[tuple[str, dict]] = []
    RE(bp.count([det], num=num), lambda name, doc: docs.append((name, doc)))
    return docs


def file_of(docs) -> Path:
    (resource,) = [doc for name, doc in docs if name == "stream_resource"]
    return Path(urlparse(resource["uri"]).path)


def filters(path: Path) -> list[tuple[int, tuple[int, ...]]]:
    """(filter id, last two stored options) of the frames dataset, from the file's
    creation property list; bitshuffle stores (version major, minor, element size,
    block size, compressor)."""
    with h5py.File(path, "r") as f:
        plist = f[DATA_PATH].id.get_create_plist()
        return [(plist.get_filter(i)[0], tuple(plist.get_filter(i)[2][-2:])) for i in range(plist.get_nfilters())]


def test_simulated_frames_are_bitshuffle_lz4_one_per_chunk_and_read_back_identical(RE, tmp_path):
    frames = Frames()
    path = file_of(count(RE, detector(tmp_path, frames)))

    assert filters(path) == [(BITSHUFFLE, BSLZ4_OPTIONS)]
    with h5py.File(path, "r") as f:
        assert f[DATA_PATH].chunks == (1, *SHAPE)
        assert np.array_equal(f[DATA_PATH][()], np.asarray(frames.drawn))
        assert f[DATA_PATH].dtype == np.uint32


def test_compression_none_writes_the_frames_as_they_are(RE, tmp_path):
    frames = Frames()
    det = detector(tmp_path, frames, compression="None")
    plain = file_of(count(RE, det))
    det.compression = "BSLZ4"  # the next file is compressed again
    packed = file_of(count(RE, det))

    assert filters(plain) == [] and filters(packed) == [(BITSHUFFLE, BSLZ4_OPTIONS)]
    with h5py.File(plain, "r") as f:
        assert np.array_equal(f[DATA_PATH][()], np.asarray(frames.drawn[:4]))
    assert packed.stat().st_size < plain.stat().st_size / 2


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_every_choice_round_trips_bit_identical(tmp_path, compression):
    frames = np.random.default_rng(1).poisson(3.0, (3, *SHAPE)).astype(np.uint16)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset(DATA_PATH, data=frames, **dataset_options(compression, SHAPE))
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert np.array_equal(f[DATA_PATH][()], frames)


def test_an_unknown_compression_is_refused_naming_the_argument(tmp_path):
    with pytest.raises(ValueError, match="compression must be one of"):
        SimAreaDetector(detector_path_provider(tmp_path), Frames(), SHAPE, compression="bslz4")
    with pytest.raises(ValueError, match="compression"):
        hdf_writer(detector_path_provider(tmp_path), compression="JPEG")
    det = SimAreaDetector(detector_path_provider(tmp_path), Frames(), SHAPE)
    with pytest.raises(ValueError, match="compression"):
        det.compression = "gzip"


def test_a_live_reader_in_a_fresh_process_registers_the_filter_itself(RE, tmp_path):
    """A worker reads frames with `HDF5FrameSource` and imports no device module: the
    source registers the filters it needs."""
    frames = Frames()
    path = file_of(count(RE, detector(tmp_path, frames), num=3))
    np.save(tmp_path / "drawn.npy", np.asarray(frames.drawn))
    code = (
        "import sys, numpy as np\n"
        "from nanostrain.callbacks.frames import HDF5FrameSource\n"
        "assert 'hdf5plugin' not in sys.modules\n"
        f"resource = {{'uid': 'r', 'uri': 'file://localhost{path}', 'parameters': {{'dataset': '{DATA_PATH}'}}}}\n"
        "datum = {'seq_nums': {'start': 1, 'stop': 4}, 'indices': {'start': 0, 'stop': 3}}\n"
        "read = [frame for _, frame in HDF5FrameSource().iter_frames('primary', resource, datum)]\n"
        f"assert np.array_equal(read, np.load('{tmp_path / 'drawn.npy'}'))\n"
        "print('OK')\n"
    )
    assert run_python(code).stdout.strip() == "OK"


@pytest.mark.slow
@pytest.mark.server
def test_compressed_frames_read_back_identical_through_a_tiled_server_process(RE, server_process, sqlite_settings):
    """The server is a separate process (`nanostrain serve`): it decompresses the frames
    with the filters its own HDF5 adapter registers."""
    from bluesky_tiled_plugins import TiledWriter

    frames = Frames()
    det = detector(sqlite_settings.detector_dir, frames)
    raw = server_process.client()["raw"]
    (uid,) = RE(bp.count([det], num=5), TiledWriter(raw))

    served = np.asarray(server_process.client()["raw"][uid]["primary"]["det"].read())
    assert served.shape == (5, 1, *SHAPE) and served.dtype == np.uint32  # (event, frame in event, rows, cols)
    assert np.array_equal(served[:, 0], np.asarray(frames.drawn))


# --------------------------------------------------------------------------------------
# The real areaDetector class sets its HDF5 plugin (soft IOC over Channel Access)
# --------------------------------------------------------------------------------------
@pytest.fixture
def perkinelmer(RE, tmp_path):
    prefix = f"NSZ{secrets.token_hex(4)}:"
    with running_ioc([sys.executable, str(IOC_SCRIPT), prefix, "--binning", "16"], prefix, tmp_path / "ad_ioc.log"):
        config = {"devices": {"xrd": {"class": "nanostrain.devices.xrd:PerkinElmerDetector", "prefix": prefix}}}
        devices = real_devices(config, detector_path_provider(tmp_path / "det"))
        connect_devices(devices)
        yield devices["xrd"]


@pytest.mark.ioc
def test_perkinelmer_sets_bslz4_and_one_frame_per_chunk_on_its_hdf5_plugin(RE, perkinelmer):
    path = file_of(count(RE, perkinelmer, num=2))

    async def plugin():
        return await perkinelmer.hdf.compression.get_value(), await perkinelmer.hdf.num_frames_chunks.get_value()

    assert call_in_bluesky_event_loop(plugin()) == ("BSLZ4", 1)
    assert filters(path) == [(BITSHUFFLE, BSLZ4_OPTIONS)]
    with h5py.File(path, "r") as f:
        assert f[DATA_PATH].shape == (2, 128, 128) and f[DATA_PATH].chunks == (1, 128, 128)
        assert f[DATA_PATH][()].std() > 0  # powder rings + noise, decompressed
