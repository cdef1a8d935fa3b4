// fleetsim report charts: one uPlot per spec in #fleetsim-charts (written by charts.rs).
// Time charts share one cursor (hover one, every chart shows the same moment) and one x range
// (drag to zoom any of them, double-click to reset). With "#selftest" in the URL the page also
// hovers and zooms itself and writes what happened into a "selftest" pre element for the Chromium
// tests, which can only read the DOM.
(function () {
  "use strict";
  var specs = JSON.parse(document.getElementById("fleetsim-charts").textContent);
  function seconds(v) {
    if (v == null) return "–";
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (a < 1e-3) return (v * 1e6).toFixed(0) + " µs";
    if (a < 1) return +(v * 1e3).toPrecision(3) + " ms";
    return +v.toPrecision(3) + " s";
  }
  function rate(v) {
    if (v == null) return "–";
    return (Math.abs(v) >= 100 ? v.toFixed(0) : +v.toPrecision(3)) + "/s";
  }
  function count(v) {
    return v == null ? "–" : String(Math.round(v * 100) / 100);
  }
  function ratio(v) {
    return v == null ? "–" : +(v * 100).toPrecision(3) + " %";
  }
  var formats = { seconds: seconds, per_second: rate, count: count, ratio: ratio };
  function clock(t) {
    if (t == null) return "–";
    t = Math.round(t);
    var h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = t % 60;
    var ss = (s < 10 ? "0" : "") + s;
    if (h > 0) return h + ":" + (m < 10 ? "0" : "") + m + ":" + ss;
    return m + ":" + ss;
  }

  var CLOCK_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400,
    21600, 43200, 86400, 172800, 604800];
  var plots = [];
  var timePlots = [];
  var syncing = false;
  // Zoom one time chart, zoom them all.
  function shareRange(u, key) {
    if (key !== "x" || syncing || timePlots.indexOf(u) < 0) return;
    syncing = true;
    var min = u.scales.x.min, max = u.scales.x.max;
    timePlots.forEach(function (p) {
      if (p !== u && (p.scales.x.min !== min || p.scales.x.max !== max)) {
        p.setScale("x", { min: min, max: max });
      }
    });
    syncing = false;
  }

  specs.forEach(function (c) {
    var el = document.getElementById(c.id);
    if (!el) return;
    var bars = c.kind === "bars";
    // "value": x is a plain number (a capacity plan's varied key), not run time.
    var plain = c.kind === "value";
    var fmt = formats[c.unit] || count;
    var xValue = bars
      ? function (u, v) { return v == null ? "–" : c.x_labels[v]; }
      : plain
        ? function (u, v) { return count(v); }
        : function (u, v) { return clock(v); };
    var series = [{ label: bars ? "bin" : plain ? c.x_name || "value" : "time", value: xValue }];
    c.series.forEach(function (s) {
      var one = {
        label: s.label,
        stroke: s.color,
        width: bars ? 1 : 1.5,
        spanGaps: true,
        points: { show: false },
        value: function (u, v) { return fmt(v); },
      };
      if (s.dash) one.dash = [6, 4];
      if (bars) {
        one.fill = s.color + (s.dash ? "66" : "cc");
        one.paths = uPlot.paths.bars({ size: [s.size || 0.7, Infinity], align: 0 });
      }
      series.push(one);
    });
    var opts = {
      width: Math.max(el.clientWidth, 320),
      height: 220,
      series: series,
      legend: { live: true },
      scales: {
        x: bars
          ? { time: false, range: function (u, min, max) { return [min - 0.5, max + 0.5]; } }
          : { time: false },
        y: {
          range: function (u, min, max) {
            return [0, max > 0 ? max * 1.1 : 1];
          },
        },
      },
      axes: [
        plain ? { values: function (u, ticks) { return ticks.map(count); } } : {
          values: bars
            ? function (u, ticks) {
                return ticks.map(function (i) { return Number.isInteger(i) ? c.x_labels[i] || "" : ""; });
              }
            : function (u, ticks) { return ticks.map(clock); },
          // Ticks on whole bins, or on clock-friendly steps of run time.
          incrs: bars ? [1] : CLOCK_STEPS,
        },
        { values: function (u, ticks) { return ticks.map(fmt); }, size: 72 },
      ],
      cursor: bars
        ? { drag: { x: false, y: false } }
        : plain
          ? { drag: { x: true, y: false } }
          : { sync: { key: "fleetsim" }, drag: { x: true, y: false } },
      hooks: { setScale: [shareRange] },
    };
    if (c.bands) {
      // uPlot numbers series from 1 (0 is x); a band fills between [upper, lower].
      opts.bands = c.bands.map(function (b) {
        return { series: [b[0] + 1, b[1] + 1], fill: c.series[b[0]].color + "33" };
      });
    }
    var data = [c.x].concat(c.series.map(function (s) { return s.values; }));
    var u = new uPlot(opts, data, el);
    plots.push(u);
    if (!bars && !plain) timePlots.push(u);
  });
  window.fleetsimPlots = plots;

  function selftest() {
    var out = {
      charts: plots.length,
      series: plots.map(function (u) { return u.series.length - 1; }),
      points: plots.map(function (u) { return u.data[0].length; }),
      hover: false,
      synced: false,
      zoomed: false,
    };
    var done = function () {
      var pre = document.createElement("pre");
      pre.id = "selftest";
      pre.textContent = JSON.stringify(out);
      document.body.appendChild(pre);
    };
    if (plots.length === 0) return done();
    // A plan page has no time charts: test its first (value) chart alone.
    var u = timePlots[0] || plots[0];
    var r = u.over.getBoundingClientRect();
    var at = function (type, fx, target) {
      (target || u.over).dispatchEvent(
        new MouseEvent(type, {
          clientX: r.left + r.width * fx,
          clientY: r.top + r.height / 2,
          bubbles: true,
          button: 0,
          buttons: type === "mouseup" ? 0 : 1,
          // uPlot ignores a drag's mousemove that did not move (a Chrome quirk).
          movementX: type === "mousemove" ? 5 : 0,
        })
      );
    };
    at("mouseenter", 0.5);
    at("mousemove", 0.5);
    setTimeout(function () {
      var legend = Array.prototype.map.call(
        u.root.querySelectorAll(".u-legend .u-value"),
        function (e) { return e.textContent; }
      );
      out.legend = legend;
      out.hover = u.cursor.idx != null && legend.some(function (t) { return t && t !== "–"; });
      out.synced = timePlots.every(function (p) { return p.cursor.idx != null; });
      var full = [u.scales.x.min, u.scales.x.max];
      at("mousedown", 0.25);
      at("mousemove", 0.6);
      at("mouseup", 0.6);
      setTimeout(function () {
        var last = timePlots.length ? timePlots[timePlots.length - 1] : u;
        out.range = [full, [u.scales.x.min, u.scales.x.max], [last.scales.x.min, last.scales.x.max]];
        out.zoomed =
          u.scales.x.min > full[0] &&
          u.scales.x.max < full[1] &&
          last.scales.x.min === u.scales.x.min &&
          last.scales.x.max === u.scales.x.max;
        done();
      }, 50);
    }, 50);
  }
  // uPlot sizes its elements on its first commit, after this script: test after it.
  if (location.hash === "#selftest") setTimeout(selftest, 100);
})();
