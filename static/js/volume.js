/* Volume viewer: a slider (the arrow keys, the mouse wheel over the localizer or the
   strip) steps through the B-scans; a line on the localizer marks the current one; the
   strip below shows each B-scan's urgent probability, marks the current one and jumps to
   a B-scan when clicked, as do the key B-scan links and "jump to the most suspicious". */
(function () {
  document.querySelectorAll("[data-volume-viewer]").forEach(function (root) {
    var slider = root.querySelector("[data-slice-slider]");
    var viewer = root.querySelector("[data-viewer]");
    var label = root.querySelector("[data-slice-label]");
    var link = root.querySelector("[data-slice-link]");
    var cells = Array.prototype.slice.call(root.querySelectorAll(".slice-strip li"));
    var line = root.querySelector("[data-localizer-line]");
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
      cells.forEach(function (c, j) {
        c.classList.toggle("current", j === i);
        if (j === i) { c.setAttribute("aria-current", "true"); } else { c.removeAttribute("aria-current"); }
      });
      if (line) {
        // Where the B-scan lies across the volume (0 first, 1 last), drawn top to bottom.
        var position = parseFloat(cells[i].dataset.position || "0");
        line.dataset.position = String(position);
        line.style.top = (position * 100).toFixed(2) + "%";
      }
    }
    function step(delta) { show(parseInt(slider.value, 10) + delta); }
    // The wheel steps over the localizer and the strip; over the B-scan itself it zooms (viewer.js).
    [root.querySelector("[data-localizer]"), root.querySelector(".slice-strip"), slider].forEach(function (el) {
      if (!el) return;
      el.addEventListener("wheel", function (e) {
        if (!e.deltaY) return;
        e.preventDefault();
        step(e.deltaY > 0 ? 1 : -1);
      }, { passive: false });
    });
    slider.addEventListener("input", function () { show(parseInt(slider.value, 10)); });
    root.addEventListener("keydown", function (e) {
      if (e.target.tagName === "INPUT" && e.target !== slider) return;
      if (e.target.closest && e.target.closest("[data-viewer-stage]")) return;  // the viewer pans
      if (e.key === "ArrowRight" || e.key === "ArrowDown") { step(1); e.preventDefault(); }
      if (e.key === "ArrowLeft" || e.key === "ArrowUp") { step(-1); e.preventDefault(); }
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
