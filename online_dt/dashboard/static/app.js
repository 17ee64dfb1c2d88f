// online-dt dashboard: polls the read-only JSON API and draws the run's panels with Chart.js.
// Every text from the run (prompts, completions, reasons, config) is set with textContent,
// never parsed as HTML.
"use strict";

const state = {
  settings: { poll_interval_s: 2, recent_samples: 50 },
  generation: null, // metrics.jsonl generation; a change means the file was rewritten (resume)
  metrics: [], // every per-iteration record, in order
  lastIteration: -1,
  samplesTotal: -1,
  samplesGeneration: null,
  bufferKey: null, // (buffer size, chosen iteration) last drawn
  bufferFollow: true, // the slider follows the newest iteration
  evalCreatedAt: null,
  evalRows: [],
  klplaneKey: null, // (metrics generation, records, evaluation) last drawn on the KL plane
  polls: 0,
};
window.onlineDt = { state };

const $ = (id) => document.getElementById(id);

function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "–";
  return Number(value).toFixed(digits);
}

function text(el, value) {
  el.textContent = value === null || value === undefined ? "–" : String(value);
}

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  // 401: the dashboard's token changed or the login cookie is gone; log in again
  if (response.status === 401) window.location.assign("/login");
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

// -- charts ------------------------------------------------------------------------------------

const COLORS = {
  target: "#dc2626",
  achieved: "#2563eb",
  band: "rgba(37, 99, 235, 0.15)",
  d1: "#7c3aed",
  d2: "#0891b2",
  kl: "#ea580c",
  rollout: "#2563eb",
  scoring: "#16a34a",
  training: "#ea580c",
  sync: "#7c3aed",
  other: "#9ca3af",
  throughput: "#111827",
  eval: "#dc2626",
  reference: "#6b7280",
};

// an iteration's point on the KL plane: light (first) to dark (last) blue
function iterationColor(index, count) {
  const f = count > 1 ? index / (count - 1) : 1;
  return `rgba(37, 99, 235, ${(0.25 + 0.75 * f).toFixed(3)})`;
}

const charts = {};
window.onlineDt.charts = charts;

function linearX(title) {
  return { type: "linear", title: { display: true, text: title }, ticks: { precision: 0 } };
}

function makeCharts() {
  Chart.defaults.animation = false;
  Chart.defaults.font.size = 11;
  Chart.defaults.maintainAspectRatio = false;

  charts.schedule = new Chart($("chart-schedule"), {
    type: "line",
    data: {
      datasets: [
        { label: "p10", data: [], borderColor: "rgba(37,99,235,0.3)", borderWidth: 1,
          pointRadius: 0, fill: false },
        { label: "p10-p90", data: [], borderColor: "rgba(37,99,235,0.3)", borderWidth: 1,
          pointRadius: 0, backgroundColor: COLORS.band, fill: "-1" },
        { label: "achieved mean", data: [], borderColor: COLORS.achieved,
          backgroundColor: COLORS.achieved, pointRadius: 2 },
        { label: "target", data: [], borderColor: COLORS.target, backgroundColor: COLORS.target,
          borderDash: [6, 3], pointRadius: 2 },
      ],
    },
    options: {
      scales: { x: linearX("iteration"), y: { title: { display: true, text: "reward" } } },
      plugins: { legend: { labels: { filter: (item) => item.text !== "p10" } } },
    },
  });

  charts.calibration = new Chart($("chart-calibration"), {
    type: "scatter",
    data: {
      datasets: [
        { label: "iterations", data: [], backgroundColor: COLORS.achieved, pointRadius: 3 },
        { label: "achieved = target", type: "line", data: [], borderColor: "#9ca3af",
          borderDash: [4, 4], pointRadius: 0, fill: false },
        { label: "latest evaluation", data: [], backgroundColor: COLORS.eval, pointRadius: 5,
          pointStyle: "triangle" },
      ],
    },
    options: {
      scales: {
        x: { type: "linear", title: { display: true, text: "target" } },
        y: { type: "linear", title: { display: true, text: "achieved mean" } },
      },
    },
  });

  charts.klplane = new Chart($("chart-klplane"), {
    type: "scatter",
    data: {
      datasets: [
        { label: "iterations", data: [], backgroundColor: [], borderColor: [], pointRadius: 4 },
        { label: "latest evaluation (one point per target)", data: [], showLine: true,
          borderColor: COLORS.eval, backgroundColor: COLORS.eval, pointRadius: 5,
          pointStyle: "triangle" },
        { label: "base model's own reference: reward bins at -log P(bin)", data: [],
          showLine: true, borderColor: COLORS.reference, backgroundColor: COLORS.reference,
          borderDash: [2, 3], pointRadius: 2 },
      ],
    },
    options: {
      scales: {
        x: { type: "linear", beginAtZero: true,
             title: { display: true, text: "KL to the base model (nats / completion)" } },
        y: { type: "linear", title: { display: true, text: "achieved mean reward" } },
      },
      plugins: {
        tooltip: { callbacks: { label: (ctx) =>
          `${ctx.raw.label}: reward ${fmt(ctx.raw.y)}, KL ${fmt(ctx.raw.x, 2)}` } },
      },
    },
  });

  charts.buffer = new Chart($("chart-buffer"), {
    type: "bar",
    data: {
      labels: [],
      datasets: [
        { label: "at iteration", data: [], backgroundColor: "rgba(37,99,235,0.75)" },
        { label: "now", data: [], backgroundColor: "rgba(156,163,175,0.45)" },
      ],
    },
    options: {
      scales: {
        x: { title: { display: true, text: "achieved reward (bin centre)" } },
        y: { title: { display: true, text: "samples" }, beginAtZero: true },
      },
    },
  });

  charts.diversity = new Chart($("chart-diversity"), {
    type: "line",
    data: {
      datasets: [
        { label: "distinct-1", data: [], borderColor: COLORS.d1, backgroundColor: COLORS.d1,
          yAxisID: "y", pointRadius: 2 },
        { label: "distinct-2", data: [], borderColor: COLORS.d2, backgroundColor: COLORS.d2,
          yAxisID: "y", pointRadius: 2 },
        { label: "KL to base", data: [], borderColor: COLORS.kl, backgroundColor: COLORS.kl,
          yAxisID: "y1", pointRadius: 2 },
      ],
    },
    options: {
      scales: {
        x: linearX("iteration"),
        y: { min: 0, max: 1, title: { display: true, text: "distinct-n" } },
        y1: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
              title: { display: true, text: "KL (nats / completion)" } },
      },
    },
  });

  const stage = (label, key) => ({
    label, data: [], backgroundColor: COLORS[key], stack: "time", yAxisID: "y", order: 2,
  });
  charts.throughput = new Chart($("chart-throughput"), {
    type: "bar",
    data: {
      labels: [],
      datasets: [
        stage("rollout", "rollout"),
        stage("scoring", "scoring"),
        stage("training", "training"),
        stage("sync", "sync"),
        stage("other", "other"),
        { label: "samples/s", type: "line", data: [], borderColor: COLORS.throughput,
          backgroundColor: COLORS.throughput, yAxisID: "y1", order: 1, pointRadius: 2 },
      ],
    },
    options: {
      scales: {
        x: { stacked: true, title: { display: true, text: "iteration" } },
        y: { stacked: true, beginAtZero: true, title: { display: true, text: "seconds" } },
        y1: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
              title: { display: true, text: "samples / s" } },
      },
    },
  });
}

function xy(key) {
  return state.metrics
    .filter((m) => m[key] !== null && m[key] !== undefined)
    .map((m) => ({ x: m.iteration, y: m[key] }));
}

function drawMetrics() {
  const s = charts.schedule.data.datasets;
  s[0].data = xy("achieved_p10");
  s[1].data = xy("achieved_p90");
  s[2].data = xy("achieved_mean");
  s[3].data = xy("target");
  charts.schedule.update("none");

  drawCalibration();

  const d = charts.diversity.data.datasets;
  d[0].data = xy("distinct_1");
  d[1].data = xy("distinct_2");
  d[2].data = xy("kl_to_base");
  charts.diversity.update("none");

  const t = charts.throughput.data;
  t.labels = state.metrics.map((m) => m.iteration);
  const keys = ["rollout_s", "scoring_s", "training_s", "sync_s", "other_s", "samples_per_s"];
  keys.forEach((key, i) => {
    t.datasets[i].data = state.metrics.map((m) => m[key] ?? null);
  });
  charts.throughput.update("none");
}

function drawCalibration() {
  const c = charts.calibration.data.datasets;
  c[0].data = state.metrics
    .filter((m) => m.target != null && m.achieved_mean != null)
    .map((m) => ({ x: m.target, y: m.achieved_mean }));
  c[2].data = state.evalRows.map((r) => ({ x: r.target, y: r.mean }));
  const values = [...c[0].data, ...c[2].data].flatMap((p) => [p.x, p.y]);
  if (values.length) {
    const lo = Math.min(...values) - 0.05;
    const hi = Math.max(...values) + 0.05;
    c[1].data = [{ x: lo, y: lo }, { x: hi, y: hi }];
  } else {
    c[1].data = [];
  }
  charts.calibration.update("none");
}

// -- panels --------------------------------------------------------------------------------------

async function pollMetrics() {
  let data = await getJSON(`/api/metrics?since=${state.lastIteration}`);
  if (state.generation !== null && data.generation !== state.generation) {
    // metrics.jsonl was rewritten (a resumed run cut its logs): start over
    state.metrics = [];
    state.lastIteration = -1;
    data = await getJSON("/api/metrics?since=-1");
  }
  state.generation = data.generation;
  if (data.records.length) {
    state.metrics.push(...data.records);
    state.lastIteration = state.metrics[state.metrics.length - 1].iteration;
    drawMetrics();
  }
  document.body.dataset.iterations = String(state.metrics.length);
  document.body.dataset.lastIteration = String(state.lastIteration);
}

function renderStatus(st) {
  text($("st-state"), st.state);
  const total = st.iterations_total;
  const done = st.iteration === null ? null : st.iteration + 1; // iterations are 0-based
  text($("st-iteration"), done === null ? null : total ? `${done} / ${total}` : done);
  text($("st-version"), st.policy_version);
  text($("st-buffer"), st.buffer_size);
  text($("st-target"), fmt(st.target));
  text($("st-achieved"), fmt(st.achieved_mean));
  text($("st-checkpoint"), st.checkpoint);
  text($("st-updated"), st.updated_at ? new Date(st.updated_at * 1000).toLocaleTimeString() : null);

  const rejected = st.rejected || { count: 0, latest: [] };
  const problems = rejected.count + (st.errors_count || 0) + (st.config_error ? 1 : 0);
  const summary = $("errors-summary");
  summary.className = problems ? "bad" : "";
  const parts = [];
  if (rejected.count) parts.push(`${rejected.count} rejected reward batch(es)`);
  if (st.errors_count) parts.push(`${st.errors_count} error(s) in metrics`);
  if (st.config_error) parts.push("config unreadable");
  summary.textContent = parts.length ? parts.join(", ") : "none";
  const list = $("errors-list");
  list.replaceChildren();
  const add = (line) => {
    const li = document.createElement("li");
    li.textContent = line;
    list.appendChild(li);
  };
  rejected.latest.forEach((r) => add(`rejected ${r.file}: ${r.reason}`));
  (st.errors || []).forEach((e) => add(`iteration ${e.iteration}: ${e.error}`));
  if (st.config_error) add(st.config_error);

  const badge = $("connection");
  badge.textContent = st.state === "finished" ? "finished" : "live";
  badge.className = "badge live";
}

async function loadConfig() {
  const cfg = await getJSON("/api/config");
  const dl = $("config-summary");
  dl.replaceChildren();
  for (const [key, value] of Object.entries(cfg.summary || {})) {
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    dl.append(dt, dd);
  }
  $("config-full").textContent = cfg.config ? JSON.stringify(cfg.config, null, 2) :
    (cfg.error || "no config.yaml");
}

async function pollSamples() {
  const data = await getJSON(`/api/samples?limit=${state.settings.recent_samples}`);
  if (data.total === state.samplesTotal && data.generation === state.samplesGeneration) return;
  state.samplesTotal = data.total;
  state.samplesGeneration = data.generation;
  const body = $("samples-table").querySelector("tbody");
  body.replaceChildren();
  for (const r of data.records) {
    const tr = document.createElement("tr");
    cell(tr, r.iteration ?? "–", "num");
    cell(tr, r.prompt ?? "", "text");
    cell(tr, r.completion ?? "", "text");
    cell(tr, fmt(r.target), "num");
    cell(tr, fmt(r.achieved_reward), "num");
    cell(tr, r.policy_version ?? "–", "num");
    body.appendChild(tr);
  }
}

async function pollBuffer(bufferSize, force = false) {
  const slider = $("buffer-iteration");
  const chosen = state.bufferFollow ? null : Number(slider.value);
  const key = `${bufferSize}|${chosen}`;
  if (!force && key === state.bufferKey) return;
  const query = chosen === null ? "" : `&iteration=${chosen}`;
  const data = await getJSON(`/api/buffer?bins=30${query}`);
  state.bufferKey = key;
  const iterations = data.iterations || [];
  if (iterations.length) {
    slider.min = String(iterations[0]);
    slider.max = String(iterations[iterations.length - 1]);
    if (state.bufferFollow) slider.value = slider.max;
  }
  text($("buffer-at"), data.at ? data.at.iteration : null);
  text($("buffer-total"), data.total);
  text($("buffer-best"), fmt(data.best));
  const problem = $("buffer-error");
  problem.textContent = data.error || "";
  problem.hidden = !data.error;
  const edges = data.edges || [];
  const chart = charts.buffer;
  chart.data.labels = edges.slice(0, -1).map((e, i) => fmt((e + edges[i + 1]) / 2, 2));
  chart.data.datasets[0].label = `up to iteration ${data.at ? data.at.iteration : "–"}`;
  chart.data.datasets[0].data = data.at ? data.at.counts : [];
  chart.data.datasets[1].data = data.current || [];
  chart.update("none");
}

async function pollEval(available) {
  if (!available) return;
  const data = await getJSON("/api/eval");
  const report = data.report;
  if (!report || report.created_at === state.evalCreatedAt) return;
  state.evalCreatedAt = report.created_at;
  state.evalRows = report.rows || [];
  const when = report.created_at ? new Date(report.created_at * 1000).toLocaleString() : "";
  const where = report.iteration === null || report.iteration === undefined ? "" :
    ` at iteration ${report.iteration} (policy version ${report.policy_version})`;
  $("eval-summary").textContent =
    `${report.samples_per_target} samples per target${where}, ${when}; ` +
    `best reward in the buffer ${fmt(report.buffer ? report.buffer.best_reward : null)}`;
  const body = $("eval-table").querySelector("tbody");
  body.replaceChildren();
  for (const r of state.evalRows) {
    const tr = document.createElement("tr");
    if (r.extrapolation) tr.className = "extrapolation";
    for (const key of ["target", "mean", "p10", "median", "p90", "std"]) cell(tr, fmt(r[key]), "num");
    cell(tr, fmt(r.distinct_1, 2), "num");
    cell(tr, fmt(r.distinct_2, 2), "num");
    cell(tr, fmt(r.kl_to_base, 2), "num");
    cell(tr, r.extrapolation ? "extrapolation" : "");
    body.appendChild(tr);
  }
  const img = $("eval-plot");
  if (data.plot_available) {
    img.src = `/api/eval/plot.png?v=${encodeURIComponent(String(report.created_at))}`;
    img.hidden = false;
  }
  drawCalibration();
}

async function pollKlPlane() {
  const key = `${state.generation}|${state.metrics.length}|${state.evalCreatedAt}`;
  if (key === state.klplaneKey) return;
  const data = await getJSON("/api/klplane");
  state.klplaneKey = key;
  const d = charts.klplane.data.datasets;
  const its = data.iterations || [];
  d[0].data = its.map((p) => ({ x: p.kl_to_base, y: p.achieved_mean,
    label: `iteration ${p.iteration} (target ${fmt(p.target)})` }));
  d[0].backgroundColor = its.map((_, i) => iterationColor(i, its.length));
  d[0].borderColor = d[0].backgroundColor;
  const ev = data.eval;
  d[1].data = ev ? ev.points.map((p) => ({ x: p.kl_to_base, y: p.achieved,
    label: `target ${fmt(p.target)}${p.extrapolation ? " (extrapolation)" : ""}` })) : [];
  const ref = data.reference;
  d[2].data = ref ? ref.points.map((b) => ({ x: b.kl_lower_bound, y: b.reward_mean,
    label: `base, reward ${fmt(b.center, 2)} ± ${ref.half_width} (${b.count} samples, ` +
      `NLL/token ${fmt(b.nll_per_token)})` })) : [];
  const parts = [];
  if (ev) {
    const at = ev.iteration === null || ev.iteration === undefined ? "" :
      ` of iteration ${ev.iteration}`;
    parts.push(`evaluation${at}: ${ev.points.length} target(s) with a KL estimate`);
  }
  if (ref) {
    parts.push(`reference: ${ref.samples} base samples, bins ±${ref.half_width} with ` +
      `≥ ${ref.min_count} samples`);
  } else if (ev) {
    parts.push("no base reference: run online-dt eval with --reference-samples N");
  }
  $("klplane-summary").textContent = parts.join("; ");
  charts.klplane.update("none");
}

async function poll() {
  try {
    await pollMetrics();
    const st = await getJSON("/api/status");
    renderStatus(st);
    await pollSamples();
    await pollBuffer(st.buffer_size);
    await pollEval(st.eval_available);
    await pollKlPlane();
    state.polls += 1;
    document.body.dataset.polls = String(state.polls);
  } catch (err) {
    const badge = $("connection");
    badge.textContent = "offline, retrying";
    badge.className = "badge down";
  }
  setTimeout(poll, state.settings.poll_interval_s * 1000);
}

async function start() {
  makeCharts();
  try {
    state.settings = await getJSON("/api/settings");
    text($("run-name"), state.settings.name);
    document.title = `online-dt: ${state.settings.name}`;
    await loadConfig();
  } catch (err) {
    $("connection").textContent = "offline, retrying";
  }
  $("buffer-iteration").addEventListener("input", (event) => {
    const slider = event.target;
    state.bufferFollow = slider.value === slider.max;
    pollBuffer(null, true);
  });
  poll();
}

document.addEventListener("DOMContentLoaded", start);
