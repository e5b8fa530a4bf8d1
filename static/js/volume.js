/* Volume viewer: a slider (and the arrow keys) step through the B-scans; the strip
   below shows each B-scan's urgent probability and jumps to it when clicked. */
(function () {
  document.querySelectorAll("[data-volume-viewer]").forEach(function (root) {
    var slider = root.querySelector("[data-slice-slider]");
    var viewer = root.querySelector("[data-viewer]");
    var label = root.querySelector("[data-slice-label]");
    var link = root.querySelector("[data-slice-link]");
    var cells = Array.prototype.slice.call(root.querySelectorAll(".slice-strip li"));
    if (!slider || !cells.length) return;
    function show(i) {
      i = Math.max(0, Math.min(cells.length - 1, i));
      slider.value = String(i);
      // The slice is shown in the shared B-scan viewer (static/js/viewer.js), heatmap included.
      if (window.OCTViewer && viewer && viewer._octViewer) {
        window.OCTViewer.setImage(viewer, cells[i].dataset.src, cells[i].dataset.heatmap || "");
      }
      link.href = cells[i].dataset.href;
      label.textContent = "B-scan " + (i + 1) + " of " + cells.length;
      cells.forEach(function (c, j) { c.classList.toggle("current", j === i); });
    }
    slider.addEventListener("input", function () { show(parseInt(slider.value, 10)); });
    root.addEventListener("keydown", function (e) {
      if (e.target.tagName === "INPUT" && e.target !== slider) return;
      if (e.target.closest && e.target.closest("[data-viewer-stage]")) return;  // the viewer pans
      if (e.key === "ArrowRight" || e.key === "ArrowDown") { show(parseInt(slider.value, 10) + 1); e.preventDefault(); }
      if (e.key === "ArrowLeft" || e.key === "ArrowUp") { show(parseInt(slider.value, 10) - 1); e.preventDefault(); }
    });
    root.tabIndex = 0;
    cells.forEach(function (c, j) { c.addEventListener("click", function () { show(j); }); });
    root.querySelectorAll("[data-goto]").forEach(function (a) {
      a.addEventListener("click", function (e) { e.preventDefault(); show(parseInt(a.dataset.goto, 10)); });
    });
    function start() { show(0); }
    if (window.OCTViewer) { window.OCTViewer.init(); start(); } else { window.addEventListener("load", start); }
  });
})();
