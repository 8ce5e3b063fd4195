// decaffe's small charting library: line charts (linear or log y, smoothing, hover read-out)
// and bar charts on a canvas. No dependencies, so the dashboard works offline.
"use strict";

const DPlot = (() => {
  const FONT = "11px system-ui, sans-serif";
  const PAD = { left: 58, right: 12, top: 22, bottom: 30 };

  // Ticks at 1, 2, 5 x 10^k covering [lo, hi].
  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) { hi = lo + 1; lo = lo - 1; }
    const raw = (hi - lo) / Math.max(count, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return out;
  }

  function logTicks(lo, hi) {
    const out = [];
    const a = Math.floor(Math.log10(lo)), b = Math.ceil(Math.log10(hi));
    const every = Math.max(1, Math.ceil((b - a) / 6));
    for (let e = a; e <= b; e += every) out.push(Math.pow(10, e));
    if (out.length < 3) {  // a narrow range: 2 and 5 too
      for (let e = a; e <= b; e++) for (const m of [2, 5]) out.push(m * Math.pow(10, e));
      out.sort((x, y) => x - y);
    }
    return out.filter((v) => v >= lo * 0.999 && v <= hi * 1.001);
  }

  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) {
      return v.toExponential(2).replace(/\.?0+e/, "e").replace("e+", "e");
    }
    return String(+v.toPrecision(4));
  }

  // TensorBoard's smoothing: an exponential moving average, debiased at the start.
  function smooth(points, weight) {
    if (!(weight > 0)) return points;
    let last = 0, n = 0;
    return points.map(([x, y]) => {
      if (y === null || !isFinite(y)) return [x, y];
      last = last * weight + (1 - weight) * y;
      n += 1;
      return [x, last / (1 - Math.pow(weight, n))];
    });
  }

  class Chart {
    constructor(parent, opts = {}) {
      this.opts = Object.assign({ height: 220, title: "", yLog: false, smooth: 0,
                                  xLabel: "iteration" }, opts);
      this.root = document.createElement("div");
      this.root.className = "chart";
      this.head = document.createElement("div");
      this.head.className = "chart-title";
      this.head.textContent = this.opts.title;
      this.canvas = document.createElement("canvas");
      this.canvas.style.height = this.opts.height + "px";
      this.legend = document.createElement("div");
      this.legend.className = "chart-legend";
      this.root.append(this.head, this.canvas, this.legend);
      parent.appendChild(this.root);
      this.hover = null;
      this.canvas.addEventListener("mousemove", (e) => {
        const r = this.canvas.getBoundingClientRect();
        this.hover = [e.clientX - r.left, e.clientY - r.top];
        this.draw();
      });
      this.canvas.addEventListener("mouseleave", () => { this.hover = null; this.draw(); });
      if (window.ResizeObserver) new ResizeObserver(() => this.draw()).observe(this.canvas);
    }

    setOptions(o) { Object.assign(this.opts, o); this.head.textContent = this.opts.title; }

    _size() {
      const dpr = window.devicePixelRatio || 1;
      const w = Math.max(this.canvas.clientWidth, 100), h = this.opts.height;
      if (this.canvas.width !== Math.round(w * dpr) || this.canvas.height !== Math.round(h * dpr)) {
        this.canvas.width = Math.round(w * dpr);
        this.canvas.height = Math.round(h * dpr);
      }
      const ctx = this.canvas.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, h);
      ctx.font = FONT;
      return [ctx, w, h];
    }

    _message(ctx, w, h, text) {
      ctx.fillStyle = "#888";
      ctx.textAlign = "center";
      ctx.fillText(text, w / 2, h / 2);
    }

    _legend(items) {
      const key = items.map((s) => s.name + s.color).join("|");
      if (key === this._legendKey) return;
      this._legendKey = key;
      this.legend.replaceChildren(...items.slice(0, 40).map((s) => {
        const span = document.createElement("span");
        const sw = document.createElement("i");
        sw.style.background = s.color;
        span.append(sw, document.createTextNode(s.name));
        return span;
      }));
      if (items.length > 40) {
        const more = document.createElement("span");
        more.textContent = `… ${items.length - 40} more`;
        this.legend.appendChild(more);
      }
    }
  }

  class LineChart extends Chart {
    // series: [{name, color, points: [[x, y], ...], dash: bool, marker: bool}]
    setSeries(series) {
      this.series = series;
      const n = series.reduce((a, s) => a + s.points.filter((p) => p[1] !== null).length, 0);
      this.root.dataset.points = String(n);
      this.root.dataset.series = String(series.length);
      this.draw();
    }

    draw() {
      if (!this.series) return;
      const [ctx, w, h] = this._size();
      const log = this.opts.yLog;
      const drawn = this.series.map((s) => ({ s, pts: smooth(s.points, s.noSmooth ? 0 : this.opts.smooth)
        .filter((p) => p[1] === null || !log || p[1] > 0) }));
      let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (const { pts } of drawn) for (const [x, y] of pts) {
        if (y === null || !isFinite(y) || x === null) continue;
        x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
      this._legend(this.series);
      if (!isFinite(x0)) { this._message(ctx, w, h, log ? "no positive values yet" : "no data yet"); return; }
      if (x1 === x0) { x1 = x0 + 1; }
      if (y1 === y0) { const d = Math.abs(y0) * 0.1 || 1; y0 -= log ? y0 / 2 : d; y1 += d; }
      if (!log) { const m = (y1 - y0) * 0.05; y0 -= m; y1 += m; }
      const ty = log ? (v) => Math.log10(v) : (v) => v;
      const pw = w - PAD.left - PAD.right, ph = h - PAD.top - PAD.bottom;
      const X = (x) => PAD.left + ((x - x0) / (x1 - x0)) * pw;
      const Y = (y) => PAD.top + ph - ((ty(y) - ty(y0)) / (ty(y1) - ty(y0))) * ph;
      // grid and axes
      ctx.strokeStyle = "#e4e4e4"; ctx.fillStyle = "#555"; ctx.lineWidth = 1;
      ctx.textAlign = "right"; ctx.textBaseline = "middle";
      for (const v of (log ? logTicks(y0, y1) : niceTicks(y0, y1, 5))) {
        const py = Y(v);
        ctx.beginPath(); ctx.moveTo(PAD.left, py); ctx.lineTo(w - PAD.right, py); ctx.stroke();
        ctx.fillText(fmt(v), PAD.left - 4, py);
      }
      ctx.textAlign = "center"; ctx.textBaseline = "top";
      for (const v of niceTicks(x0, x1, Math.max(2, Math.floor(pw / 90)))) {
        const px = X(v);
        ctx.beginPath(); ctx.moveTo(px, PAD.top); ctx.lineTo(px, PAD.top + ph); ctx.stroke();
        ctx.fillText(fmt(v), px, PAD.top + ph + 4);
      }
      ctx.fillText(this.opts.xLabel + (log ? "   (log scale)" : ""), PAD.left + pw / 2, h - 12);
      ctx.strokeStyle = "#999";
      ctx.strokeRect(PAD.left, PAD.top, pw, ph);
      // lines
      ctx.save();
      ctx.beginPath(); ctx.rect(PAD.left, PAD.top, pw, ph); ctx.clip();
      for (const { s, pts } of drawn) {
        ctx.strokeStyle = s.color; ctx.fillStyle = s.color;
        ctx.lineWidth = s.width || 1.5;
        ctx.setLineDash(s.dash ? [5, 3] : []);
        ctx.beginPath();
        let pen = false;
        for (const [x, y] of pts) {
          if (y === null || !isFinite(y)) { pen = false; continue; }
          if (pen) ctx.lineTo(X(x), Y(y)); else ctx.moveTo(X(x), Y(y));
          pen = true;
        }
        ctx.stroke();
        if (s.marker || pts.length === 1) {
          for (const [x, y] of pts) {
            if (y === null || !isFinite(y)) continue;
            ctx.beginPath(); ctx.arc(X(x), Y(y), 2.5, 0, 2 * Math.PI); ctx.fill();
          }
        }
      }
      ctx.restore();
      ctx.setLineDash([]);
      this._readout(ctx, drawn, X, Y, x0, x1, pw);
    }

    // The values of every series at the x under the mouse.
    _readout(ctx, drawn, X, Y, x0, x1, pw) {
      if (!this.hover) return;
      const [hx] = this.hover;
      if (hx < PAD.left || hx > PAD.left + pw) return;
      const x = x0 + ((hx - PAD.left) / pw) * (x1 - x0);
      const lines = [];
      for (const { s, pts } of drawn.slice(0, 12)) {
        let best = null;
        for (const p of pts) if (p[1] !== null && (!best || Math.abs(p[0] - x) < Math.abs(best[0] - x))) best = p;
        if (best) lines.push([s.color, `${s.name}: ${fmt(best[1])} @ ${fmt(best[0])}`]);
      }
      ctx.strokeStyle = "#bbb";
      ctx.beginPath(); ctx.moveTo(hx, PAD.top); ctx.lineTo(hx, this.opts.height - PAD.bottom); ctx.stroke();
      const width = Math.max(...lines.map(([, t]) => ctx.measureText(t).width), 10) + 16;
      const bx = hx + width + 8 > PAD.left + pw ? hx - width - 8 : hx + 8;
      ctx.fillStyle = "rgba(255,255,255,0.92)";
      ctx.fillRect(bx, PAD.top + 4, width, lines.length * 14 + 6);
      ctx.textAlign = "left"; ctx.textBaseline = "top";
      lines.forEach(([c, t], i) => { ctx.fillStyle = c; ctx.fillText(t, bx + 8, PAD.top + 8 + i * 14); });
    }
  }

  class BarChart extends Chart {
    // groups: [{name, color, values: [..]}], labels: x labels (channel numbers)
    setBars(groups, labels) {
      this.groups = groups; this.labels = labels;
      this.root.dataset.points = String(groups.reduce((a, g) => a + g.values.length, 0));
      this.draw();
    }

    draw() {
      if (!this.groups) return;
      const [ctx, w, h] = this._size();
      this._legend(this.groups);
      const all = this.groups.flatMap((g) => g.values).filter((v) => v !== null && isFinite(v));
      if (!all.length) { this._message(ctx, w, h, "no data yet"); return; }
      let y0 = Math.min(0, ...all), y1 = Math.max(0, ...all);
      if (y0 === y1) y1 = y0 + 1;
      const pw = w - PAD.left - PAD.right, ph = h - PAD.top - PAD.bottom;
      const Y = (y) => PAD.top + ph - ((y - y0) / (y1 - y0)) * ph;
      ctx.strokeStyle = "#e4e4e4"; ctx.fillStyle = "#555";
      ctx.textAlign = "right"; ctx.textBaseline = "middle";
      for (const v of niceTicks(y0, y1, 4)) {
        ctx.beginPath(); ctx.moveTo(PAD.left, Y(v)); ctx.lineTo(w - PAD.right, Y(v)); ctx.stroke();
        ctx.fillText(fmt(v), PAD.left - 4, Y(v));
      }
      const n = Math.max(...this.groups.map((g) => g.values.length));
      const slot = pw / n, bw = Math.max(1, (slot * 0.8) / this.groups.length);
      this.groups.forEach((g, gi) => {
        ctx.fillStyle = g.color;
        g.values.forEach((v, i) => {
          if (v === null || !isFinite(v)) return;
          const x = PAD.left + i * slot + slot * 0.1 + gi * bw;
          const top = Y(Math.max(v, 0)), bottom = Y(Math.min(v, 0));
          ctx.fillRect(x, top, bw, Math.max(bottom - top, 0.5));
        });
      });
      ctx.strokeStyle = "#999";
      ctx.beginPath(); ctx.moveTo(PAD.left, Y(0)); ctx.lineTo(w - PAD.right, Y(0)); ctx.stroke();
      ctx.fillStyle = "#555"; ctx.textAlign = "center"; ctx.textBaseline = "top";
      const every = Math.max(1, Math.ceil(n / Math.max(1, pw / 28)));
      for (let i = 0; i < n; i += every) {
        ctx.fillText(String(this.labels ? this.labels[i] : i), PAD.left + (i + 0.5) * slot, PAD.top + ph + 4);
      }
      ctx.fillText(this.opts.xLabel, PAD.left + pw / 2, h - 12);
      if (this.hover) {
        const i = Math.floor((this.hover[0] - PAD.left) / slot);
        if (i >= 0 && i < n) {
          const text = this.groups.map((g) => `${g.name} ${fmt(g.values[i])}`).join("  ");
          const label = `${this.opts.xLabel} ${this.labels ? this.labels[i] : i}: ${text}`;
          const tw = ctx.measureText(label).width + 12;
          ctx.fillStyle = "rgba(255,255,255,0.92)";
          ctx.fillRect(PAD.left + 4, PAD.top + 2, tw, 16);
          ctx.fillStyle = "#222"; ctx.textAlign = "left";
          ctx.fillText(label, PAD.left + 10, PAD.top + 4);
        }
      }
    }
  }

  return { LineChart, BarChart, niceTicks, logTicks, smooth, fmt };
})();
