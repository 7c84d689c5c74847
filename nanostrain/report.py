"""The campaign report: every sample and technique of a catalog on one HTML page.

`read_campaign` reads the catalog alone (the derived runs the live analyses wrote, and
from the raw runs the cycler's full record); `headlines` checks the reference study's
orderings on what was measured; `write_report` draws the figures (PNG and SVG files in
``<report>_figures/`` beside the HTML, the PNGs also embedded as data URIs, so the HTML
is one self-contained file) and writes the page:

* headline numbers: each claim with the study's values, the measured ones, and whether
  the ordering holds (yes / NO / not measured, with the reason);
* operando XRD: the (003) map against time beside the voltage profile, lattice against
  potential and c/c0 against (a/a0)^2 for every cell, and the cells compared;
* SXDM: dd/d, theta_xy, theta_xz maps of every particle on shared colour scales, and
  their standard deviations;
* TXM-XANES: white-line slices and histograms of every particle on one colour scale;
* ex situ XAS: the Ni K edge, |chi(R)| and the Ni-O fit (R, sigma^2) of every electrode;
* what the catalog lacks (a technique, a sample of the comparison) is stated, never a
  crash.

Units as everywhere in nanostrain (SCIENCE.md): lattice in A, strain dimensionless,
angles in degrees, energies in eV, specific current in mA/g, retention in %.
"""

from __future__ import annotations

import base64
import html
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .analysis.electrochem import capacity_retention
from .analysis.strain import contraction_pct, shrinkage_from_first_pct
from .callbacks.figure_style import save_figure
from .schema.catalog import DERIVED_NODE, RAW_NODE

Say = Callable[[str], None]

COMPOSITIONS = ("NC91", "NM91")
MORPHOLOGIES = ("SC", "PC")
#: specific current (mA/g) at which the study reports the SC-NM91 H2/H3 split
SPLIT_RATE_MA_G = 200.0
#: sigma(dd/d) ratio SC-NM91 / SC-NC91 the study reports as exceeded
SIGMA_RATIO = 3.0
#: the study's capacity retention (%) after `RETENTION_CYCLES` cycles at `RETENTION_RATE_MA_G`
STUDY_RETENTION_PCT = {("PC", "NC91"): 59.7, ("PC", "NM91"): 83.1, ("SC", "NC91"): 89.2, ("SC", "NM91"): 75.9}
RETENTION_CYCLES = 100
RETENTION_RATE_MA_G = 100.0


@dataclass
class XrdCell:
    """One operando XRD run of one cell: its reduction and the cycler's record."""

    label: str
    composition: str
    morphology: str
    rate_mA_g: float
    raw_uid: str
    table: dict[str, np.ndarray]
    q: np.ndarray
    patterns: np.ndarray
    echem: dict[str, np.ndarray] | None

    @property
    def c_contraction_pct(self) -> float:
        """Contraction of c over the run, 100 (c_max - c_min) / c_max (%)."""
        return contraction_pct(self.table["c_A"])

    @property
    def volume_shrinkage_pct(self) -> float:
        """Shrinkage of the cell volume from the first frame, 100 (V_0 - V_min) / V_0 (%)."""
        return shrinkage_from_first_pct(self.table["volume_A3"])

    @property
    def max_dc_A(self) -> float:
        """Largest (003) H2/H3 separation dc = c(H2) - c(H3) over the run (A)."""
        dc = self.table["phase_separation_A"]
        return float(np.nanmax(dc)) if np.isfinite(dc).any() else math.nan

    @property
    def two_phase_frames(self) -> int:
        return int(np.sum(self.table["n_phases"] == 2))


@dataclass
class Cycling:
    """One cycling run of one cell, from its electrochemistry analysis: discharge
    capacity (mAh/g) and retention (%) per cycle; ``rate_mA_g`` its specific current (NaN
    if unknown), ``cycles`` how many cycles the cell had been aged before the run (its
    sample's ``cycles``)."""

    label: str
    composition: str
    morphology: str
    retention_pct: np.ndarray
    discharge_mAh_g: np.ndarray = field(default_factory=lambda: np.array([]))
    rate_mA_g: float = math.nan
    cycles: int = 0


@dataclass
class Particle:
    """One particle (SXDM, TXM-XANES) or electrode (XAS) and its analysis result;
    ``state``: the sample's recorded state (e.g. "pristine"), if any."""

    label: str
    composition: str
    morphology: str
    cycles: int
    result: dict[str, Any]
    state: str = ""


@dataclass
class Campaign:
    """What a catalog holds for the report; ``notes``: what could not be read and why."""

    xrd: list[XrdCell] = field(default_factory=list)
    sxdm: list[Particle] = field(default_factory=list)
    txm: list[Particle] = field(default_factory=list)
    xas: list[Particle] = field(default_factory=list)
    cycling: list[Cycling] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw_runs: int = 0
    derived_runs: int = 0


def _sample(start: Mapping[str, Any]) -> dict[str, Any]:
    sample = start.get("sample")
    return dict(sample) if isinstance(sample, Mapping) else {"name": str(sample or "")}


def _composition(sample: Mapping[str, Any]) -> str:
    return str(sample.get("composition") or sample.get("material") or "?")


def _read_stream(run, name: str) -> dict[str, np.ndarray]:
    table = run[name].read()
    return {key: np.asarray(table[key]) for key in table}


def _xrd_cell(run, raw) -> XrdCell:
    from .callbacks.xrd_plots import echem_record

    start = run.metadata["start"]
    sample = _sample(start)
    rate = float(sample.get("specific_current_mA_g", math.nan))
    morphology = str(sample.get("morphology", "?"))
    composition = _composition(sample)
    name = sample.get("name") or f"{morphology}-{composition}"
    label = f"{name} {rate:g} mA/g" if math.isfinite(rate) else name
    return XrdCell(
        label=label, composition=composition, morphology=morphology, rate_mA_g=rate,
        raw_uid=start["derived_from"], table=_read_stream(run, "xrd"),
        q=np.asarray(run["reduction"]["q"].read())[0],
        patterns=np.asarray(run["patterns"]["intensity"].read(), dtype=float),
        echem=echem_record(raw) if raw is not None else None,
    )


def _sample_cycles(sample: Mapping[str, Any]) -> int:
    """Cycles the sample had been aged: its ``cycles``, or its ``state``'s (schema.sample)."""
    state = sample.get("state")
    if "cycles" not in sample and isinstance(state, Mapping):
        return int(state.get("cycles", 0))
    return int(sample.get("cycles", 0))


def _rate(sample: Mapping[str, Any], raw) -> float:
    """Specific current (mA/g): the sample's ``specific_current_mA_g``, else the one rate of
    every constant-current step of the raw run's protocol; NaN if neither says."""
    if "specific_current_mA_g" in sample:
        return float(sample["specific_current_mA_g"])
    protocol = raw.metadata["start"].get("protocol") if raw is not None else None
    rates = {float(step["rate_mA_g"]) for step in protocol or () if step.get("mode") != "REST"}
    return rates.pop() if len(rates) == 1 else math.nan


def _cycling(run, raw) -> Cycling:
    sample = _sample(run.metadata["start"])
    cycles = _read_stream(run, "cycles")
    return Cycling(sample.get("name", "?"), _composition(sample), str(sample.get("morphology", "?")),
                   np.asarray(cycles["retention_pct"], dtype=float), np.asarray(cycles["discharge_mAh_g"], dtype=float),
                   _rate(sample, raw), _sample_cycles(sample))


def _sxdm_particle(run, raw) -> Particle:
    from .callbacks.sxdm_plots import maps_from_derived_run

    sample = _sample(run.metadata["start"])
    result = maps_from_derived_run(run)
    raster = raw.metadata["start"].get("sxdm_raster", {}) if raw is not None else {}
    result["step_um"] = raster.get("step_um")
    return Particle(sample.get("name", "?"), _composition(sample), str(sample.get("morphology", "?")),
                    int(sample.get("cycles", 0)), result)


def _txm_particle(run) -> Particle:
    from .callbacks.txm_plots import derived_result

    sample = _sample(run.metadata["start"])
    return Particle(sample.get("name", "?"), _composition(sample), str(sample.get("morphology", "?")),
                    int(sample.get("cycles", 0)), derived_result(run))


def _xas_electrode(run) -> Particle:
    from .callbacks.xas_plots import xas_result

    sample = _sample(run.metadata["start"])
    return Particle(sample.get("name", "?"), _composition(sample), str(sample.get("morphology", "?")),
                    int(sample.get("cycles", 0)), xas_result(run), str(sample.get("state", "")))


def read_campaign(client, say: Say = print) -> Campaign:
    """Everything the report shows, from a catalog client (its ``raw`` and ``derived``
    nodes). Only successful derived runs count; a run that cannot be read is named in
    ``notes`` and skipped. Prints a progress line per run read."""
    raw_node, derived_node = client[RAW_NODE], client[DERIVED_NODE]
    campaign = Campaign(raw_runs=len(raw_node), derived_runs=len(derived_node))
    readers = {"xrd_reduction": lambda run, raw: campaign.xrd.append(_xrd_cell(run, raw)),
               "electrochemistry": lambda run, raw: campaign.cycling.append(_cycling(run, raw)),
               "sxdm_strain": lambda run, raw: campaign.sxdm.append(_sxdm_particle(run, raw)),
               "txm_xanes": lambda run, raw: campaign.txm.append(_txm_particle(run)),
               "xas": lambda run, raw: campaign.xas.append(_xas_electrode(run))}
    runs = []
    for run in derived_node.values():
        start, stop = run.metadata["start"], run.metadata.get("stop") or {}
        if stop.get("exit_status") == "success" and start.get("analysis") in readers:
            runs.append(run)
    started = time.monotonic()
    for n, run in enumerate(runs, 1):
        start = run.metadata["start"]
        name = _sample(start).get("name", "?")
        say(f"   report: reading {n}/{len(runs)} {start['analysis']} of {name} ({time.monotonic() - started:.0f} s)")
        raw_uid = start.get("derived_from", "")
        raw = raw_node[raw_uid] if raw_uid in raw_node else None
        try:
            readers[start["analysis"]](run, raw)
        except (KeyError, ValueError, IndexError) as error:
            campaign.notes.append(f"{start['analysis']} run {start['uid']} of {name} not read: {error!r}")
    campaign.xrd.sort(key=lambda cell: (cell.morphology, cell.composition, cell.rate_mA_g))
    campaign.sxdm.sort(key=lambda p: (p.cycles, p.composition))
    campaign.txm.sort(key=lambda p: (p.cycles, p.composition))
    campaign.xas.sort(key=lambda p: (p.composition, p.cycles))
    return campaign


@dataclass(frozen=True)
class Headline:
    """One claim of the reference study checked on the campaign: ``holds`` is True,
    False, or None when the campaign did not measure it (``measured`` says why)."""

    claim: str
    study: str
    measured: str
    holds: bool | None


def _cells(campaign: Campaign, morphology: str, rate: float | None = None) -> dict[str, XrdCell] | None:
    """One cell per composition of ``morphology`` at ``rate`` (default: the highest rate
    both compositions were measured at); None if a composition is missing."""
    by_rate: dict[float, dict[str, XrdCell]] = {}
    for cell in campaign.xrd:
        if cell.morphology == morphology:
            by_rate.setdefault(cell.rate_mA_g, {}).setdefault(cell.composition, cell)
    common = [r for r, cells in by_rate.items() if set(COMPOSITIONS) <= set(cells) and (rate is None or r == rate)]
    return by_rate[max(common)] if common else None


def _missing(what: str) -> str:
    return f"not measured: the catalog has no {what}"


def _ordering(claim: str, study: str, values: dict[str, float] | None, first: str, unit: str, what: str,
              fmt: str = "{:.1f}") -> Headline:
    """``values[first]`` larger than the other composition's."""
    if values is None:
        return Headline(claim, study, _missing(what), None)
    if not all(math.isfinite(v) for v in values.values()):
        return Headline(claim, study, "not measured: the analysis gave no value (NaN)", None)
    other = next(k for k in values if k != first)
    measured = f"{fmt.format(values[first])} {unit} vs {fmt.format(values[other])} {unit}"
    return Headline(claim, study, measured, values[first] > values[other])


def aged_retention(campaign: Campaign, morphology: str, composition: str, cycles: int = RETENTION_CYCLES,
                   rate_mA_g: float = RETENTION_RATE_MA_G) -> float | None:
    """Retention (%) after ``cycles`` cycles at ``rate_mA_g`` of one cell, from a pair of
    runs: 100 Q(aged) / Q(fresh), Q the first cycle's discharge capacity of a run of the
    cell aged ``cycles`` cycles and of a fresh one (sample cycles 0), both at ``rate_mA_g``
    (of several such runs, the last read); None without such a pair."""
    first: dict[int, float] = {}
    for run in campaign.cycling:
        if (run.morphology, run.composition) == (morphology, composition) and run.rate_mA_g == rate_mA_g \
                and run.cycles in (0, cycles) and run.discharge_mAh_g.size:
            first[run.cycles] = float(run.discharge_mAh_g[0])
    if len(first) < 2 or not first[0] > 0:
        return None
    return float(capacity_retention([first[0], first[cycles]])[1])


def _retention(campaign: Campaign, morphology: str) -> tuple[dict[str, float], str] | None:
    """Retention (%) per composition and how it was measured: after `RETENTION_CYCLES`
    cycles at `RETENTION_RATE_MA_G` from fresh and aged runs (`aged_retention`) when the
    catalog has them for both compositions; else the last retention of the runs with >= 2
    cycles (of several runs of one composition, the one with the most cycles)."""
    paired = {c: aged_retention(campaign, morphology, c) for c in COMPOSITIONS}
    if all(value is not None for value in paired.values()):
        return ({c: v for c, v in paired.items() if v is not None},
                f"Q after {RETENTION_CYCLES} cycles / Q fresh, {RETENTION_RATE_MA_G:g} mA/g")
    values, cycles = {}, {}
    for run in campaign.cycling:
        n = run.retention_pct.size
        if run.morphology == morphology and n >= 2 and n > cycles.get(run.composition, 0):
            values[run.composition], cycles[run.composition] = float(run.retention_pct[-1]), n
    if not set(COMPOSITIONS) <= set(values):
        return None
    fewest, most = min(cycles.values()), max(cycles.values())
    return values, f"last of {fewest} cycles within a run" if fewest == most else \
        f"last of {fewest}-{most} cycles within a run"


def _particle_pair(particles: list[Particle], key: str, cycles: int) -> dict[str, float] | None:
    values = {p.composition: float(p.result[key]) for p in particles if p.morphology == "SC" and p.cycles == cycles}
    return values if set(COMPOSITIONS) <= set(values) else None


def _sigma2_rise(campaign: Campaign, cycles: int = 100) -> dict[str, float] | None:
    """Rise of the Ni-O sigma^2 (A^2) from the pristine SC electrode to the one cycled
    ``cycles`` times, per composition."""
    rise = {}
    for composition in COMPOSITIONS:
        mine = [p for p in campaign.xas if p.composition == composition and p.morphology == "SC"]
        pristine = next((p for p in mine if p.state == "pristine"), None)
        cycled = next((p for p in mine if p.cycles == cycles), None)
        if pristine is None or cycled is None:
            return None
        rise[composition] = cycled.result["sigma2_A2"] - pristine.result["sigma2_A2"]
    return rise


def headlines(campaign: Campaign) -> list[Headline]:
    """The study's headline numbers (SCIENCE.md) checked on ``campaign``."""
    rows = []
    pc = _cells(campaign, "PC")
    rows.append(_ordering("PC c contraction: PC-NC91 > PC-NM91", "6.0 % vs 3.6 %",
                          pc and {k: v.c_contraction_pct for k, v in pc.items()}, "NC91", "%",
                          "operando XRD of both PC cells at one rate"))
    rows.append(_ordering("PC volume shrinkage: PC-NC91 > PC-NM91", "7.8 % vs 5.9 %",
                          pc and {k: v.volume_shrinkage_pct for k, v in pc.items()}, "NC91", "%",
                          "operando XRD of both PC cells at one rate"))
    sc = _cells(campaign, "SC", SPLIT_RATE_MA_G)
    claim = f"H2/H3 split at {SPLIT_RATE_MA_G:g} mA/g: SC-NM91 splits, more than SC-NC91"
    study = "Δc up to 0.68 Å vs single phase"
    if sc is None:
        rows.append(Headline(claim, study, _missing(f"operando XRD of both SC cells at {SPLIT_RATE_MA_G:g} mA/g"), None))
    else:
        nm, nc = sc["NM91"], sc["NC91"]
        measured = (f"Δc {nm.max_dc_A:.2f} Å ({nm.two_phase_frames} two-phase frames) vs "
                    f"{nc.max_dc_A:.2f} Å ({nc.two_phase_frames})")
        rows.append(Headline(claim, study, measured, nm.two_phase_frames > 0 and nm.max_dc_A > nc.max_dc_A))
    for cycles, study in ((0, "> 3 (σ ≈ 0.0018 for SC-NM91)"), (100, "3.3")):
        claim = f"σ(Δd/d) SC-NM91 / SC-NC91 > {SIGMA_RATIO:g}, charged, {'fresh' if cycles == 0 else f'{cycles} cycles'}"
        pair = _particle_pair(campaign.sxdm, "sigma_dd_over_d", cycles)
        if pair is None:
            rows.append(Headline(claim, study, _missing(f"SXDM of both SC particles after {cycles} cycles"), None))
        else:
            ratio = pair["NM91"] / pair["NC91"]
            rows.append(Headline(claim, study, f"{ratio:.1f} (σ {pair['NM91']:.2e} vs {pair['NC91']:.2e})",
                                 ratio > SIGMA_RATIO))
    rows.append(_ordering("WL distribution wider for charged SC-NM91 than SC-NC91", "wider",
                          _particle_pair(campaign.txm, "sigma_eV", 0), "NM91", "eV",
                          "TXM-XANES of both SC particles", fmt="{:.3f}"))
    rise = _sigma2_rise(campaign)
    rows.append(_ordering("Ni-O σ² rise after 100 cycles: SC-NM91 > SC-NC91", "larger for SC-NM91",
                          rise and {k: 1e3 * v for k, v in rise.items()}, "NM91", "× 10⁻³ Å²",
                          "XAS of pristine and 100-cycle SC electrodes of both compositions", fmt="{:+.2f}"))
    for morphology, first in (("SC", "NC91"), ("PC", "NM91")):
        other = "NM91" if first == "NC91" else "NC91"
        study = f"{STUDY_RETENTION_PCT[(morphology, first)]:.1f} % vs {STUDY_RETENTION_PCT[(morphology, other)]:.1f} %"
        claim = (f"capacity retention, {RETENTION_CYCLES} cycles at {RETENTION_RATE_MA_G:g} mA/g: "
                 f"{morphology}-{first} > {morphology}-{other}")
        retention = _retention(campaign, morphology)
        row = _ordering(claim, study,
                        retention and retention[0], first, "%",
                        f"cycling of both {morphology} cells over two or more cycles, nor fresh and "
                        f"{RETENTION_CYCLES}-cycle cells at {RETENTION_RATE_MA_G:g} mA/g")
        if retention is not None and row.holds is not None:
            row = Headline(row.claim, row.study, f"{row.measured} ({retention[1]})", row.holds)
        rows.append(row)
    return rows


def _embed(paths: list[Path], html_dir: Path, caption: str) -> str:
    png, vector = paths
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    links = " · ".join(f'<a href="{html.escape(p.relative_to(html_dir).as_posix())}">{p.suffix[1:].upper()}</a>'
                       for p in paths)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)} ({links})</figcaption></figure>")


def _figures(campaign: Campaign, folder: Path, html_dir: Path, say: Say) -> dict[str, list[str]]:
    """Draw, save and embed every figure; returns HTML snippets per section."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .callbacks import sxdm_plots, txm_plots, xas_plots, xrd_plots

    sections: dict[str, list[str]] = {"xrd": [], "sxdm": [], "txm": [], "xas": []}

    def emit(section: str, fig, stem: str, caption: str) -> None:
        paths = save_figure(fig, folder / stem)
        plt.close(fig)
        sections[section].append(_embed(paths, html_dir, caption))
        say(f"   report: figure {paths[0].name}")

    if campaign.xrd:
        compared = {cell.label: {"table": cell.table, "c_contraction_pct": cell.c_contraction_pct,
                                 "volume_shrinkage_pct": cell.volume_shrinkage_pct, "max_dc_A": cell.max_dc_A}
                    for cell in campaign.xrd}
        emit("xrd", xrd_plots.comparison_figure(compared), "xrd_comparison",
             "Operando XRD compared: c/c₀ against (a/a₀)², lattice contraction and H2/H3 separation per cell")
        for n, cell in enumerate(campaign.xrd):
            fig = xrd_plots.operando_figure(cell.table, cell.q, cell.patterns, title=cell.label, echem=cell.echem)
            emit("xrd", fig, f"xrd_{n:02d}_{_slug(cell.label)}",
                 f"{cell.label}: (003) against time beside the potential; lattice against potential; anisotropy")
    if campaign.sxdm:
        maps = {p.label: p.result for p in campaign.sxdm}
        step = next((p.result.get("step_um") for p in campaign.sxdm if p.result.get("step_um")), None)
        emit("sxdm", sxdm_plots.maps_figure(maps, step), "sxdm_maps",
             "SXDM: Δd/d, θ_xy and θ_xz over each particle, one colour scale per quantity")
        emit("sxdm", sxdm_plots.sigma_figure(maps), "sxdm_sigma", "SXDM heterogeneity: standard deviations over each particle")
    if campaign.txm:
        results = {p.label: p.result for p in campaign.txm}
        emit("txm", txm_plots.comparison_figure(results), "txm_whiteline",
             "TXM-XANES: Ni K-edge white-line energy per voxel on one colour scale, and its distribution")
    if campaign.xas:
        results = {p.label: p.result for p in campaign.xas}
        emit("xas", xas_plots.comparison_figure(results), "xas",
             "Ex situ XAS: normalised Ni K edge, |χ(R)| and the first-shell Ni-O fit of every electrode")
    return sections


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


def _coverage(campaign: Campaign) -> list[str]:
    """What the comparison lacks, technique by technique and sample by sample."""
    lacks = []
    have = {(cell.morphology, cell.composition) for cell in campaign.xrd}
    lacks += [f"operando XRD: no {m}-{c} cell" for m in MORPHOLOGIES for c in COMPOSITIONS if (m, c) not in have]
    for technique, particles in (("SXDM", campaign.sxdm), ("TXM-XANES", campaign.txm), ("XAS", campaign.xas)):
        if not particles:
            lacks.append(f"{technique}: no runs in the catalog")
            continue
        have = {p.composition for p in particles if p.morphology == "SC"}
        lacks += [f"{technique}: no SC-{c} sample" for c in COMPOSITIONS if c not in have]
    return lacks


STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; } .yes { color: #1a7f37; font-weight: bold; } .no { color: #c62828; font-weight: bold; }
.na { color: #777; } figure { margin: 1.2em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; } .missing { color: #777; font-style: italic; }
"""

SECTIONS = (("xrd", "Operando XRD"), ("sxdm", "SXDM: strain and lattice rotation"), ("txm", "TXM-XANES: Ni white line"),
            ("xas", "Ex situ XAS: Ni K edge"))


def _verdict(holds: bool | None) -> str:
    return {True: '<td class="yes">yes</td>', False: '<td class="no">NO</td>', None: '<td class="na">not measured</td>'}[holds]


def render_html(campaign: Campaign, rows: list[Headline], sections: Mapping[str, list[str]], source: str) -> str:
    """The report page (one self-contained HTML document)."""
    table = "".join(f"<tr><td>{html.escape(r.claim)}</td><td>{html.escape(r.study)}</td>"
                    f"<td>{html.escape(r.measured)}</td>{_verdict(r.holds)}</tr>" for r in rows)
    body = [f"<h1>nanostrain campaign report</h1><p>Catalog {html.escape(source)}: {campaign.raw_runs} raw run(s), "
            f"{campaign.derived_runs} derived run(s); generated {time.strftime('%Y-%m-%d %H:%M %Z')}.</p>",
            '<h2 id="headlines">Headline numbers against the reference study</h2>',
            "<table><tr><th>claim</th><th>study</th><th>measured</th><th>holds</th></tr>" + table + "</table>"]
    for key, title in SECTIONS:
        body.append(f'<h2 id="{key}">{html.escape(title)}</h2>')
        body += sections.get(key) or [f'<p class="missing">No {html.escape(title.split(":")[0])} runs in this catalog.</p>']
    lacks = _coverage(campaign) + campaign.notes
    body.append('<h2 id="missing">Not in this campaign</h2>')
    body.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in lacks) + "</ul>" if lacks
                else "<p>Every technique and sample of the comparison is present.</p>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>nanostrain campaign report</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(client, path: Path | str, source: str = "", say: Say = print) -> tuple[Path, list[Headline]]:
    """Read the campaign from ``client`` (a catalog's root) and write the report to
    ``path`` (HTML), its figures to ``<path stem>_figures/`` (PNG and SVG); returns
    ``path`` and the headline rows."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"the report path must end in .html, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    campaign = read_campaign(client, say)
    folder = path.parent / f"{path.stem}_figures"
    sections = _figures(campaign, folder, path.parent, say)
    rows = headlines(campaign)
    path.write_text(render_html(campaign, rows, sections, source), encoding="utf-8")
    say(f"   report: {path} written in {time.monotonic() - started:.0f} s")
    return path, rows
