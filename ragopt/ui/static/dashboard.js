// The live page: polls /api/snapshot every interval, shows each run's numbers and extends the charts.
// Numbers come as the server read them from the same metric families /metrics shows.
"use strict";

// key, label, kind ("int", "float", "pct", "rate"); the first five are the guide's headline numbers.
const NUMBERS = [
  ["cpu_pct", "CPU % of all cores", "float", true],
  ["rss_mb", "memory: RSS of the process tree (MB)", "float", true],
  ["docs_per_min", "docs/min (last minute)", "float", true],
  ["parse_cache_hit_rate", "parse cache hit rate (ragopt)", "pct", true],
  ["raganything_parse_cache_hit_rate", "parse cache hit rate (RAG-Anything)", "pct", true],
  ["llm_cache_hit_rate", "LLM cache hit rate (LightRAG)", "pct", true],
  ["llm_in_flight", "LLM requests in a slot", "int", true],
  ["llm_slots", "K: the LLM's slots", "int", true],
  ["tokens_per_s", "tokens/s (last minute)", "float", true],
  ["llm_errors", "LLM errors", "int", true],
  ["docs_ok", "documents done", "int"],
  ["docs_failed", "documents failed", "int"],
  ["docs_skipped", "documents skipped", "int"],
  ["docs_in_flight", "documents in flight", "int"],
  ["llm_queued", "LLM requests queued", "int"],
  ["llm_calls", "LLM requests", "int"],
  ["llm_429", "LLM 429 answers", "int"],
  ["llm_retries", "LLM retries", "int"],
  ["prompt_tokens", "tokens in", "int"],
  ["completion_tokens", "tokens out", "int"],
  ["embedding_calls", "embedding calls", "int"],
  ["embedding_texts", "embedded texts", "int"],
  ["storage_flushes", "storage flushes", "int"],
  ["parse_cache_hits", "parse cache hits (ragopt)", "int"],
  ["llm_cache_hits", "LLM cache hits", "int"],
  ["llm_cache_misses", "LLM cache misses", "int"],
  ["gate_holds", "memory gate holds", "int"],
  ["elapsed_s", "seconds since start", "float"],
];
const CHARTS = [
  ["chart-docs", "Documents done", "docs_ok", "documents"],
  ["chart-slots", "LLM requests in a slot (dashed: K)", "llm_in_flight", "requests"],
  ["chart-tokens", "LLM tokens/s over the last minute", "tokens_per_s", "tokens/s"],
  ["chart-cpu", "CPU % of all cores", "cpu_pct", "%"],
  ["chart-rss", "RSS of the process tree", "rss_mb", "MB"],
];

const SIMULATED_NOTE = "simulated LLM service";  // ragopt.ui.plots.SIMULATED_NOTE
let seq = 0;
let titledSimulated = false;
const traces = {};  // run -> trace index, the same in every chart

function show(value, kind) {
  if (value === null || value === undefined) return "–";
  if (kind === "int") return String(Math.round(value));
  if (kind === "pct") return (100 * value).toFixed(1) + " %";
  return Number(value).toFixed(1);
}

function card(run) {
  let section = document.querySelector(`section.run[data-run="${CSS.escape(run.run)}"]`);
  if (section) return section;
  section = document.createElement("section");
  section.className = "run";
  section.dataset.run = run.run;
  section.innerHTML = `<h2></h2><p class="backend"></p><div class="numbers"></div>`;
  const grid = section.querySelector(".numbers");
  for (const [key, label, kind, headline] of NUMBERS) {
    const cell = document.createElement("div");
    if (headline) cell.className = "headline";
    cell.innerHTML = `<b data-key="${key}" data-kind="${kind}">–</b>${label}`;
    grid.appendChild(cell);
  }
  document.getElementById("runs").appendChild(section);
  document.getElementById("empty").hidden = true;
  return section;
}

function render(run) {
  const section = card(run);
  const simulated = run.simulated === true ? " · SIMULATED LLM" : "";
  section.querySelector("h2").textContent = `${run.label} (${run.done ? "done" : "running"})${simulated}`;
  section.querySelector(".backend").textContent = run.backend || "";
  for (const cell of section.querySelectorAll("b[data-key]")) {
    const value = run[cell.dataset.key];
    cell.dataset.value = JSON.stringify(value === undefined ? null : value);
    cell.textContent = show(value, cell.dataset.kind);
  }
}

function ensureTrace(run, label) {
  if (run in traces) return;
  traces[run] = Object.keys(traces).length;
  for (const [id, , key] of CHARTS) {
    Plotly.addTraces(id, {x: [], y: [], mode: "lines", name: label, line: {shape: key === "docs_ok" ? "hv" : "linear"}});
  }
}

function extend(points, run, label) {
  ensureTrace(run, label);
  const usable = points.filter(p => p.elapsed_s !== null);
  if (!usable.length) return;
  for (const [id, , key] of CHARTS) {
    Plotly.extendTraces(id, {x: [usable.map(p => p.elapsed_s)], y: [usable.map(p => p[key])]}, [traces[run]]);
  }
  const slots = usable[usable.length - 1].llm_slots;
  if (slots !== null) {
    Plotly.relayout("chart-slots", {shapes: [{type: "line", xref: "paper", x0: 0, x1: 1, y0: slots, y1: slots,
                                               line: {dash: "dash", color: "#888"}}]});
  }
}

async function poll() {
  try {
    const response = await fetch(`/api/snapshot?after=${seq}`, {cache: "no-store"});
    const snapshot = await response.json();
    const labels = {};
    for (const run of snapshot.runs) {
      labels[run.run] = run.label;
      render(run);
    }
    for (const [run, points] of Object.entries(snapshot.points)) extend(points, run, labels[run] || run);
    const simulated = snapshot.runs.some(run => run.simulated === true);
    document.getElementById("simulated").hidden = !simulated;
    if (simulated !== titledSimulated) {  // every figure made on the simulated LLM says so
      titledSimulated = simulated;
      for (const [id, title] of CHARTS) Plotly.relayout(id, {"title.text": simulated ? `${title} (${SIMULATED_NOTE})` : title});
    }
    document.getElementById("interval").textContent = snapshot.interval_s;
    seq = snapshot.seq;
    document.getElementById("seq").textContent = String(seq);
    setTimeout(poll, 1000 * snapshot.interval_s);
  } catch (error) {
    setTimeout(poll, 2000);  // the server restarts or is gone: keep trying
  }
}

for (const [id, title, , unit] of CHARTS) {
  Plotly.newPlot(id, [], {title: {text: title, font: {size: 13}}, margin: {t: 35, l: 45, r: 10, b: 35},
                          xaxis: {title: {text: "seconds since start"}}, yaxis: {title: {text: unit}}},
                 {displaylogo: false, responsive: true});
}
poll();
