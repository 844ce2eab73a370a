/* The dashboard's charts: small hand-written SVG, no library, nothing inline (the CSP of
 * app/web/security.py allows scripts and styles from this origin only; colours are CSS
 * classes of style.css, geometry SVG attributes).
 *
 * Data: the JSON of GET /api/stats/history (app/serving/history.py), which the page carries
 * in the data-history attribute of #history, so the charts need no second request (and no
 * API key when keys are configured). Every <figure data-chart> in #history is drawn:
 *   data-chart="throughput" data-model=NAME  items/s and requests/s of a model
 *   data-chart="latency"    data-model=NAME  p50 and p99 of its infer() calls (ms)
 *   data-chart="errors"                      4xx/5xx per interval, stacked by HTTP status,
 *                                            the API's apart from static/unmatched paths
 * #history gets data-rendered=<number of charts drawn> when done (the tests look for it).
 */
(function () {
  "use strict";

  var SVGNS = "http://www.w3.org/2000/svg";
  var W = 480, H = 190, M = { l: 48, r: 12, t: 10, b: 26 };

  function svgEl(name, attrs, parent) {
    var e = document.createElementNS(SVGNS, name);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(e); }
    return e;
  }

  function htmlEl(name, cls, text, parent) {
    var e = document.createElement(name);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    if (parent) { parent.appendChild(e); }
    return e;
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function hhmm(t) {
    var d = new Date(t * 1000);
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
  }

  function fmt(v) {
    if (v === null || v === undefined) { return "–"; }
    if (v === 0) { return "0"; }
    var a = Math.abs(v);
    if (a >= 1000) { return (v / 1000).toFixed(a >= 10000 ? 0 : 1) + "k"; }
    if (a >= 100) { return v.toFixed(0); }
    if (a >= 10) { return v.toFixed(1).replace(/\.0$/, ""); }
    return v.toPrecision(2).replace(/\.?0+$/, "");
  }

  /* the y axis: the smallest "nice" top >= v (1, 2, 2.5, 5 x 10^k) and a tick count that
   * gives round steps (0.25, 0.5, 0.5, 1 x 10^k) */
  function niceScale(v) {
    if (!(v > 0)) { return { top: 1, n: 4 }; }
    var p = Math.pow(10, Math.floor(Math.log(v) / Math.LN10));
    var steps = [[1, 4], [2, 4], [2.5, 5], [5, 5], [10, 5]];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i][0] * p >= v - 1e-12) { return { top: steps[i][0] * p, n: steps[i][1] }; }
    }
    return { top: 10 * p, n: 5 };
  }

  /* axes, grid and scales for the window [h.start, h.now] x [0, ymax] */
  function frame(box, h, ymax, label) {
    var svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": label,
                             preserveAspectRatio: "xMidYMid meet" });
    svgEl("title", {}, svg).textContent = label;
    var x0 = M.l, x1 = W - M.r, y0 = H - M.b, y1 = M.t;
    var span = Math.max(1, h.now - h.start);
    var scale = niceScale(ymax * 1.05), top = scale.top;
    var f = {
      svg: svg, x0: x0, x1: x1, y0: y0, y1: y1,
      x: function (t) { return x0 + (Math.max(h.start, Math.min(h.now, t)) - h.start) / span * (x1 - x0); },
      y: function (v) { return y0 - Math.min(v, top) / top * (y0 - y1); }
    };
    var g = svgEl("g", { "class": "axis" }, svg);
    for (var i = 0; i <= scale.n; i++) {
      var v = top * i / scale.n, y = f.y(v);
      svgEl("line", { x1: x0, x2: x1, y1: y, y2: y, "class": i ? "grid" : "base" }, g);
      svgEl("text", { x: x0 - 6, y: y + 4, "text-anchor": "end" }, g).textContent = fmt(v);
    }
    // a time tick every 10 minutes (or a sixth of the window), on round minutes
    var step = Math.max(60, Math.ceil(span / 6 / 600) * 600);
    for (var t = Math.ceil(h.start / step) * step; t <= h.now; t += step) {
      var xt = f.x(t);
      svgEl("line", { x1: xt, x2: xt, y1: y0, y2: y0 + 4, "class": "base" }, g);
      svgEl("text", { x: xt, y: H - 8, "text-anchor": "middle" }, g).textContent = hhmm(t);
    }
    box.appendChild(svg);
    return f;
  }

  function legend(box, items) {
    var ul = htmlEl("ul", "legend", undefined, box);
    items.forEach(function (it) {
      var li = htmlEl("li", "", undefined, ul);
      htmlEl("span", "swatch " + it.cls, undefined, li);
      htmlEl("span", "", it.name, li);
    });
  }

  function empty(box, text) {
    htmlEl("p", "chart-empty help", text, box);
  }

  /* lines: [{name, values (null = no data), cls}] over h.t */
  function lineChart(box, h, lines, label) {
    var max = 0;
    lines.forEach(function (l) { l.values.forEach(function (v) { if (v !== null && v > max) { max = v; } }); });
    var f = frame(box, h, max, label);
    lines.forEach(function (l) {
      var d = "", pen = false, g = svgEl("g", { "class": "series " + l.cls }, f.svg);
      l.values.forEach(function (v, i) {
        if (v === null || v === undefined) { pen = false; return; }
        var x = f.x(h.t[i]).toFixed(1), y = f.y(v).toFixed(1);
        d += (pen ? " L" : " M") + x + " " + y;
        pen = true;
        svgEl("circle", { cx: x, cy: y, r: 2 }, g);
      });
      if (d) { svgEl("path", { d: d.trim(), "class": "line" }, g); }
    });
    legend(box, lines);
  }

  /* stacks: [{name, values (counts per interval), cls}], drawn bottom up */
  function barChart(box, h, stacks, label) {
    var totals = h.t.map(function (_, i) {
      return stacks.reduce(function (s, st) { return s + (st.values[i] || 0); }, 0);
    });
    var f = frame(box, h, Math.max.apply(null, [0].concat(totals)), label);
    h.t.forEach(function (t, i) {
      var xa = f.x(t - h.dt[i]), xb = f.x(t), w = Math.max(1, xb - xa - 1), base = 0;
      stacks.forEach(function (st) {
        var n = st.values[i] || 0;
        if (!n) { return; }
        var ya = f.y(base), yb = f.y(base + n);
        var r = svgEl("rect", { x: xa.toFixed(1), y: yb.toFixed(1), width: w.toFixed(1),
                                height: Math.max(0.5, ya - yb).toFixed(1), "class": "bar " + st.cls }, f.svg);
        svgEl("title", {}, r).textContent = hhmm(t) + " " + st.name + ": " + n;
        base += n;
      });
    });
    legend(box, stacks);
  }

  function drawModel(fig, h, kind) {
    var name = fig.getAttribute("data-model");
    var m = (h.models || {})[name];
    var box = fig.querySelector(".chart-box") || fig;
    if (!m || !h.t.length) { empty(box, "No data in this window yet."); return false; }
    if (kind === "throughput") {
      // requests/s first (dashed, underneath): for one item per request both lines coincide
      lineChart(box, h, [
        { name: "requests/s", values: m.requests_per_s, cls: "c1 dashed" },
        { name: "items/s", values: m.items_per_s, cls: "c0" }
      ], name + " throughput per interval (requests/s and items/s)");
    } else {
      if (!m.calls) { empty(box, "No inference in this window."); return false; }
      lineChart(box, h, [
        { name: "p50 ms", values: m.p50_ms, cls: "c0" },
        { name: "p99 ms", values: m.p99_ms, cls: "c3" }
      ], name + " inference latency per interval (p50 and p99, ms)");
    }
    return true;
  }

  function drawErrors(fig, h) {
    var box = fig.querySelector(".chart-box") || fig;
    var stacks = [], api = (h.errors || {}).api || {}, other = (h.errors || {}).other || {};
    Object.keys(api).forEach(function (s, i) {
      stacks.push({ name: s + " API", values: api[s], cls: "e" + (i % 6) });
    });
    Object.keys(other).forEach(function (s, i) {
      stacks.push({ name: s + " static/unmatched", values: other[s], cls: "o" + (i % 3) });
    });
    if (!h.t.length) { empty(box, "No data in this window yet."); return false; }
    if (!stacks.length) { empty(box, "No errors in this window."); return false; }
    barChart(box, h, stacks, "Errors per interval by HTTP status");
    return true;
  }

  function init() {
    var root = document.getElementById("history");
    if (!root) { return; }
    var h;
    try {
      h = JSON.parse(root.getAttribute("data-history") || "null");
    } catch (e) {
      h = null;
    }
    var drawn = 0;
    if (h && h.t) {
      Array.prototype.forEach.call(root.querySelectorAll("figure[data-chart]"), function (fig) {
        var kind = fig.getAttribute("data-chart");
        var ok = kind === "errors" ? drawErrors(fig, h) : drawModel(fig, h, kind);
        if (ok) { drawn += 1; }
      });
    }
    root.setAttribute("data-rendered", String(drawn));
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
}());
