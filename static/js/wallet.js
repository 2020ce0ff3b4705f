// Wallet page: the credits-burned-per-day chart, drawn with the vendored Chart.js.
(function () {
  "use strict";
  var canvas = document.getElementById("burn-chart");
  var source = document.getElementById("burn-chart-data");
  if (!canvas || !source || typeof Chart === "undefined") return;
  var data = JSON.parse(source.textContent);
  // Distinct hues that stay readable on white; repeated if there are more models.
  var palette = ["#3b3fb6", "#d1495b", "#00798c", "#edae49", "#66a182", "#8d6cab", "#2e4057", "#c75d00"];
  var datasets = data.datasets.map(function (set, i) {
    return {
      label: set.label,
      // Amounts arrive as exact decimal strings; the chart only needs to draw them.
      data: set.data.map(Number),
      backgroundColor: palette[i % palette.length],
      borderWidth: 0,
    };
  });
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
        x: { stacked: true, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
        y: { stacked: true, beginAtZero: true, title: { display: true, text: "credits" } },
      },
      plugins: {
        legend: { position: "bottom" },
        tooltip: {
          callbacks: {
            label: function (ctx) {
              // Show the exact decimal string, not the float the bar is drawn from.
              return ctx.dataset.label + ": " + data.datasets[ctx.datasetIndex].data[ctx.dataIndex] + " credits";
            },
          },
        },
      },
    },
  });
})();
