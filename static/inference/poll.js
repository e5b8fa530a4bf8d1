/* Pending automated readings refresh themselves without a page reload.
 *
 * Every element with data-analysis-poll="<status url>" and a pending data-status
 * (received, queued, running) polls its JSON status endpoint with a growing
 * interval; when the status changes the element is replaced by the partial the
 * endpoint re-rendered ("html"). Also wires the heatmap toggle: it hands the overlay
 * to the scan viewer ([data-viewer], static/js/viewer.js), or shows an <img> without one.
 * Included by several partials: the guard makes it run once per page.
 */
(function () {
  "use strict";
  if (window.octAnalysisPoll) { return; }
  var PENDING = { received: true, queued: true, running: true };
  var MAX_WAIT_MS = 15 * 60 * 1000;
  var polling = new WeakSet();

  function poll(el) {
    if (polling.has(el)) { return; }
    polling.add(el);
    var started = Date.now();
    var delay = 1000;
    function tick() {
      if (!document.body.contains(el)) { return; }
      fetch(el.getAttribute("data-analysis-poll"), {
        credentials: "same-origin",
        headers: { "Accept": "application/json" },
        cache: "no-store"
      }).then(function (r) {
        if (!r.ok) { throw new Error("status " + r.status); }
        return r.json();
      }).then(function (data) {
        var status = data.status !== undefined ? data.status : (data.pending ? "running" : "done");
        if (status !== el.getAttribute("data-status") && data.html) {
          var holder = document.createElement("div");
          holder.innerHTML = data.html.trim();
          var fresh = holder.querySelector("[data-analysis-poll]");
          if (fresh) {
            el.replaceWith(fresh);
            scan(fresh.parentNode || document);
            document.dispatchEvent(new CustomEvent("oct:analysis-updated", { detail: data }));
            return;
          }
        }
        schedule();
      }).catch(schedule);
    }
    function schedule() {
      if (Date.now() - started > MAX_WAIT_MS) { return; }
      delay = Math.min(delay * 1.5, 5000);
      window.setTimeout(tick, delay);
    }
    window.setTimeout(tick, delay);
  }

  function scan(root) {
    var nodes = (root || document).querySelectorAll("[data-analysis-poll]");
    Array.prototype.forEach.call(nodes, function (el) {
      if (PENDING[el.getAttribute("data-status")]) { poll(el); }
    });
  }

  function toggleHeatmap(button) {
    var src = button.getAttribute("data-overlay-src");
    var on = button.getAttribute("aria-pressed") !== "true";
    var viewer = document.querySelector("[data-viewer]");
    if (viewer && viewer._octViewer && window.OCTViewer) {
      // The cases viewer (static/js/viewer.js) draws the RGBA heatmap over the scan.
      var v = viewer._octViewer;
      if (on) { viewer.setAttribute("data-overlay-src", src); }
      if (!v.overlay) { window.OCTViewer.setOverlay(viewer, src, "Show heatmap"); }
      var box = viewer.querySelector("[data-viewer-overlay-toggle]");
      if (box) { box.checked = on; }
      v.showOverlay(on);
    } else {
      var img = button.closest("[data-analysis-poll]").querySelector("[data-heatmap-fallback]");
      if (img) {
        if (on && !img.getAttribute("src")) { img.setAttribute("src", src); }
        img.hidden = !on;
      }
    }
    button.setAttribute("aria-pressed", on ? "true" : "false");
    button.textContent = on ? "Hide heatmap" : "Show heatmap";
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-heatmap-toggle]");
    if (button) { event.preventDefault(); toggleHeatmap(button); }
  });

  window.octAnalysisPoll = { scan: scan };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { scan(document); });
  } else {
    scan(document);
  }
})();
