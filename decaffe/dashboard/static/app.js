// The dashboard page: follows /api/stream (server-sent events) and draws every run.
"use strict";

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
                 "#e377c2", "#7f7f7f", "#bcbd22"];
const BN_TYPES = new Set(["BatchNorm", "BN", "BatchNormKyle", "SyncBatchNorm"]);
const VAR_EPS = 1e-5;   // a variance this small: the channel is (nearly) constant
const GAMMA_EPS = 1e-3; // a Scale gamma this small: the channel's output is (nearly) zero
const MAX_CHANNEL_LINES = 128;

const state = { runs: [], charts: {}, detail: 0, pending: false, built: {} };
const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
};
const fmt = (v) => DPlot.fmt(v);
const PARAMS = new URLSearchParams(location.search);
const token = PARAMS.get("token");
const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;

function hms(s) {
  if (s === null || !isFinite(s) || s < 0) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + String(r).padStart(2, "0");
}

function newRun(info) {
  const run = Object.assign({}, info, { data: { train: [], test: [], snapshot: [], bn: [], params: [], end: [] } });
  run.color = PALETTE[info.id % PALETTE.length];
  addRecords(run, info.records || []);
  delete run.records;
  return run;
}

function addRecords(run, records) {
  for (const r of records) if (run.data[r.kind]) run.data[r.kind].push(r);
}

// ---------------------------------------------------------------------------------------
// Connection
function connect() {
  const es = new EventSource(withToken("api/stream"));
  es.addEventListener("init", (e) => {
    const msg = JSON.parse(e.data);
    state.runs = msg.runs.map(newRun);
    state.built = {};
    $("connection").textContent = "live";
    $("connection").className = "conn live";
    fillRunSelect();
    schedule();
  });
  es.addEventListener("records", (e) => {
    const msg = JSON.parse(e.data);
    const run = state.runs[msg.run];
    if (run) { addRecords(run, msg.records); schedule(); }
  });
  es.addEventListener("status", (e) => {
    const msg = JSON.parse(e.data);
    const run = state.runs[msg.id];
    if (run) { Object.assign(run, msg); fillRunSelect(); schedule(); }
  });
  es.onerror = () => {
    $("connection").textContent = "reconnecting…";
    $("connection").className = "conn lost";
  };
}

function schedule() {
  if (state.pending) return;
  state.pending = true;
  setTimeout(() => { state.pending = false; render(); }, 250);
}

// The run whose BatchNorm, parameters, net and snapshots are shown: the one chosen, else the
// one named by ?run=, else the first whose net has BatchNorm layers.
function fillRunSelect() {
  const sel = $("detail-run");
  sel.replaceChildren(...state.runs.map((r) => el("option", { value: String(r.id), text: r.name })));
  let pick = state.chosen;
  if (pick === undefined && PARAMS.has("run")) {
    const want = PARAMS.get("run");
    const found = state.runs.find((r) => r.name === want || String(r.id) === want);
    if (found) pick = found.id;
  }
  if (pick === undefined) {
    const withBN = state.runs.find((r) => (r.net || []).some((l) => BN_TYPES.has(l.type)));
    pick = withBN ? withBN.id : 0;
  }
  if (state.runs[pick]) sel.value = String(pick);
  if (state.detail !== +sel.value) state.built = {};
  state.detail = +sel.value || 0;
}

// ---------------------------------------------------------------------------------------
// Rendering
function render() {
  renderProblems();
  renderSummary();
  renderCharts();
  const run = state.runs[state.detail];
  renderBN(run);
  renderParams(run);
  renderNet(run);
  renderSnapshots(run);
  renderInfo(run);
  document.body.dataset.rendered = String(Date.now());
}

function renderProblems() {
  const box = $("problems");
  const items = [];
  for (const r of state.runs) {
    for (const e of r.errors || []) items.push(el("div", { class: "problem", text: `${r.name}: ${e}` }));
    for (const n of r.notes || []) items.push(el("div", { class: "note", text: `${r.name}: ${n}` }));
  }
  box.replaceChildren(...items);
}

function rate(run) {
  const t = run.data.train.filter((r) => r.time !== null);
  if (t.length < 2) return null;
  const a = t[Math.max(0, t.length - 10)], b = t[t.length - 1];
  return b.time > a.time ? (b.iter - a.iter) / (b.time - a.time) : null;
}

function renderSummary() {
  const cards = state.runs.map((run) => {
    const meta = run.meta || {};
    const last = run.data.train[run.data.train.length - 1];
    const iter = Math.max(last ? last.iter : 0, ...run.data.test.map((r) => r.iter), 0);
    const end = run.data.end[run.data.end.length - 1];
    const r = rate(run);
    const maxIter = meta.max_iter;
    const eta = end ? 0 : (r && maxIter ? (maxIter - iter) / r : null);
    let ips = last && last.images_per_s;
    if ((ips === null || ips === undefined) && r && meta.batch_size) {
      ips = r * meta.batch_size * (meta.iter_size || 1) * (meta.world_size || 1);
    }
    const status = end ? `ended: ${end.reason}${end.message ? " (" + end.message + ")" : ""}` : (last ? "training" : "waiting");
    const frac = maxIter ? Math.min(iter / maxIter, 1) : 0;
    const card = el("div", { class: "card", "data-run": String(run.id) },
      el("div", { class: "name", text: `${run.name}` }),
      el("div", { class: "bar" }, el("div")),
      el("div", { class: "kv" },
        el("span", { text: "iteration" }), el("span", { text: `${iter}${maxIter ? " / " + maxIter : ""}` }),
        el("span", { text: "loss" }), el("span", { text: last ? fmt(last.loss) : "–" }),
        el("span", { text: "learning rate" }), el("span", { text: last ? fmt(last.lr) : "–" }),
        el("span", { text: "images/s" }), el("span", { class: "ips", text: ips ? fmt(ips) : "–" }),
        el("span", { text: "ETA" }), el("span", { class: "eta", text: end ? "done" : hms(eta) }),
        el("span", { text: "status" }), el("span", { text: status }),
        el("span", { text: "source" }), el("span", { text: run.kind === "log" ? "Caffe log" : "run folder" })));
    card.style.borderLeftColor = run.color;
    card.querySelector(".bar div").style.width = (frac * 100).toFixed(1) + "%";
    return card;
  });
  $("summary").replaceChildren(...cards);
}

function chart(key, box, title, opts = {}) {
  let c = state.charts[key];
  if (!c || !c.root.isConnected) {
    c = new DPlot.LineChart(box, Object.assign({ title }, opts));
    c.root.dataset.chart = key;
    state.charts[key] = c;
  }
  return c;
}

function xOf(r) { return $("xaxis").value === "time" ? r.time : r.iter; }

function renderCharts() {
  const box = $("charts");
  const opts = { yLog: $("ylog").checked, smooth: +$("smooth").value,
                 xLabel: $("xaxis").value === "time" ? "seconds" : "iteration" };
  const multi = state.runs.length > 1;
  const label = (run, what) => multi ? `${run.name} ${what}` : what;
  // loss and every training output
  const loss = [], outputs = {}, tests = {}, lr = [];
  for (const run of state.runs) {
    loss.push({ name: label(run, "loss"), color: run.color,
                points: run.data.train.map((r) => [xOf(r), r.loss]) });
    lr.push({ name: label(run, "lr"), color: run.color, noSmooth: true,
              points: run.data.train.map((r) => [xOf(r), r.lr]) });
    for (const r of run.data.train) {
      for (const [name, v] of Object.entries(r.outputs || {})) {
        const vals = Array.isArray(v) ? v : [v];
        vals.forEach((x, i) => {
          const key = vals.length > 1 ? `${name}[${i}]` : name;
          ((outputs[key] = outputs[key] || {})[run.id] = outputs[key][run.id] || []).push([xOf(r), x]);
        });
      }
    }
    for (const r of run.data.test) {
      for (const [name, v] of Object.entries(r.scores || {})) {
        const key = `test net #${r.net}: ${name}`;
        ((tests[key] = tests[key] || {})[run.id] = tests[key][run.id] || []).push([xOf(r), v]);
      }
    }
  }
  const series = (byRun) => Object.entries(byRun).map(([id, points]) => {
    const run = state.runs[+id];
    return { name: run.name, color: run.color, points, marker: points.length < 60 };
  });
  chart("loss", box, "loss (smoothed average the solver displays)", opts).setOptions(opts);
  state.charts.loss.setSeries(loss);
  for (const [name, byRun] of Object.entries(outputs)) {
    const c = chart("out:" + name, box, `train output: ${name}`, opts);
    c.setOptions(opts); c.setSeries(series(byRun));
  }
  for (const [name, byRun] of Object.entries(tests)) {
    const c = chart("test:" + name, box, name, opts);
    c.setOptions(opts); c.setSeries(series(byRun));
  }
  const lrc = chart("lr", box, "learning rate", opts);
  lrc.setOptions(Object.assign({}, opts, { smooth: 0 }));
  lrc.setSeries(lr);
}

// ---------------------------------------------------------------------------------------
// BatchNorm
function bnLayerOrder(run, names) {
  const order = (run.net || []).map((l) => l.name);
  return names.sort((a, b) => {
    const ia = order.indexOf(a), ib = order.indexOf(b);
    return (ia < 0 ? 1e9 : ia) - (ib < 0 ? 1e9 : ib) || a.localeCompare(b);
  });
}

function channelColor(i, n) { return `hsl(${Math.round((360 * i) / Math.max(n, 1))}, 65%, 45%)`; }

function renderBN(run) {
  const box = $("bn");
  if (!run) { box.replaceChildren(); return; }
  const samples = run.data.bn;
  const netBN = (run.net || []).filter((l) => BN_TYPES.has(l.type)).map((l) => l.name);
  if (!samples.length) {
    box.replaceChildren(el("p", { class: "empty", text: netBN.length
      ? `No BatchNorm samples recorded yet for ${run.name} (its net has ${netBN.length} BatchNorm layers: ${netBN.join(", ")}).`
      : `No BatchNorm samples in ${run.name}${run.kind === "log" ? " (a log carries none)" : ""}.` }));
    state.built.bn = null;
    return;
  }
  const names = bnLayerOrder(run, [...new Set(samples.flatMap((s) => Object.keys(s.layers || {})))]);
  const key = run.id + ":" + names.join(",");
  if (state.built.bn !== key) {
    box.replaceChildren(...names.map((name) => el("div", { class: "bn-layer", "data-bn-layer": name },
      el("h3"), el("div", { class: "flags" }), el("div", { class: "grid" }))));
    state.built.bn = key;
  }
  const xl = $("xaxis").value === "time" ? "seconds" : "iteration";
  for (const name of names) {
    const card = box.querySelector(`[data-bn-layer="${CSS.escape(name)}"]`);
    const series = samples.filter((s) => s.layers && s.layers[name]).map((s) => [s, s.layers[name]]);
    if (!series.length) continue;
    const [lastS, last] = series[series.length - 1];
    const C = last.channels || (last.mean || []).length;
    const stride = last.channel_stride || 1;
    const shown = (last.mean || []).length;
    const chans = Array.from({ length: shown }, (_, i) => i * stride);
    card.dataset.channels = String(C);
    card.querySelector("h3").textContent = `${name} — ${C} channels${stride > 1 ? ` (every ${stride}th sampled)` : ""}, moving-average factor ${fmt(last.factor)}, last sample at iteration ${lastS.iter}`;
    // flagged channels
    const flags = [];
    (last.var || []).forEach((v, i) => { if (v !== null && v < VAR_EPS) flags.push(`ch ${chans[i]}: variance ${fmt(v)} (near zero)`); });
    (last.gamma || []).forEach((g, i) => { if (g !== null && Math.abs(g) < GAMMA_EPS) flags.push(`ch ${chans[i]}: γ ${fmt(g)} (dead)`); });
    const fbox = card.querySelector(".flags");
    fbox.replaceChildren(...(flags.length ? flags.map((f) => el("span", { class: "flag", text: f }))
      : [el("span", { class: "ok", text: "no flagged channels (variance and γ away from zero)" })]));
    fbox.dataset.flagged = String(flags.length);
    const grid = card.querySelector(".grid");
    const lines = (field) => chans.slice(0, MAX_CHANNEL_LINES).map((ch, i) => ({
      name: `ch ${ch}`, color: channelColor(i, Math.min(shown, MAX_CHANNEL_LINES)), width: 1,
      points: series.map(([s, l]) => [xOf(s), l[field] ? l[field][i] : null]) }));
    const more = shown > MAX_CHANNEL_LINES ? ` (first ${MAX_CHANNEL_LINES} of ${shown})` : "";
    const c1 = bnChart(grid, name, "mean", `running mean per channel${more}`, xl, false);
    c1.setSeries(lines("mean"));
    const c2 = bnChart(grid, name, "var", `running variance per channel${more}`, xl, true);
    c2.setSeries(lines("var"));
    // drift: mean absolute change of the statistics between consecutive samples
    const drift = (field) => series.slice(1).map(([s, l], k) => {
      const prev = series[k][1][field] || [], cur = l[field] || [];
      let sum = 0, n = 0;
      cur.forEach((v, i) => { if (v !== null && prev[i] !== null && prev[i] !== undefined) { sum += Math.abs(v - prev[i]); n++; } });
      return [xOf(s), n ? sum / n : null];
    });
    const c3 = bnChart(grid, name, "drift", "drift between samples (mean |change| over channels)", xl, true);
    c3.setSeries([{ name: "running mean", color: "#1f77b4", points: drift("mean") },
                  { name: "running variance", color: "#d62728", points: drift("var") }]);
    const c4 = bnChart(grid, name, "factor", "moving-average factor (Caffe's third blob)", xl, false);
    c4.setSeries([{ name: "factor", color: "#555", points: series.map(([s, l]) => [xOf(s), l.factor]) }]);
    const gap = (a, b) => (last[a] || []).map((v, i) => (v === null || !last[b] || last[b][i] === null) ? null : v - last[b][i]);
    const c5 = bnBars(grid, name, "gap", `batch − stored statistics at iteration ${lastS.iter}`);
    c5.setBars([{ name: "batch mean − running mean", color: "#1f77b4", values: gap("batch_mean", "mean") },
                { name: "batch var − running var", color: "#d62728", values: gap("batch_var", "var") }], chans);
    if (last.gamma || last.beta) {
      const c6 = bnBars(grid, name, "scale", `Scale γ and β at iteration ${lastS.iter}`);
      c6.setBars([{ name: "γ", color: "#2ca02c", values: last.gamma || [] },
                  { name: "β", color: "#ff7f0e", values: last.beta || [] }], chans);
    }
  }
}

function bnChart(grid, layer, what, title, xLabel, log) {
  const c = chart(`bn:${layer}:${what}`, grid, title, { height: 180 });
  c.setOptions({ xLabel, yLog: log, smooth: 0 });
  return c;
}

function bnBars(grid, layer, what, title) {
  const key = `bn:${layer}:${what}`;
  let c = state.charts[key];
  if (!c || !c.root.isConnected) {
    c = new DPlot.BarChart(grid, { title, height: 180, xLabel: "channel" });
    c.root.dataset.chart = key;
    state.charts[key] = c;
  }
  c.setOptions({ title });
  return c;
}

// ---------------------------------------------------------------------------------------
// Parameters
function renderParams(run) {
  const box = $("params");
  if (!run || !run.data.params.length) {
    box.replaceChildren(el("p", { class: "empty", text: run && run.kind === "log"
      ? "A log carries no parameter statistics." : "No parameter samples recorded yet." }));
    state.built.params = null;
    return;
  }
  if (state.built.params !== run.id) {
    box.replaceChildren(el("div", { class: "grid", id: "param-charts" }), el("div", { id: "param-table" }));
    state.built.params = run.id;
  }
  const samples = run.data.params;
  const last = samples[samples.length - 1];
  const keys = [];
  for (const s of samples) for (const [layer, v] of Object.entries(s.layers || {})) {
    (v.param || []).forEach((_, i) => { const k = `${layer}#${i}`; if (!keys.includes(k)) keys.push(k); });
  }
  const xl = $("xaxis").value === "time" ? "seconds" : "iteration";
  const lines = (field) => keys.map((k, i) => {
    const [layer, idx] = k.split("#");
    return { name: k, color: PALETTE[i % PALETTE.length], dash: i >= PALETTE.length, width: 1.2,
             points: samples.map((s) => { const p = s.layers && s.layers[layer] && s.layers[layer].param && s.layers[layer].param[+idx];
                                         return [xOf(s), p ? p[field] : null]; }) };
  });
  const grid = $("param-charts");
  for (const [field, title] of [["update_ratio", "update / weight ratio (‖Δw‖ / ‖w‖)"],
                                ["weight_norm", "weight norm ‖w‖"], ["grad_norm", "gradient norm ‖∇w‖"]]) {
    const c = chart(`param:${field}`, grid, title, { height: 200 });
    c.setOptions({ xLabel: xl, yLog: true, smooth: 0 });
    c.setSeries(lines(field));
  }
  const rows = [];
  for (const [layer, v] of Object.entries(last.layers || {})) {
    (v.param || []).forEach((p, i) => rows.push(el("tr", {},
      el("td", { text: layer }), el("td", { text: String(i) }), el("td", { text: (p.shape || []).join("×") }),
      el("td", { class: "num", text: fmt(p.weight_norm) }), el("td", { class: "num", text: fmt(p.grad_norm) }),
      el("td", { class: "num", text: fmt(p.update_ratio) }))));
  }
  $("param-table").replaceChildren(el("p", { class: "hint", text: `At iteration ${last.iter}:` }),
    el("table", {}, el("tr", {}, ...["layer", "param", "shape", "‖w‖", "‖∇w‖", "update/weight"].map((t) => el("th", { text: t }))), ...rows));
}

// ---------------------------------------------------------------------------------------
// The net, drawn as decaffe draw_net draws it: layers coloured by type, in-place layers green;
// BatchNorm layers outlined and badged.
function layerColor(l) {
  if (l.tops.length === 1 && l.bottoms.length === 1 && l.tops[0] === l.bottoms[0]) return "#90EE90";
  if (l.type === "Convolution" || l.type === "Deconvolution") return "#FF5050";
  if (l.type === "Pooling") return "#FF9900";
  if (l.type === "InnerProduct") return "#CC33FF";
  return "#6495ED";
}

function renderNet(run) {
  const box = $("net");
  const key = run ? run.id + ":" + (run.net || []).length : "";
  if (state.built.net === key) return;
  state.built.net = key;
  if (!run || !run.net || !run.net.length) {
    box.replaceChildren(el("p", { class: "empty", text: "No net description (net.json) yet." }));
    return;
  }
  const layers = run.net.filter((l) => !l.phase || l.phase === "TRAIN" || l.phase === 0);
  const producer = {}, rank = [], preds = [];
  layers.forEach((l, i) => {
    preds[i] = [...new Set(l.bottoms.map((b) => producer[b]).filter((p) => p !== undefined))];
    rank[i] = preds[i].length ? Math.max(...preds[i].map((p) => rank[p])) + 1 : 0;
    for (const t of l.tops) producer[t] = i;
  });
  const rows = [];
  layers.forEach((l, i) => (rows[rank[i]] = rows[rank[i]] || []).push(i));
  const W = 150, H = 34, GX = 24, GY = 26;
  const widest = Math.max(...rows.map((r) => r.length));
  const width = widest * (W + GX) + GX, height = rows.length * (H + GY) + GY;
  const pos = [];
  rows.forEach((r, y) => r.forEach((i, k) => {
    const off = (width - r.length * (W + GX) + GX) / 2;
    pos[i] = [off + k * (W + GX), GY + y * (H + GY)];
  }));
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("width", width); svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("id", "net-graph");
  const mk = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  };
  layers.forEach((l, i) => preds[i].forEach((p) => {
    const [x1, y1] = pos[p], [x2, y2] = pos[i];
    mk("path", { d: `M${x1 + W / 2},${y1 + H} C${x1 + W / 2},${y1 + H + GY / 2} ${x2 + W / 2},${y2 - GY / 2} ${x2 + W / 2},${y2}`,
                 fill: "none", stroke: "#888", "stroke-width": 1 });
  }));
  layers.forEach((l, i) => {
    const [x, y] = pos[i];
    const bn = BN_TYPES.has(l.type);
    const g = mk("g", { class: bn ? "layer bn" : "layer", "data-layer": l.name, "data-type": l.type });
    const rect = document.createElementNS(NS, "rect");
    for (const [k, v] of Object.entries({ x, y, width: W, height: H, rx: 3, fill: layerColor(l),
      stroke: bn ? "#2b2118" : "#555", "stroke-width": bn ? 3 : 1 })) rect.setAttribute(k, v);
    const t1 = document.createElementNS(NS, "text");
    for (const [k, v] of Object.entries({ x: x + W / 2, y: y + 14, "text-anchor": "middle" })) t1.setAttribute(k, v);
    t1.textContent = l.name.length > 22 ? l.name.slice(0, 21) + "…" : l.name;
    const t2 = document.createElementNS(NS, "text");
    for (const [k, v] of Object.entries({ x: x + W / 2, y: y + 27, "text-anchor": "middle", fill: "#222" })) t2.setAttribute(k, v);
    t2.textContent = `(${l.type})`;
    const title = document.createElementNS(NS, "title");
    title.textContent = `${l.name} (${l.type})\nbottoms: ${l.bottoms.join(", ") || "–"}\ntops: ${l.tops.join(", ") || "–"}`;
    g.append(title, rect, t1, t2);
    if (bn) {
      const badge = document.createElementNS(NS, "text");
      for (const [k, v] of Object.entries({ x: x + W - 4, y: y + 11, "text-anchor": "end", "font-weight": "bold", fill: "#2b2118" })) badge.setAttribute(k, v);
      badge.textContent = "BN";
      g.appendChild(badge);
    }
  });
  const nBN = layers.filter((l) => BN_TYPES.has(l.type)).length;
  box.replaceChildren(el("p", { class: "hint", text: `${run.name}: ${layers.length} layers in the training net, ${nBN} BatchNorm (outlined, marked BN). Colours as decaffe draw_net draws them.` }),
    el("div", { class: "netbox" }, svg));
}

// ---------------------------------------------------------------------------------------
function renderSnapshots(run) {
  const box = $("snapshots");
  if (!run || !run.data.snapshot.length) {
    box.replaceChildren(el("p", { class: "empty", text: "No snapshots written yet." }));
    return;
  }
  const rows = run.data.snapshot.map((s) => {
    const cmd = s.resume || "";
    const copy = el("button", { type: "button", text: "copy" });
    copy.addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText(cmd));
    return el("tr", {}, el("td", { class: "num", text: String(s.iter) }), el("td", {}, el("code", { text: s.model || "–" })),
      el("td", {}, el("code", { text: s.state || "–" })), el("td", {}, el("code", { class: "resume", text: cmd || "–" }), " ", cmd ? copy : null));
  });
  const table = el("table", {}, el("tr", {}, ...["iteration", "model", "solver state", "resume with"].map((t) => el("th", { text: t }))), ...rows);
  if (run.kind === "log") box.replaceChildren(table, el("p", { class: "hint", text: "From a log: put your solver file in place of SOLVER." }));
  else box.replaceChildren(table);
}

function renderInfo(run) {
  const box = $("runinfo");
  if (!run) { box.replaceChildren(); return; }
  const m = run.meta || {};
  const rows = [["name", run.name], ["path", run.path], ["kind", run.kind === "log" ? "Caffe training log" : "decaffe run folder"]];
  if (m.command) rows.push(["command", Array.isArray(m.command) ? m.command.join(" ") : String(m.command)]);
  if (m.cwd) rows.push(["working directory", m.cwd]);
  if (m.started) rows.push(["started", new Date(m.started * 1000).toLocaleString()]);
  for (const k of ["solver_file", "snapshot_prefix", "max_iter", "display", "test_interval", "batch_size", "world_size", "resumed_from"]) {
    if (m[k] !== undefined && m[k] !== null && m[k] !== "") rows.push([k, String(m[k])]);
  }
  const files = run.kind === "log" ? [run.path.split(/[\\/]/).pop()] : ["solver.prototxt", "train_net.prototxt", "meta.json", "net.json", "events.jsonl"];
  const links = el("td", {}, ...files.map((f) => [el("a", { href: withToken(`api/run/${run.id}/file/${encodeURIComponent(f)}`), target: "_blank", rel: "noopener", text: f }), " "]).flat());
  box.replaceChildren(el("table", {}, ...rows.map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", {}, el("code", { text: v })))),
    el("tr", {}, el("th", { text: "files" }), links)));
}

// ---------------------------------------------------------------------------------------
window.addEventListener("DOMContentLoaded", () => {
  // the view can be named in the URL: ?log=1&smooth=0.6&x=time&run=NAME
  if (PARAMS.get("log") === "1") $("ylog").checked = true;
  if (PARAMS.has("smooth")) { $("smooth").value = PARAMS.get("smooth"); $("smooth-value").textContent = $("smooth").value; }
  if (PARAMS.get("x") === "time") $("xaxis").value = "time";
  for (const id of ["xaxis", "ylog"]) $(id).addEventListener("change", () => { state.built.bn = null; render(); });
  $("smooth").addEventListener("input", () => { $("smooth-value").textContent = $("smooth").value; render(); });
  $("detail-run").addEventListener("change", () => { state.chosen = state.detail = +$("detail-run").value; state.built = {}; render(); });
  connect();
});
