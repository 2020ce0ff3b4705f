// Wallet page: the credits-burned-per-day chart, drawn with the vendored Chart.js.
// Every figure (per model, per day total) comes from the server as an exact decimal
// string and is shown as given; the numbers the bars are drawn from are only for drawing.
(function () {
  "use strict";
  var canvas = document.getElementById("burn-chart");
  var source = document.getElementById("burn-chart-data");
  if (!canvas || !source || typeof Chart === "undefined") return;
  var data = JSON.parse(source.textContent);
  var todayIndex = data.labels.indexOf(data.today);
  // Distinct hues that stay readable on white; repeated if there are more models.
  var palette = ["#3b3fb6", "#d1495b", "#00798c", "#edae49", "#66a182", "#8d6cab", "#2e4057", "#c75d00"];
  var datasets = data.datasets.map(function (set, i) {
    return {
      label: set.label,
      data: set.data.map(Number),
      backgroundColor: palette[i % palette.length],
      // Today's bar is outlined as well as labelled.
      borderColor: "#1b1f2a",
      borderWidth: data.labels.map(function (_, index) { return index === todayIndex ? 2 : 0; }),
    };
  });

  // Today, and every 7th day back from it: the same ticks at any width, none hiding today's.
  function tickLabel(index) {
    if (index === todayIndex) return "Today";
    var back = todayIndex - index;
    return back > 0 && back % 7 === 0 ? data.labels[index].slice(5) : "";
  }

  var reduceMotion = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  new Chart(canvas, {
    type: "bar",
    data: { labels: data.labels, datasets: datasets },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: reduceMotion ? false : { duration: 400 },
      interaction: { mode: "index", intersect: false },
      scales: {
        x: {
          stacked: true,
          ticks: {
            autoSkip: false,
            maxRotation: 0,
            callback: function (value, index) { return tickLabel(index); },
            font: function (ctx) { return ctx.index === todayIndex ? { weight: "bold" } : {}; },
          },
        },
        y: { stacked: true, beginAtZero: true, title: { display: true, text: "credits" } },
      },
      plugins: {
        legend: { position: "bottom" },
        tooltip: {
          callbacks: {
            title: function (items) {
              var index = items[0].dataIndex;
              return data.labels[index] + (index === todayIndex ? " (today)" : "");
            },
            label: function (ctx) {
              // The exact 4-decimal string from the server, not the float the bar is drawn from.
              return ctx.dataset.label + ": " + data.datasets[ctx.datasetIndex].data[ctx.dataIndex] + " credits";
            },
            footer: function (items) {
              return "Day total: " + data.totals[items[0].dataIndex] + " credits";
            },
          },
        },
      },
    },
  });
})();
