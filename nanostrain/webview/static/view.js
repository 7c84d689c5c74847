// The nanostrain web view: renders the JSON of /view/api/... into the page, and polls it
// so that runs in progress update in place. All text goes in through textContent (sample
// names and metadata are user input): nothing from the catalog is parsed as HTML.
"use strict";

const POLL_MS = 1500;

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function formatValue(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    const magnitude = Math.abs(value);
    return magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e6) ? value.toExponential(4) : value.toPrecision(6);
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function statusBadge(status) {
  return el("span", {class: "status status-" + status.replace(/[^a-z]/g, ""), text: status});
}

async function getJSON(url) {
  const response = await fetch(url, {cache: "no-store"});
  if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
  return response.json();
}

function showError(error) {
  const status = document.getElementById("status");
  status.hidden = false;
  status.className = "note error";
  status.textContent = "Could not read the catalog: " + error.message;
}

// ---- runs page ----------------------------------------------------------------------

function renderRuns(runs) {
  const table = document.getElementById("runs");
  document.getElementById("status").hidden = true;
  document.getElementById("empty").hidden = runs.length > 0;
  table.hidden = runs.length === 0;
  const body = el("tbody");
  for (const run of runs) {
    const derived = el("ul", {class: "derived-list"});
    for (const d of run.derived) {
      derived.append(el("li", {}, el("a", {href: `run/${encodeURIComponent(run.uid)}#${d.uid}`, text: d.analysis}), " ", statusBadge(d.status)));
    }
    const row = el("tr", {"data-uid": run.uid},
      el("td", {text: run.local_time}),
      el("td", {class: "num", text: formatValue(run.scan_id)}),
      el("td", {text: run.plan}),
      el("td", {text: run.sample}),
      el("td", {text: run.technique}),
      el("td", {}, statusBadge(run.status)),
      el("td", {}, derived),
      el("td", {class: "uid"}, el("a", {href: `run/${encodeURIComponent(run.uid)}`, text: run.uid.slice(0, 8)})));
    body.append(row);
  }
  table.querySelector("tbody").replaceWith(body);
}

async function pollRuns() {
  try {
    renderRuns(await getJSON(document.body.dataset.api + location.search));
  } catch (error) {
    showError(error);
  }
  setTimeout(pollRuns, 3 * POLL_MS);
}

// ---- run page -----------------------------------------------------------------------

function factRows(tbody, pairs) {
  const body = el("tbody");
  for (const [key, value] of pairs) body.append(el("tr", {}, el("th", {text: key}), el("td", {text: formatValue(value)})));
  tbody.replaceWith(body);
}

function streamTable(table) {
  const head = el("tr", {}, ...table.columns.map((name) => el("th", {text: table.units[name] ? `${name} (${table.units[name]})` : name})));
  const body = el("tbody", {}, ...table.rows.map((row) => el("tr", {}, ...row.map((value) => el("td", {class: typeof value === "number" ? "num" : "", text: formatValue(value)})))));
  return el("div", {class: "stream", "data-stream": table.stream},
    el("h4", {text: `${table.stream}: ${table.rows.length} row${table.rows.length === 1 ? "" : "s"}`}),
    el("div", {class: "scroll"}, el("table", {class: "data"}, el("thead", {}, head), body)));
}

function renderDerived(container, d) {
  let section = document.getElementById(d.uid);
  if (!section) {
    section = el("section", {class: "derived", id: d.uid, "data-analysis": d.analysis},
      el("h3", {}, el("span", {class: "analysis"}), " ", el("span", {class: "badge"}), el("span", {class: "uid", text: " " + d.uid.slice(0, 8)})),
      el("div", {class: "figure"}), el("div", {class: "tables"}));
    container.append(section);
  }
  section.querySelector(".analysis").textContent = d.analysis;
  section.querySelector(".badge").replaceChildren(statusBadge(d.status));
  section.dataset.status = d.status;
  section.dataset.rows = d.version;
  const figure = section.querySelector(".figure");
  if (d.figure && figure.dataset.version !== String(d.version)) {
    figure.dataset.version = String(d.version);
    let image = figure.querySelector("img");
    if (!image) {
      // a figure the server cannot draw yet (no frame analysed) stays hidden until it can
      image = figure.appendChild(el("img", {alt: `${d.analysis} figure`}));
      image.hidden = true;
      image.addEventListener("load", () => { image.hidden = false; });
      image.addEventListener("error", () => { image.hidden = true; });
    }
    image.src = `${d.figure}?v=${d.version}`;
  }
  section.querySelector(".tables").replaceChildren(
    ...(d.tables.length ? d.tables.map(streamTable) : [el("p", {class: "empty", text: "No rows yet."})]));
}

function renderRun(page) {
  const run = page.run;
  document.getElementById("status").hidden = true;
  document.title = `nanostrain · ${run.technique || run.plan} ${run.scan_id ?? ""} ${run.sample}`;
  document.getElementById("title").textContent = `scan ${run.scan_id ?? "?"} · ${run.plan} · ${run.sample || "no sample"}`;
  const live = document.getElementById("live");
  live.hidden = false;
  live.className = "status status-" + run.status;
  live.textContent = run.status;
  document.getElementById("summary").hidden = false;
  factRows(document.querySelector("#summary tbody"), [
    ["uid", run.uid], ["time", run.local_time], ["scan_id", run.scan_id], ["plan", run.plan],
    ["sample", run.sample], ["technique", run.technique], ["status", run.status]]);
  factRows(document.querySelector("#metadata tbody"), page.metadata);
  const container = document.getElementById("derived");
  document.getElementById("no-derived").hidden = page.derived.length > 0;
  for (const d of page.derived) renderDerived(container, d);
  if (location.hash && !document.body.dataset.scrolled) {  // a derived run linked from the runs page
    document.body.dataset.scrolled = "yes";
    document.getElementById(decodeURIComponent(location.hash.slice(1)))?.scrollIntoView();
  }
  return run.status === "running" || page.derived.some((d) => d.status === "running");
}

async function pollRun(uid) {
  let again = true;
  try {
    again = renderRun(await getJSON(document.body.dataset.api + encodeURIComponent(uid)));
    document.body.dataset.live = again ? "yes" : "no";
  } catch (error) {
    showError(error);
  }
  // finished runs are re-read now and then: a replay may add derived runs
  setTimeout(() => pollRun(uid), again ? POLL_MS : 10 * POLL_MS);
}

if (document.body.dataset.page === "runs") pollRuns();
else pollRun(decodeURIComponent(location.pathname.split("/").filter(Boolean).pop()));
