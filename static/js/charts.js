// The flows page's charts, drawn with uPlot (static/vendor/uplot-1.6.32) from the JSON the page
// carries (monitoring/watch/charts.py). Durations are scaled to one unit for the whole axis
// (ms, s, min, h or d, from the largest value) so ticks are round numbers in that unit; counts
// get whole-number ticks only. Hovering shows each series' value in the legend. Drawn on load
// and after every htmx swap of the live region; without JavaScript the figure's text stays.
(function () {
  "use strict";
  var UNITS = [[172800, "d", 86400], [7200, "h", 3600], [120, "min", 60], [1, "s", 1], [0, "ms", 0.001]];
  var COUNT_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 1e6];
  var plots = [];

  function unitFor(seconds) {
    for (var i = 0; i < UNITS.length; i++) {
      if (seconds >= UNITS[i][0]) { return { name: UNITS[i][1], size: UNITS[i][2] }; }
    }
    return { name: "ms", size: 0.001 };
  }

  function duration(seconds) {
    if (seconds == null) { return "—"; }
    var unit = unitFor(seconds);
    var value = seconds / unit.size;
    return (value < 10 && unit.name !== "ms" ? value.toFixed(1) : Math.round(value)) + " " + unit.name;
  }

  function clock(ts) {
    var d = new Date(ts * 1000);
    return String(d.getUTCHours()).padStart(2, "0") + ":" + String(d.getUTCMinutes()).padStart(2, "0");
  }

  // Times in UTC, as the figures under the chart; ticks fall on UTC hours.
  function utc(ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); }

  // The time axis in 24-hour clock times, spaced so labels never touch.
  var TIME_AXIS = { space: 70, values: function (u, splits) { return splits.map(clock); } };

  function timeValue(u, ts) {
    if (ts == null) { return "—"; }
    var d = new Date(ts * 1000);
    return d.toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: "UTC" }) + " UTC";
  }

  // The y axis' tick labels, also kept on the element (data-y-ticks): uPlot draws them on a
  // canvas, and the browser tests read them from there.
  function ticks(el, format) {
    return function (u, splits) {
      var labels = splits.map(format);
      el.setAttribute("data-y-ticks", labels.join("|"));
      return labels;
    };
  }

  // The whole of the last 24 hours (the bars are hours), whatever hours have deliveries.
  function lastDay() {
    var hour = Math.floor(Date.now() / 3600000) * 3600;
    return [hour - 23 * 3600 - 1800, hour + 1800];
  }

  function latency(el, data) {
    var top = 0;
    var stacks = [[], [], []];
    for (var i = 0; i < data.x.length; i++) {
      var s = data.source[i], q = data.queue[i], d = data.dotdigital[i];
      stacks[0].push(s + q + d);
      stacks[1].push(s + q);
      stacks[2].push(s);
      top = Math.max(top, s + q + d);
    }
    var unit = unitFor(top);
    var scaled = stacks.map(function (row) { return row.map(function (v) { return v / unit.size; }); });
    var raw = [data.dotdigital, data.queue, data.source];
    var bars = uPlot.paths.bars({ size: [0.7, 14], align: 0 });
    function series(label, colour, index) {
      return {
        label: label, fill: colour, stroke: colour, width: 0, paths: bars, points: { show: false },
        value: function (u, v, si, idx) { return idx == null ? "—" : duration(raw[index][idx]); }
      };
    }
    // Stacked by drawing the running totals tallest first: each shorter bar covers the foot of
    // the one before it, and the legend shows each part's own value, not the running total.
    var opts = {
      width: el.clientWidth, height: 220, tzDate: utc,
      scales: {
        x: { time: true, range: lastDay() },
        y: { range: function (u, min, max) { return [0, Math.max(max, 1e-9) * 1.1]; } }
      },
      axes: [
        TIME_AXIS,
        { values: ticks(el, function (v) { return +v.toFixed(3) + " " + unit.name; }), size: 64 }
      ],
      series: [
        { label: "Hour", value: timeValue },
        series("DotDigital time", "#1d7a46", 0),
        series("Queue time", "#1f5fbf", 1),
        series("Source delay", "#8aa4c8", 2)
      ],
      legend: { live: true }
    };
    return new uPlot(opts, [data.x, scaled[0], scaled[1], scaled[2]], el);
  }

  function backlog(el, data) {
    var top = Math.max.apply(null, data.backlog.concat([1]));
    var opts = {
      width: el.clientWidth, height: 220, tzDate: utc,
      scales: { x: { time: true }, y: { range: [0, Math.max(top * 1.1, 2)] } },
      axes: [
        TIME_AXIS,
        { incrs: COUNT_STEPS, values: ticks(el, function (v) { return String(Math.round(v)); }) }
      ],
      series: [
        { label: "Time", value: timeValue },
        { label: "Waiting", stroke: "#a66300", width: 2, fill: "rgba(166,99,0,0.08)",
          value: function (u, v) { return v == null ? "—" : String(v); } }
      ]
    };
    return new uPlot(opts, [data.x, data.backlog], el);
  }

  var DRAW = { latency: latency, backlog: backlog };

  function draw(el) {
    var source = document.getElementById(el.getAttribute("data-source"));
    var kind = DRAW[el.getAttribute("data-chart")];
    if (!source || !kind || el.getAttribute("data-drawn")) { return; }
    el.setAttribute("data-drawn", "1");
    plots.push({ el: el, plot: kind(el, JSON.parse(source.textContent)) });
  }

  function drawAll(root) {
    plots = plots.filter(function (p) {
      if (p.el.isConnected) { return true; }
      p.plot.destroy();
      return false;
    });
    if (typeof uPlot === "undefined") { return; }
    var found = root.querySelectorAll ? root.querySelectorAll("[data-chart]") : [];
    Array.prototype.forEach.call(found, draw);
  }

  window.addEventListener("resize", function () {
    plots.forEach(function (p) { p.plot.setSize({ width: p.el.clientWidth, height: 220 }); });
  });
  if (window.htmx) { window.htmx.onLoad(drawAll); }
  else { document.addEventListener("DOMContentLoaded", function () { drawAll(document); }); }
})();
