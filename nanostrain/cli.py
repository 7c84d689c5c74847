"""The ``nanostrain`` command line.

    nanostrain demo                       simulated campaign into ./nanostrain-data
    nanostrain serve [--data-dir D] [--init]   the catalog server (Tiled) on 127.0.0.1:8000,
                                          its live web view at /view/
    nanostrain shell [--real CONFIG] [-c CODE]   IPython with the beamline session loaded
    nanostrain replay UID [--write]       re-run the live analyses on a stored run
    nanostrain analyze UID [--scheduler ADDR] [--workers N] [--write [--keep-store]]
                                          the SXDM strain or TXM-XANES analysis of a stored run on
                                          dask.distributed
    nanostrain refine UID [--q-window LO HI] [--write]
                                          sequential Pawley refinement of a stored operando XRD run
    nanostrain bus                        the document bus (0MQ proxy) on 127.0.0.1:5577/5578
    nanostrain worker --catalog URL       live analyses beside acquisition, fed by the bus
    nanostrain report [-o report.html]    the campaign report (HTML, figures as PNG and SVG)
    nanostrain export gsas2 UID --output DIR [--fxye] [--overwrite]
                                          an operando XRD run's patterns (.xye per frame), instrument
                                          parameters (.instprm) and sequence index for GSAS-II
    nanostrain catalog ls [--limit N] [--json] | recover [DIR] | migrate
                                          the newest raw runs with their derived runs / replay the
                                          journal into the catalog / move runs of the older layout
                                          into raw and derived

Commands that read a catalog through --data-dir refuse a folder that holds none (a typo
must not start an empty catalog); `serve` creates one only with --init, `demo` and
`shell` (which record new runs) create theirs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from .catalog import API_KEY_ENV, DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT, CatalogSettings, catalog_nodes


class UsageError(Exception):
    """A command given what it cannot work with; main prints it and exits with status 2."""


def _existing_catalog(args: argparse.Namespace) -> None:
    """Refuse a ``--data-dir`` that holds no catalog (for commands that read one)."""
    if getattr(args, "catalog", None):
        return
    data_dir = Path(args.data_dir)
    if not (data_dir / "catalog.db").is_file():
        raise UsageError(
            f"--data-dir {data_dir}: no catalog there ({data_dir.resolve() / 'catalog.db'} does not exist). "
            "Give the folder of an existing catalog, or --catalog URL of a running server."
        )


def _settings(args: argparse.Namespace, role: str = "beamline") -> CatalogSettings:
    kwargs = {"data_dir": Path(args.data_dir), "role": role}
    if getattr(args, "api_key", None):
        kwargs["api_key"] = args.api_key
    if getattr(args, "database", None):
        kwargs["database"] = args.database
    if getattr(args, "readable_storage", None):
        kwargs["readable_storage"] = tuple(Path(p) for p in args.readable_storage)
    if getattr(args, "private", False):
        kwargs["public"] = False
    if getattr(args, "roles", False):
        kwargs["roles"] = True
    return CatalogSettings(**kwargs)


def _api_key(args: argparse.Namespace, role: str) -> str | None:
    """The key a command acting as ``role`` uses with a served catalog: --api-key, else
    (``$NANOSTRAIN_API_KEY`` is --api-key's default) the role's key if --data-dir is the
    catalog's folder and it has roles (`nanostrain.roles`), else none."""
    from .roles import has_roles, role_key

    if args.api_key:
        return args.api_key
    return role_key(Path(args.data_dir), role) if has_roles(Path(args.data_dir)) else None


@contextlib.contextmanager
def _catalog(args: argparse.Namespace, role: str) -> Iterator[Any]:
    """A catalog client for the command, acting as ``role`` (`nanostrain.roles`): the
    server at --catalog, or an embedded one on --data-dir (which must hold a catalog);
    closed when the block ends."""
    from .catalog import EmbeddedCatalog, connect

    server = None
    if args.catalog:
        client = connect(args.catalog, api_key=_api_key(args, role))
    else:
        _existing_catalog(args)
        server = EmbeddedCatalog(_settings(args, role))
        client = server.client()
    try:
        yield client
    finally:
        client.context.close()
        if server is not None:
            server.close()


def cmd_serve(args: argparse.Namespace) -> int:
    from .catalog import serve

    data_dir = Path(args.data_dir)
    if not data_dir.is_dir() and not args.init:
        raise UsageError(f"--data-dir {data_dir}: no such folder; add --init to start a new catalog there.")
    serve(_settings(args), host=args.host, port=args.port)
    return 0


def cmd_shell(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    env["NANOSTRAIN_DATA_DIR"] = str(Path(args.data_dir).resolve())
    if args.catalog:
        env["NANOSTRAIN_CATALOG"] = args.catalog
    if args.real:
        env["NANOSTRAIN_BEAMLINE_CONFIG"] = str(Path(args.real).resolve())
    # The profile's startup files ship in the package (nanostrain.profile); IPython runs
    # them as exec_files, in order, keeping its own profile (history) where it always is.
    with resources.as_file(resources.files("nanostrain.profile") / "startup") as startup:
        files = [str(path) for path in sorted(Path(startup).glob("*.py"))]
        command = [sys.executable, "-m", "IPython", f"--InteractiveShellApp.exec_files={json.dumps(files)}"]
        if args.command is not None:
            command += ["-c", args.command]
        os.execvpe(sys.executable, command, env)
    return 0  # not reached


@contextlib.contextmanager
def _stored_run(args: argparse.Namespace) -> Iterator[tuple[Any, Any, Any]]:
    """(raw run ``args.uid``, the ``derived`` node, the client), acting as the analysis
    writer with ``--write``, else as a reader; an unknown uid is a `UsageError`."""
    with _catalog(args, "analysis" if args.write else "reader") as client:
        raw, derived = catalog_nodes(client)
        if args.uid not in raw:
            raise UsageError(f"no run {args.uid!r} among the catalog's raw runs")
        yield raw[args.uid], derived, client


def cmd_replay(args: argparse.Namespace) -> int:
    from .replaying import replay

    with _stored_run(args) as (run, derived, _):
        writer = _superseding_writer(derived, args) if args.write else None  # replaces, never duplicates
        published = replay(run, derived=derived, writer=_recording(writer, args),
                           progress=None if args.progress else False)
        return _report(published, writer)


def _derived_dir(args: argparse.Namespace) -> Path | None:
    """``<data-dir>/derived`` if that folder exists (the catalog server made it: it reads
    the derived runs' array files there), else None."""
    folder = Path(args.data_dir) / "derived"
    return folder if folder.is_dir() else None


def _superseding_writer(derived, args: argparse.Namespace):
    """Writes derived runs into ``derived``, replacing earlier ones of the same computation
    (and removing their array files from `_derived_dir`)."""
    from bluesky_tiled_plugins import TiledWriter

    from .derived_files import remove_run_folder
    from .schema.catalog import SupersedingWriter

    folder = _derived_dir(args)
    return SupersedingWriter(TiledWriter(derived), derived,
                             on_deleted=None if folder is None else functools.partial(remove_run_folder, folder))


def _recording(writer, args: argparse.Namespace):
    """``writer`` with the derived runs' large arrays written to files under
    `_derived_dir`, if there is one, as live derived runs are (`nanostrain.derived_files`);
    None if ``writer`` is."""
    from .callbacks.external_arrays import ExternalArrays
    from .derived_files import HDF5ArraySink

    folder = _derived_dir(args)
    if writer is None or folder is None:
        return writer
    return ExternalArrays(HDF5ArraySink(folder), writer)


def _report(published: list, writer) -> int:
    """Print the derived runs ``published`` (and whether ``writer`` stored them); exit
    status 1 if one failed (its reason on standard error), else 0."""
    from .replaying import failures

    if writer is not None:
        writer.flush()
    starts = [doc for name, doc in published if name == "start"]
    events = sum(1 for name, _ in published if name == "event")
    for doc in starts:
        print(f"derived run {doc['uid']} ({doc['analysis']}) from {doc['derived_from']}")
    print(f"{len(starts)} derived run(s), {events} event(s)")
    if writer is not None:
        print("written to the catalog")
    failed = failures(published)
    for line in failed:
        print(f"FAILED: {line}", file=sys.stderr)
    return 1 if failed else 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from .analyze import AnalyzeError, SchedulerUnreachable, dask_client, plan, publish, reduce
    from .callbacks.frames import DetectorFileError
    from .schema.start import TXM

    with _stored_run(args) as (run, derived, client):
        if run.metadata["start"].get("technique") == TXM:
            return _analyze_txm(args, run, derived, client)
        try:
            job = plan(run, str(client.context.api_uri), client.context.api_key, derived)
            with dask_client(args.scheduler, args.workers) as dask:
                print(f"{job.n_frames} frames in {len(job.tasks)} task(s) on {dask.scheduler_info()['address']} "
                      f"({len(dask.scheduler_info()['workers'])} worker(s))", flush=True)
                partial = reduce(job, dask, progress=None if args.progress else False)
        except (AnalyzeError, SchedulerUnreachable) as error:
            raise UsageError(str(error)) from error
        except DetectorFileError as error:  # a task could not read its frames: nothing is written
            print(f"FAILED: {error}", file=sys.stderr)
            return 1
        writer = _superseding_writer(derived, args) if args.write else None
        return _report(publish(job, partial, _recording(writer, args)), writer)


def _analyze_txm(args: argparse.Namespace, run, derived, client) -> int:
    """`nanostrain analyze` of a TXM-XANES tomography: block-wise on dask, arrays to ``--store``."""
    from . import analyze_txm
    from .analyze import AnalyzeError, SchedulerUnreachable, dask_client
    from .callbacks.frames import DetectorFileError

    uid = run.metadata["start"]["uid"]
    store = Path(args.store) if args.store else Path(args.data_dir) / "derived" / f"txm_xanes-{uid}.zarr"
    if args.write and _derived_dir(args) is None:  # the volumes must go to files, never inline
        raise UsageError(f"--write of a TXM analysis writes its volumes under {Path(args.data_dir) / 'derived'}, "
                         "the catalog's derived-array folder, which is not on this machine: give the catalog's "
                         "--data-dir, or analyse without --write")
    writer = _superseding_writer(derived, args) if args.write else None
    try:
        job = analyze_txm.plan(run, str(client.context.api_uri), client.context.api_key, store, derived)
        with dask_client(args.scheduler, args.workers) as dask:
            print(f"{job.n_frames} projections of {len(job.energy_frames)} energies on "
                  f"{dask.scheduler_info()['address']} ({len(dask.scheduler_info()['workers'])} worker(s))", flush=True)
            result = analyze_txm.reduce(job, dask, progress=None if args.progress else False)
    except (AnalyzeError, SchedulerUnreachable) as error:
        raise UsageError(str(error)) from error
    except DetectorFileError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    stats = result.statistics
    print(f"white line over {stats.n_voxels} voxels: mean {stats.mean_eV:.3f} eV, median {stats.median_eV:.3f} eV, "
          f"sigma {stats.sigma_eV:.3f} eV; rotation centre {result.center_px:.2f} px; "
          f"{result.n_components} PCA components")
    if writer is None:
        print(f"arrays (zarr: absorbance, volumes, edge_jump, mask, wl_eV) in {result.store}")
        return 0
    code = _report(analyze_txm.publish(job, result, _recording(writer, args)), writer)
    if code == 0 and not args.keep_store:  # the results are in the derived run's file: the rest is scratch
        shutil.rmtree(result.store)
        print(f"removed the intermediate store {result.store} (--keep-store keeps it)")
    return code


def cmd_refine(args: argparse.Namespace) -> int:
    from .callbacks.xrd_refinement import XrdRefinementCallback
    from .export import instrument_profile
    from .replaying import replay
    from .schema.start import XRD

    with _stored_run(args) as (run, derived, _):
        start = run.metadata["start"]
        if start.get("technique") != XRD:
            raise UsageError(f"run {start['uid']} is a {start.get('technique')!r} run, not operando XRD ({XRD!r})")
        profile, source, _ = instrument_profile(derived, start)
        print(f"instrument profile from {source}", flush=True)
        refinement = XrdRefinementCallback(instrument=profile._asdict(), q_window=tuple(args.q_window))
        writer = _superseding_writer(derived, args) if args.write else None
        published = replay(run, [refinement], derived=derived, writer=writer,
                           progress=None if args.progress else False)
        return _report(published, writer)


def cmd_bus(args: argparse.Namespace) -> int:
    from .bus import serve_proxy

    print(f"document bus: publishers -> {args.publishers}, subscribers <- {args.subscribers}", flush=True)
    try:
        serve_proxy(args.publishers, args.subscribers)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import signal
    import threading

    from .worker import serve_worker

    if not args.catalog:
        print("A worker writes to a catalog server: give --catalog URL (or $NANOSTRAIN_CATALOG).", file=sys.stderr)
        return 2
    if args.nice:
        os.nice(args.nice)  # acquisition first: a worker beside it must never slow it down
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    analyses = args.analyses.split(",") if args.analyses else None
    # large arrays to files only where the catalog server reads them (`_recording`)
    serve_worker(args.catalog, _api_key(args, "analysis"), args.bus, analyses, args.lookback, stop,
                 say=lambda text: print(text, flush=True), pv_prefix=None if args.no_pvs else args.pv_prefix,
                 derived_dir=_derived_dir(args))
    return 0


def cmd_catalog_ls(args: argparse.Namespace) -> int:
    from .listing import format_table, list_runs

    with _catalog(args, "reader") as client:
        runs = list_runs(*catalog_nodes(client), limit=args.limit)
    if args.json:
        print(json.dumps([run.to_json() for run in runs], indent=1))
    elif runs:
        print(format_table(runs))
    else:
        print("No runs in the catalog yet.")
    return 0


def cmd_catalog_recover(args: argparse.Namespace) -> int:
    """Replay the journal into the catalog; exit status 1 if a file was damaged or refused."""
    from .syncing import recover

    with _catalog(args, "beamline") as client:
        journal_dir = Path(args.journal_dir) if args.journal_dir else _settings(args).journal_dir
        report = recover(journal_dir, client)
    for uid in report.written:
        print(f"recovered {uid}")
    for path in report.truncated:
        print(f"truncated: {path} (its last line was cut; every intact document recovered)")
    for path, reason in report.damaged:
        print(f"DAMAGED, skipped: {path}: {reason}", file=sys.stderr)
    for path, reason in report.failed:
        print(f"NOT RECOVERED (catalog refused it; try again): {path}: {reason}", file=sys.stderr)
    print(f"{len(report.written)} run(s) recovered, {len(report.complete)} already complete, "
          f"{len(report.damaged)} damaged, {len(report.failed)} failed, from {journal_dir}")
    return 1 if report.damaged or report.failed else 0


def cmd_catalog_migrate(args: argparse.Namespace) -> int:
    from .catalog import migrate_root_runs

    with _catalog(args, "beamline") as client:
        uids = migrate_root_runs(client)
    print(f"{len(uids)} run(s) moved from the catalog's root into raw/derived")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    with _catalog(args, "reader") as client:
        path, _ = write_report(client, args.output, source=args.catalog or str(Path(args.data_dir).resolve()),
                               say=lambda text: print(text, flush=True))
    print(f"report: {path.resolve()}")
    return 0


def cmd_export_gsas2(args: argparse.Namespace) -> int:
    from .export import ExportError, export_gsas2

    with _catalog(args, "reader") as client:
        try:
            result = export_gsas2(client, args.uid, args.output, prefix=args.prefix, fxye=args.fxye,
                                  overwrite=args.overwrite, say=lambda text: print(text, flush=True))
        except ExportError as error:
            raise UsageError(str(error)) from error
    kinds = " (.xye and .fxye)" if result.fxye else ""
    print(f"{len(result.patterns)} pattern(s){kinds}, {result.instprm.name} and {result.index.name} in "
          f"{result.folder.resolve()}")
    print(f"instrument profile from {result.profile_source}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.data_dir), quick=args.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanostrain",
        description="Run, watch and analyse strain experiments on battery cathode particles "
        "(in situ XRD, SXDM, TXM-XANES) with Bluesky, storing everything in a Tiled catalog.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, catalog: bool = True) -> None:
        p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="data folder (default: %(default)s)")
        p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV), help=f"catalog API key (default: ${API_KEY_ENV} or <data-dir>/api_key; "
                       "prefer those: a command line is visible to every user in ps)")
        if catalog:
            p.add_argument("--catalog", default=os.environ.get("NANOSTRAIN_CATALOG"), metavar="URL",
                           help="catalog server URL (default: an embedded server on --data-dir)")

    p = sub.add_parser("serve", help="run the catalog server (Tiled)")
    common(p, catalog=False)
    p.add_argument("--host", default=DEFAULT_HOST, help="listen address (default: %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    p.add_argument("--database", metavar="URI", help="postgresql://user@host:port/db instead of embedded SQLite")
    p.add_argument("--readable-storage", nargs="*", metavar="DIR", help="extra folders of detector files the server may read")
    p.add_argument("--private", action="store_true", help="require the API key for reads too (and serve no web view)")
    p.add_argument("--init", action="store_true", help="create --data-dir (and a new catalog in it) if it does not exist")
    p.add_argument("--roles", action="store_true",
                   help="serve with roles: a beamline writer, an analysis writer and readers, each with its own "
                        "scoped key in <data-dir>/roles/ (kept once made; docs/security.md)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("shell", help="IPython with the beamline session (sim devices by default)")
    common(p)
    p.add_argument("--real", metavar="CONFIG", help="beamline TOML config: real EPICS devices instead of simulated")
    p.add_argument("-c", dest="command", metavar="CODE", help="run CODE in the session, then exit (no prompt)")
    p.set_defaults(func=cmd_shell)

    p = sub.add_parser("replay", help="re-run the live analyses on a stored run")
    common(p)
    p.add_argument("uid", help="uid of the raw run")
    p.add_argument("--write", action="store_true",
                   help="store the replayed derived runs in the catalog, replacing the earlier ones of the same computation")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (default: one on a terminal)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("analyze", help="the SXDM strain or TXM-XANES analysis of a stored run on dask.distributed")
    common(p)
    p.add_argument("uid", help="uid of the raw SXDM or TXM tomography run")
    p.add_argument("--store", metavar="DIR", help="TXM: new zarr folder for the arrays "
                   "(default: <data-dir>/derived/txm_xanes-<uid>.zarr)")
    p.add_argument("--scheduler", metavar="ADDR", help="a dask scheduler's address (default: a local cluster)")
    p.add_argument("--workers", type=positive_integer, default=2, metavar="N",
                   help="worker processes of the local cluster (default: %(default)s)")
    p.add_argument("--write", action="store_true",
                   help="store the derived run in the catalog, replacing the earlier one of the same computation "
                        "(TXM: its volumes as HDF5 files under <data-dir>/derived)")
    p.add_argument("--keep-store", action="store_true",
                   help="TXM with --write: keep the intermediate zarr store (absorbance, volumes) afterwards")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (default: one on a terminal)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("refine", help="sequential Pawley refinement of a stored operando XRD run (docs/xrd.md)")
    common(p)
    p.add_argument("uid", help="uid of the raw operando XRD run")
    p.add_argument("--q-window", nargs=2, type=float, default=(1.0, 5.0), metavar=("LO", "HI"),
                   help="Q range refined, 1/A (default: %(default)s)")
    p.add_argument("--write", action="store_true",
                   help="store the derived run in the catalog, replacing the earlier one of the same computation")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (default: one on a terminal)")
    p.set_defaults(func=cmd_refine)

    from .bus import DEFAULT_IN, DEFAULT_OUT

    p = sub.add_parser("bus", help="run the document bus (bluesky's 0MQ proxy) for out-of-process analysis")
    p.add_argument("--publishers", default=DEFAULT_IN, metavar="ADDR", help="where sessions publish (default: %(default)s)")
    p.add_argument("--subscribers", default=DEFAULT_OUT, metavar="ADDR", help="where workers subscribe (default: %(default)s)")
    p.set_defaults(func=cmd_bus)

    p = sub.add_parser("worker", help="run the live analyses on documents from the bus; derived runs to the catalog")
    common(p)
    p.add_argument("--bus", default=os.environ.get("NANOSTRAIN_BUS_OUT") or DEFAULT_OUT, metavar="ADDR",
                   help="the bus's subscriber address (default: %(default)s)")
    p.add_argument("--analyses", metavar="A,B", help="the analyses this worker runs (default: all)")
    p.add_argument("--lookback", type=int, default=50, help="newest runs reconciled at start (default: %(default)s)")
    p.add_argument("--pv-prefix", default=os.environ.get("NANOSTRAIN_PV_PREFIX") or "NS:LIVE:",
                   help="prefix of the live-value PVs (default: %(default)s; docs/live-pvs.md)")
    p.add_argument("--no-pvs", action="store_true", help="do not serve the live values as PVs")
    p.add_argument("--nice", type=int, default=10, metavar="N",
                   help="scheduling niceness added to the worker's (default: %(default)s): on a machine it shares "
                        "with acquisition, the worker takes the CPU the acquisition leaves and catches up after")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("demo", help="run the simulated experiment campaign into the catalog")
    common(p, catalog=False)
    p.add_argument("--quick", action="store_true", help="a shorter campaign (for tests)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", help="write the campaign report (HTML) from the catalog")
    common(p)
    p.add_argument("-o", "--output", default="report.html", metavar="FILE",
                   help="the HTML file; figures go to FILE's stem + _figures/ (default: %(default)s)")
    p.set_defaults(func=cmd_report)

    export = sub.add_parser("export", help="export runs for other programs").add_subparsers(
        dest="format", required=True, metavar="FORMAT")
    p = export.add_parser("gsas2", help="an operando XRD run for GSAS-II sequential refinement (docs/xrd.md)")
    common(p)
    p.add_argument("uid", help="uid of the raw operando XRD run")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="folder to write into (new or empty)")
    p.add_argument("--prefix", help="stem of the file names (default: <sample>_<uid[:8]>)")
    p.add_argument("--fxye", action="store_true", help="also write each pattern as GSAS FXYE (.fxye)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder that is not empty, replacing files of the same names (none is deleted)")
    p.set_defaults(func=cmd_export_gsas2)

    cat = sub.add_parser("catalog", help="catalog maintenance").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = cat.add_parser("ls", help="the newest raw runs, each with its derived runs")
    common(p)
    p.add_argument("--limit", type=positive_integer, default=50, metavar="N", help="how many raw runs, newest first (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="JSON for programs instead of the table")
    p.set_defaults(func=cmd_catalog_ls)
    p = cat.add_parser("recover", help="replay the journal: put every run the catalog lacks into it")
    common(p)
    p.add_argument("journal_dir", nargs="?", help="folder of journal files (default: <data-dir>/journal)")
    p.set_defaults(func=cmd_catalog_recover)
    p = cat.add_parser("migrate", help="move runs of the older layout (at the catalog's root) into raw/derived")
    common(p)
    p.set_defaults(func=cmd_catalog_migrate)
    return parser


def positive_integer(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    import logging

    # pyFAI's silx says it at every import on a machine without OpenCL, which it does not need
    logging.getLogger("silx.opencl.common").setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as error:
        print(f"nanostrain {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
