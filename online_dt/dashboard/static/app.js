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
  evalKey: null, // (kind, created_at) of the evaluation report last drawn
  evalKind: null, // "calibration" (one reward) or "objectives" (several), null before one
  evalRows: [],
  klplaneKey: null, // (metrics generation, records, evaluation) last drawn on the KL plane
  // several objectives: [{name, low, high}] (low/high null when unknown), null for one reward
  objectives: null,
  objectivesKey: null, // the objectives the charts were last set up for
  // (metrics generation, records, buffer size, evaluation) last drawn on the Pareto panel
  paretoKey: null,
  polls: 0,
};
window.onlineDt = { state };

const $ = (id) => document.getElementById(id);

function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "–";
  return Number(value).toFixed(digits);
}

function isNum(value) {
  return typeof value === "number" && Number.isFinite(value);
}

// a reward or target: one number, or a vector (several objectives) as "[0.512, -7.250]"
function fmtReward(value, digits = 3) {
  if (Array.isArray(value)) return `[${value.map((v) => fmt(v, digits)).join(", ")}]`;
  return fmt(value, digits);
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
  best: "#16a34a",
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
  evalGrid: "#d97706", // an evaluation of several objectives on the Pareto panel
};

// one colour per objective (several objectives), in the config's order
const OBJECTIVE_COLORS = ["#2563eb", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be123c"];

function objectiveColor(m, alpha = 1) {
  const hex = OBJECTIVE_COLORS[m % OBJECTIVE_COLORS.length];
  if (alpha === 1) return hex;
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

// an iteration's point on the KL plane: light (first) to dark (last) blue
function iterationColor(index, count, rgb = "37, 99, 235") {
  const f = count > 1 ? index / (count - 1) : 1;
  return `rgba(${rgb}, ${(0.25 + 0.75 * f).toFixed(3)})`;
}

const charts = {};
window.onlineDt.charts = charts;

// the Pareto chart's datasets from this index on are the latest evaluation's
const EVAL_DATASETS = 5;

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
        // conditioning.best_command: the mean achieved reward of the prompts that asked for it
        { label: "best command (achieved mean)", data: [], borderColor: COLORS.best,
          backgroundColor: COLORS.best, pointRadius: 2 },
      ],
    },
    options: {
      scales: { x: linearX("iteration"), y: { title: { display: true, text: "reward" } } },
      plugins: {
        legend: {
          labels: {
            // p10 is the band's lower edge; the best command only where a run logs it
            filter: (item, data) =>
              item.text !== "p10" &&
              (item.datasetIndex !== 4 || data.datasets[4].data.length > 0),
          },
        },
      },
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

  // several objectives: the buffer's front in the plane of the first two, and the targets
  charts.pareto = new Chart($("chart-pareto"), {
    type: "scatter",
    data: {
      datasets: [
        { label: "buffer samples", data: [], backgroundColor: "rgba(156,163,175,0.35)",
          borderColor: "rgba(156,163,175,0.35)", pointRadius: 2, order: 5 },
        { label: "buffer's Pareto front", data: [], showLine: true, stepped: "after",
          borderColor: COLORS.achieved, backgroundColor: COLORS.achieved, pointRadius: 3,
          order: 4 },
        { label: "target per iteration (light to dark: early to late)", data: [],
          backgroundColor: [], borderColor: [], pointRadius: 4, order: 3 },
        { label: "latest target", data: [], backgroundColor: COLORS.target,
          borderColor: "#7f1d1d", borderWidth: 2, pointRadius: 8, pointStyle: "rectRot",
          order: 1 },
        { label: "latest achieved mean", data: [], backgroundColor: "rgba(0,0,0,0)",
          borderColor: COLORS.throughput, borderWidth: 2, pointRadius: 7, order: 2 },
        // the latest online-dt eval --grid report (datasets 5-7; EVAL_DATASETS)
        { label: "evaluation targets", data: [], backgroundColor: COLORS.evalGrid,
          borderColor: COLORS.evalGrid, borderWidth: 1, pointRadius: 5, pointStyle: "crossRot",
          order: 2 },
        { label: "evaluation: achieved mean per target", data: [], backgroundColor: [],
          borderColor: COLORS.evalGrid, borderWidth: 2, pointRadius: 6, pointStyle: "triangle",
          order: 1 },
        { label: "evaluation's achieved front", data: [], showLine: true, stepped: "after",
          borderColor: COLORS.evalGrid, backgroundColor: COLORS.evalGrid, borderDash: [6, 3],
          pointRadius: 0, order: 3 },
      ],
    },
    options: {
      scales: {
        x: { type: "linear", title: { display: true, text: "objective 1" } },
        y: { type: "linear", title: { display: true, text: "objective 2" } },
      },
      plugins: {
        // the evaluation's series appear in the legend once there is an evaluation to draw
        legend: { labels: { filter: (item, data) => item.datasetIndex < EVAL_DATASETS ||
          data.datasets[item.datasetIndex].data.length > 0 } },
        tooltip: { callbacks: { label: (ctx) =>
          `${ctx.raw.label || ctx.dataset.label}: (${fmt(ctx.raw.x)}, ${fmt(ctx.raw.y)})` } },
      },
    },
  });

  charts.hypervolume = new Chart($("chart-hypervolume"), {
    type: "line",
    data: {
      datasets: [
        { label: "hypervolume", data: [], borderColor: COLORS.achieved,
          backgroundColor: COLORS.achieved, yAxisID: "y", pointRadius: 2 },
        { label: "front size", data: [], borderColor: COLORS.other,
          backgroundColor: COLORS.other, borderDash: [4, 3], yAxisID: "y1", pointRadius: 1 },
      ],
    },
    options: {
      scales: {
        x: linearX("iteration"),
        y: { beginAtZero: true, title: { display: true, text: "hypervolume (normalised)" } },
        y1: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
              ticks: { precision: 0 }, title: { display: true, text: "front points" } },
      },
    },
  });
}

// -- several objectives --------------------------------------------------------------------------

function objectiveNames() {
  return (state.objectives || []).map((o) => o.name);
}

// whether every objective's [low, high] is known: the per-objective charts are then normalised
function normalised() {
  return (state.objectives || []).every((o) => isNum(o.low) && isNum(o.high) && o.high > o.low);
}

// objective m's value in the per-objective charts: its range mapped to [-1, 1] when known
function norm(m, value) {
  if (!isNum(value)) return null;
  const o = (state.objectives || [])[m];
  if (!normalised() || !o) return value;
  return (value - (o.low + o.high) / 2) / ((o.high - o.low) / 2);
}

// the objectives of a run with several, from the config ([{name, low, high}]), the Pareto API
// (the same) or a metrics record (names only); ranges already known for the same names stay
function setObjectives(list) {
  if (!Array.isArray(list) || !list.length) return;
  const known = state.objectives || [];
  const merged = list.map((o, m) => {
    const item = typeof o === "string" ? { name: o, low: null, high: null } :
      { name: String(o.name), low: isNum(o.low) ? o.low : null, high: isNum(o.high) ? o.high : null };
    const before = known[m];
    if (before && before.name === item.name && item.low === null && item.high === null) {
      return before;
    }
    return item;
  });
  const key = JSON.stringify(merged);
  if (key === state.objectivesKey) return;
  state.objectives = merged;
  state.objectivesKey = key;
  configureObjectives();
  drawMetrics();
}

// switch the panels to several objectives: per-objective series, the Pareto panel, notes
function configureObjectives() {
  const names = objectiveNames();
  const scaled = normalised();
  document.body.dataset.objectives = String(names.length);
  const units = scaled ? "normalised per objective: low \u2192 \u22121, high \u2192 +1" :
    "reward units";
  const rawLabel = (ctx) => `${ctx.dataset.label}: ${fmt(ctx.raw.raw)}`;

  const schedule = [];
  names.forEach((name, m) => {
    const color = objectiveColor(m);
    schedule.push(
      { label: `${name} p10`, data: [], borderColor: objectiveColor(m, 0.3), borderWidth: 1,
        pointRadius: 0, fill: false },
      { label: `${name} p10-p90`, data: [], borderColor: objectiveColor(m, 0.3), borderWidth: 1,
        pointRadius: 0, backgroundColor: objectiveColor(m, 0.12), fill: "-1" },
      { label: `${name} achieved mean`, data: [], borderColor: color, backgroundColor: color,
        pointRadius: 2 },
      { label: `${name} target`, data: [], borderColor: color, backgroundColor: color,
        borderDash: [6, 3], pointRadius: 2 },
    );
  });
  charts.schedule.data.datasets = schedule;
  const so = charts.schedule.config.options; // the chart's own options, re-read on update
  so.scales.y.title.text = scaled ? "reward (normalised)" : "reward";
  so.plugins.legend.labels.filter = (item) => !item.text.endsWith(" p10");
  so.plugins.tooltip = { callbacks: { label: rawLabel } };
  $("schedule-hint").textContent = `${names.length} objectives (${names.join(", ")}): mean ` +
    `target (dashed), achieved mean and its p10-p90 band per iteration; ${units}`;

  const calibration = names.map((name, m) => ({
    label: name, data: [], backgroundColor: objectiveColor(m), pointRadius: 3,
  }));
  calibration.push(
    { label: "achieved = target", type: "line", data: [], borderColor: "#9ca3af",
      borderDash: [4, 4], pointRadius: 0, fill: false },
    { label: "latest evaluation", data: [], backgroundColor: COLORS.eval, pointRadius: 5,
      pointStyle: "triangle" },
  );
  charts.calibration.data.datasets = calibration;
  const co = charts.calibration.config.options;
  co.scales.x.title.text = scaled ? "mean target (normalised)" : "mean target";
  co.scales.y.title.text = scaled ? "achieved mean (normalised)" : "achieved mean";
  co.plugins.tooltip = { callbacks: { label: (ctx) => ctx.raw.label ||
    `${ctx.dataset.label}: (${fmt(ctx.raw.x)}, ${fmt(ctx.raw.y)})` } };
  $("calibration-hint").textContent = "per objective: achieved mean vs mean target of each " +
    `iteration (and the latest evaluation); ${units}`;

  // the reward-vs-KL plane needs one reward
  $("klplane-chart").hidden = true;
  $("klplane-intro").hidden = true;
  $("klplane-summary").textContent = `This run conditions on ${names.length} objectives ` +
    `(${names.join(", ")}): the reward-vs-KL plane needs a single reward. KL to the base ` +
    "per iteration: the diversity panel; the objectives' trade-off: the Pareto front panel.";

  // the buffer histogram: the first objective's reward (the buffer's scalar column)
  $("buffer-objective").textContent = ` (${names[0]}, the first of ${names.length} objectives)`;
  charts.buffer.config.options.scales.x.title.text = `achieved ${names[0]} (bin centre)`;
  charts.buffer.update("none");

  const vector = `[${names.join(", ")}]`;
  $("st-target-label").textContent = `target ${vector}`;
  $("st-achieved-label").textContent = `achieved mean ${vector}`;
  $("samples-target").textContent = `target ${vector}`;
  $("samples-achieved").textContent = `achieved ${vector}`;

  $("panel-pareto").hidden = false;
  const px = charts.pareto.config.options.scales;
  px.x.title.text = `${names[0]} (reward units, higher is better)`;
  px.y.title.text = names.length > 1 ? `${names[1]} (reward units, higher is better)` : "";
  const note = $("pareto-note");
  if (names.length > 2) {
    note.textContent = `${names.length} objectives: shown in the plane of the first two ` +
      `(${names[0]}, ${names[1]}); the front is non-dominated in all ${names.length}, so some ` +
      "of its points look dominated in this plane.";
    note.hidden = false;
  } else if (names.length < 2) {
    note.textContent = "a single objective: no trade-off to draw.";
    note.hidden = false;
  } else {
    note.hidden = true;
  }
  state.paretoKey = null;
}

// the metrics' finite values of one key against the iteration (vectors and nulls left out)
function xy(key) {
  return state.metrics
    .filter((m) => isNum(m[key]))
    .map((m) => ({ x: m.iteration, y: m[key] }));
}

// a record's mean target for objective m: "target_NAME", else the "target" vector's entry
// (a skipped batch logs only the vector)
function objectiveTarget(r, m) {
  const value = r[`target_${objectiveNames()[m]}`];
  if (isNum(value)) return value;
  return Array.isArray(r.target) && isNum(r.target[m]) ? r.target[m] : null;
}

// objective m's values of a per-objective key ("achieved_NAME_mean") or of a function of the
// record, normalised, raw value kept
function objectiveXY(m, key) {
  const get = typeof key === "function" ? key : (r) => r[key];
  return state.metrics
    .filter((r) => isNum(get(r)))
    .map((r) => ({ x: r.iteration, y: norm(m, get(r)), raw: get(r) }));
}

function drawMetrics() {
  const s = charts.schedule.data.datasets;
  if (state.objectives) {
    objectiveNames().forEach((name, m) => {
      s[4 * m].data = objectiveXY(m, `achieved_${name}_p10`);
      s[4 * m + 1].data = objectiveXY(m, `achieved_${name}_p90`);
      s[4 * m + 2].data = objectiveXY(m, `achieved_${name}_mean`);
      s[4 * m + 3].data = objectiveXY(m, (r) => objectiveTarget(r, m));
    });
  } else {
    s[0].data = xy("achieved_p10");
    s[1].data = xy("achieved_p90");
    s[2].data = xy("achieved_mean");
    s[3].data = xy("target");
    s[4].data = xy("best_achieved_mean");
  }
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
  let points;
  let identity;
  if (state.objectives) {
    const names = objectiveNames();
    names.forEach((name, m) => {
      c[m].data = state.metrics
        .filter((r) => isNum(objectiveTarget(r, m)) && isNum(r[`achieved_${name}_mean`]))
        .map((r) => ({ x: norm(m, objectiveTarget(r, m)), y: norm(m, r[`achieved_${name}_mean`]),
          label: `${name}, iteration ${r.iteration}: target ${fmt(objectiveTarget(r, m))}, ` +
            `achieved ${fmt(r[`achieved_${name}_mean`])}` }));
    });
    // an evaluation with vector targets (objectives.json: achieved_mean): one point per
    // objective and row
    const achieved = (r) => (Array.isArray(r.achieved_mean) ? r.achieved_mean : r.mean);
    const rows = state.evalRows.filter((r) => Array.isArray(r.target) && Array.isArray(achieved(r)));
    c[names.length + 1].data = rows.flatMap((r) => names.map((name, m) => ({
      x: norm(m, r.target[m]), y: norm(m, achieved(r)[m]),
      label: `evaluation, ${name}: target ${fmt(r.target[m])}, achieved ${fmt(achieved(r)[m])}`,
    }))).filter((p) => isNum(p.x) && isNum(p.y));
    points = [...c.slice(0, names.length), c[names.length + 1]].flatMap((d) => d.data);
    identity = c[names.length];
  } else {
    c[0].data = state.metrics
      .filter((m) => isNum(m.target) && isNum(m.achieved_mean))
      .map((m) => ({ x: m.target, y: m.achieved_mean }));
    c[2].data = state.evalRows
      .filter((r) => isNum(r.target) && isNum(r.mean))
      .map((r) => ({ x: r.target, y: r.mean }));
    points = [...c[0].data, ...c[2].data];
    identity = c[1];
  }
  const values = points.flatMap((p) => [p.x, p.y]);
  if (values.length) {
    const lo = Math.min(...values) - 0.05;
    const hi = Math.max(...values) + 0.05;
    identity.data = [{ x: lo, y: lo }, { x: hi, y: hi }];
  } else {
    identity.data = [];
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
    const named = data.records.filter((r) => Array.isArray(r.objectives));
    if (named.length) setObjectives(named[named.length - 1].objectives);
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
  text($("st-target"), fmtReward(st.target));
  text($("st-achieved"), fmtReward(st.achieved_mean));
  const warm = st.warm_start;
  text(
    $("st-warm-start"),
    warm ? `${warm.samples} samples, ${warm.steps} steps, ${fmt(warm.wall_s, 1)} s` : null,
  );
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
  const conditioning = cfg.config ? cfg.config.conditioning : null;
  if (conditioning && Array.isArray(conditioning.objectives)) {
    setObjectives(conditioning.objectives.filter((o) => o && typeof o === "object"));
  }
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
    cell(tr, fmtReward(r.target), "num");
    cell(tr, fmtReward(r.achieved_reward), "num");
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
  const problem = $("eval-error");
  problem.textContent = data.error || "";
  problem.hidden = !data.error;
  const report = data.report;
  if (!report) return;
  const key = `${data.kind}|${report.created_at}`;
  if (key === state.evalKey) return;
  state.evalKey = key;
  state.evalKind = data.kind;
  state.evalCreatedAt = report.created_at;
  state.evalRows = report.rows || [];
  const when = report.created_at ? new Date(report.created_at * 1000).toLocaleString() : "";
  const where = report.iteration === null || report.iteration === undefined ? "" :
    ` at iteration ${report.iteration} (policy version ${report.policy_version})`;
  const grid = data.kind === "objectives" ? data.grid : null;
  if (grid) {
    const buffer = report.buffer || {};
    const targets = report.grid_points ? `a grid of ${report.grid_points} per objective` :
      "the given targets";
    $("eval-summary").textContent =
      `${report.samples_per_target} samples per target${where}, ${when}; ${targets} ` +
      `(${grid.rows.length} target vectors); ${buffer.samples ?? "–"} samples in the buffer, ` +
      `best ${fmtReward(buffer.best)}`;
    renderEvalGrid(grid);
  } else {
    $("eval-summary").textContent =
      `${report.samples_per_target} samples per target${where}, ${when}; ` +
      `best reward in the buffer ${fmtReward(report.buffer ? report.buffer.best_reward : null)}`;
    renderEvalTable();
  }
  $("eval-table").hidden = Boolean(grid);
  $("eval-grid").hidden = !grid;
  $("panel-eval").classList.toggle("wide", Boolean(grid)); // a column per objective and figure
  const img = $("eval-plot");
  if (data.plot_available) {
    img.src = `/api/eval/plot.png?v=${encodeURIComponent(key)}`;
    img.alt = grid ? "objectives plot of the latest evaluation" :
      "calibration plot of the latest evaluation";
    img.hidden = false;
  } else {
    img.hidden = true;
  }
  document.body.dataset.evalKind = String(data.kind);
  drawCalibration();
}

// the latest evaluation of one reward (calibration.json): one row per target
function renderEvalTable() {
  const body = $("eval-table").querySelector("tbody");
  body.replaceChildren();
  for (const r of state.evalRows) {
    const tr = document.createElement("tr");
    if (r.extrapolation) tr.className = "extrapolation";
    for (const key of ["target", "mean", "p10", "median", "p90", "std"]) {
      cell(tr, fmtReward(r[key]), "num");
    }
    cell(tr, fmt(r.distinct_1, 2), "num");
    cell(tr, fmt(r.distinct_2, 2), "num");
    cell(tr, fmt(r.kl_to_base, 2), "num");
    cell(tr, r.extrapolation ? "extrapolation" : "");
    body.appendChild(tr);
  }
}

// the latest evaluation of several objectives (objectives.json, the API's "grid"): per target
// vector the achieved vector and normalised errors, then the per-objective summary and fronts
function renderEvalGrid(grid) {
  const names = grid.objectives;
  const goal = grid.goal;
  const head = $("eval-grid-table").querySelector("thead");
  head.replaceChildren();
  const groups = document.createElement("tr");
  const columns = document.createElement("tr");
  const th = (row, label, cls, span) => {
    const el = document.createElement("th");
    el.textContent = label;
    if (cls) el.className = cls;
    if (span) el.setAttribute(span[0], String(span[1]));
    row.appendChild(el);
  };
  for (const title of ["target", "achieved mean", "|error| / half-range"]) {
    th(groups, title, "group", ["colspan", names.length]);
    names.forEach((name) => th(columns, name, "num"));
  }
  th(groups, "max error", "num", ["rowspan", 2]);
  th(groups, "achievable", "", ["rowspan", 2]);
  th(groups, "d-2", "num", ["rowspan", 2]);
  th(groups, "KL", "num", ["rowspan", 2]);
  head.append(groups, columns);

  const body = $("eval-grid-table").querySelector("tbody");
  body.replaceChildren();
  for (const r of grid.rows) {
    const tr = document.createElement("tr");
    if (!r.achievable) tr.className = "unreachable";
    names.forEach((_, m) => cell(tr, fmt(r.target ? r.target[m] : null), "num"));
    names.forEach((_, m) => cell(tr, fmt(r.achieved ? r.achieved[m] : null), "num"));
    r.errors_normalised.forEach((e) => cell(tr, fmt(e), isNum(e) && e > goal ? "num bad" : "num"));
    const worst = r.max_error_normalised;
    cell(tr, fmt(worst), isNum(worst) && worst > goal ? "num bad" : "num");
    cell(tr, r.achievable ? (r.within_goal ? "yes, within goal" : "yes") : "no");
    cell(tr, fmt(r.distinct_2, 2), "num");
    cell(tr, fmt(r.kl_to_base, 2), "num");
    body.appendChild(tr);
  }

  const s = grid.summary;
  const table = $("eval-grid-summary").querySelector("tbody");
  table.replaceChildren();
  for (const p of s.per_objective) {
    const tr = document.createElement("tr");
    cell(tr, p.name);
    cell(tr, fmt(p.mean_error_normalised),
      isNum(p.mean_error_normalised) && p.mean_error_normalised > goal ? "num bad" : "num");
    cell(tr, fmt(p.max_error_normalised),
      isNum(p.max_error_normalised) && p.max_error_normalised > goal ? "num bad" : "num");
    cell(tr, `${p.within_goal ?? "–"} / ${s.achievable ?? "–"}`, "num");
    cell(tr, fmt(p.mean_abs_error), "num");
    table.appendChild(tr);
  }
  $("eval-grid-totals").textContent =
    `goal: error ≤ ${goal} (normalised) in every objective; ${s.within_goal ?? "–"} of ` +
    `${s.achievable ?? "–"} achievable targets meet it (${s.within_goal_all ?? "–"} of ` +
    `${s.targets ?? "–"} in the grid)` +
    (s.achievable === 0 ? "; no target is achievable: no calibration error to report" : "");
  const ratio = isNum(s.hypervolume_ratio) ? `; achieved / buffer ${fmt(s.hypervolume_ratio, 2)}` :
    "";
  const buffer = isNum(s.buffer_hypervolume) ?
    `the buffer's ${fmt(s.buffer_hypervolume)} (${s.buffer_front_size} points of ` +
      `${s.buffer_samples} samples)` : "no buffer to compare with";
  $("eval-grid-front").textContent =
    `hypervolume (normalised units, reference at every objective's low, at most ` +
    `${2 ** names.length}): achieved front ${fmt(s.achieved_hypervolume)} ` +
    `(${s.achieved_front_size ?? "–"} points) vs ${buffer}${ratio}`;
}

async function pollKlPlane() {
  if (state.objectives) return; // the plane needs one reward: the panel says so instead
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

async function pollPareto(bufferSize) {
  if (!state.objectives) return;
  const key = `${state.generation}|${state.metrics.length}|${bufferSize}|${state.evalKey}`;
  if (key === state.paretoKey) return;
  const data = await getJSON("/api/pareto?cloud=1000");
  state.paretoKey = key;
  setObjectives(data.objectives);
  const d = charts.pareto.data.datasets;
  const plane = (v) => Array.isArray(v) && isNum(v[0]) && isNum(v[1]);
  const point = (v, label) => ({ x: v[0], y: v[1], label });
  const cloud = (data.cloud || []).filter(plane);
  const front = (data.front || []).filter(plane);
  d[0].data = cloud.map((v) => point(v));
  d[0].label = `buffer samples (${cloud.length} of ${data.samples})`;
  d[1].data = front.map((v) => point(v, `front: ${fmtReward(v)}`));
  d[1].label = `buffer's Pareto front (${data.front_total} point` +
    `${data.front_total === 1 ? "" : "s"})`;
  const targets = (data.targets || []).filter((t) => plane(t.target));
  d[2].data = targets.map((t) => point(t.target,
    `iteration ${t.iteration}: target ${fmtReward(t.target)}, achieved ${fmtReward(t.achieved)}`));
  d[2].backgroundColor = targets.map((_, i) => iterationColor(i, targets.length, "220, 38, 38"));
  d[2].borderColor = d[2].backgroundColor;
  const last = targets.length ? targets[targets.length - 1] : null;
  d[3].data = last ? [point(last.target, `latest target, iteration ${last.iteration}: ` +
    fmtReward(last.target))] : [];
  d[3].label = last ? `latest target (iteration ${last.iteration})` : "latest target";
  d[4].data = last && plane(last.achieved) ? [point(last.achieved,
    `achieved mean, iteration ${last.iteration}: ${fmtReward(last.achieved)}`)] : [];
  d[4].label = last ? `achieved mean (iteration ${last.iteration})` : "achieved mean";
  const ev = data.eval;
  const evPoints = ev ? ev.points.filter((p) => plane(p.achieved)) : [];
  const evAt = ev && ev.iteration !== null && ev.iteration !== undefined ?
    ` (iteration ${ev.iteration})` : "";
  d[5].data = evPoints.filter((p) => plane(p.target)).map((p) => point(p.target,
    `evaluation target ${fmtReward(p.target)}: achieved ${fmtReward(p.achieved)}`));
  d[5].label = `evaluation targets${evAt}`;
  d[6].data = evPoints.map((p) => point(p.achieved,
    `evaluation, target ${fmtReward(p.target)}: achieved ${fmtReward(p.achieved)}, max error ` +
    `${fmt(p.max_error_normalised)}${p.achievable ? "" : " (not achievable)"}`));
  // filled: an achievable target; hollow: one no buffer sample came near
  d[6].backgroundColor = evPoints.map((p) => (p.achievable ? COLORS.evalGrid : "rgba(0,0,0,0)"));
  d[6].label = `evaluation${evAt}: achieved mean per target (filled: achievable)`;
  const evFront = ev ? ev.front.filter(plane) : [];
  d[7].data = evFront.map((v) => point(v, `evaluation's front: ${fmtReward(v)}`));
  d[7].label = `evaluation's achieved front (${evFront.length} point` +
    `${evFront.length === 1 ? "" : "s"})`;
  charts.pareto.update("none");

  const hv = (data.hypervolume || []).filter((h) => isNum(h.front_hypervolume));
  const h = charts.hypervolume.data.datasets;
  h[0].data = hv.map((p) => ({ x: p.iteration, y: p.front_hypervolume }));
  h[1].data = hv.filter((p) => isNum(p.front_size)).map((p) => ({ x: p.iteration, y: p.front_size }));
  charts.hypervolume.update("none");

  const parts = [`front: ${data.front_total} of ${data.samples} buffer samples`];
  if (data.front_total > front.length) parts.push(`${front.length} drawn`);
  if (last) parts.push(`latest target ${fmtReward(last.target)} at iteration ${last.iteration}`);
  if (hv.length) parts.push(`hypervolume ${fmt(hv[hv.length - 1].front_hypervolume)}`);
  if (ev) {
    const buffer = isNum(ev.buffer_hypervolume) ? ` vs the buffer's ${fmt(ev.buffer_hypervolume)}` :
      "";
    parts.push(`latest evaluation${evAt}: ${ev.points.length} target(s), achieved front ` +
      `hypervolume ${fmt(ev.achieved_hypervolume)}${buffer}`);
  }
  $("pareto-summary").textContent = parts.join("; ");
  const problem = $("pareto-error");
  problem.textContent = data.error || "";
  problem.hidden = !data.error;
  document.body.dataset.paretoPolls = String(Number(document.body.dataset.paretoPolls || 0) + 1);
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
    await pollPareto(st.buffer_size);
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
