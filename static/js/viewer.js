/* OCT Portal image viewer: zoom, pan, brightness/contrast, optional overlay.
 *
 * Markup: an element with [data-viewer] holding [data-viewer-stage] > img[data-viewer-image]
 * and the controls (see templates/cases/_viewer.html). An overlay (e.g. a heatmap) comes
 * from the viewer's data-overlay-src, or from any element on the page carrying
 * data-viewer-overlay="URL" (optionally data-viewer-overlay-label="..."), or later from
 * OCTViewer.setOverlay(viewerElement, url, label).
 * Keyboard (stage focused): arrows pan, + / - zoom, 0 resets, H toggles the overlay.
 */
(function () {
  "use strict";

  var MIN_ZOOM = 0.1, MAX_ZOOM = 16, STEP = 1.25, PAN_STEP = 40;

  function Viewer(root) {
    this.root = root;
    this.stage = root.querySelector("[data-viewer-stage]");
    this.img = root.querySelector("[data-viewer-image]");
    this.zoomLabel = root.querySelector("[data-viewer-zoom-label]");
    this.brightness = root.querySelector("[data-viewer-brightness]");
    this.contrast = root.querySelector("[data-viewer-contrast]");
    this.overlayControl = root.querySelector("[data-viewer-overlay-control]");
    this.overlayToggle = root.querySelector("[data-viewer-overlay-toggle]");
    this.overlay = null;
    this.scale = 1; this.fitScale = 1; this.x = 0; this.y = 0;
    this.pointers = {}; this.pinchDistance = 0;
    this.bind();
    var overlaySource = root.getAttribute("data-overlay-src");
    var hint = document.querySelector("[data-viewer-overlay]");
    if (overlaySource) {
      this.setOverlay(overlaySource, root.getAttribute("data-overlay-label"));
    } else if (hint) {
      this.setOverlay(hint.getAttribute("data-viewer-overlay"), hint.getAttribute("data-viewer-overlay-label"));
    }
    if (this.img.complete && this.img.naturalWidth) { this.fit(); } else {
      var self = this;
      this.img.addEventListener("load", function () { self.fit(); });
    }
    root.classList.add("viewer-ready");
  }

  Viewer.prototype.bind = function () {
    var self = this, stage = this.stage;
    function on(sel, ev, fn) { var el = self.root.querySelector(sel); if (el) el.addEventListener(ev, fn); }
    on("[data-viewer-zoom-in]", "click", function () { self.zoomBy(STEP); });
    on("[data-viewer-zoom-out]", "click", function () { self.zoomBy(1 / STEP); });
    on("[data-viewer-fit]", "click", function () { self.fit(); });
    on("[data-viewer-reset]", "click", function () { self.reset(); });
    [this.brightness, this.contrast].forEach(function (input) {
      if (!input) return;
      input.addEventListener("input", function () {
        input.setAttribute("aria-valuetext", input.value + "%");
        self.applyFilter();
      });
    });
    if (this.overlayToggle) {
      this.overlayToggle.addEventListener("change", function () { self.showOverlay(self.overlayToggle.checked); });
    }
    stage.addEventListener("wheel", function (e) {
      e.preventDefault();
      var r = stage.getBoundingClientRect();
      self.zoomBy(e.deltaY < 0 ? 1.1 : 1 / 1.1, e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    stage.addEventListener("pointerdown", function (e) {
      stage.setPointerCapture(e.pointerId);
      self.pointers[e.pointerId] = { x: e.clientX, y: e.clientY };
      stage.classList.add("dragging");
    });
    stage.addEventListener("pointermove", function (e) {
      var prev = self.pointers[e.pointerId];
      if (!prev) return;
      var ids = Object.keys(self.pointers);
      if (ids.length === 2) {
        self.pointers[e.pointerId] = { x: e.clientX, y: e.clientY };
        var a = self.pointers[ids[0]], b = self.pointers[ids[1]];
        var d = Math.hypot(a.x - b.x, a.y - b.y);
        if (self.pinchDistance) {
          var r = stage.getBoundingClientRect();
          self.zoomBy(d / self.pinchDistance, (a.x + b.x) / 2 - r.left, (a.y + b.y) / 2 - r.top);
        }
        self.pinchDistance = d;
        return;
      }
      self.x += e.clientX - prev.x; self.y += e.clientY - prev.y;
      self.pointers[e.pointerId] = { x: e.clientX, y: e.clientY };
      self.apply();
    });
    function end(e) {
      delete self.pointers[e.pointerId];
      self.pinchDistance = 0;
      if (!Object.keys(self.pointers).length) stage.classList.remove("dragging");
    }
    stage.addEventListener("pointerup", end);
    stage.addEventListener("pointercancel", end);
    stage.addEventListener("dblclick", function (e) {
      var r = stage.getBoundingClientRect();
      self.zoomBy(2, e.clientX - r.left, e.clientY - r.top);
    });
    stage.addEventListener("keydown", function (e) {
      var handled = true;
      switch (e.key) {
        case "ArrowLeft": self.x += PAN_STEP; break;
        case "ArrowRight": self.x -= PAN_STEP; break;
        case "ArrowUp": self.y += PAN_STEP; break;
        case "ArrowDown": self.y -= PAN_STEP; break;
        case "+": case "=": self.zoomBy(STEP); return e.preventDefault();
        case "-": case "_": self.zoomBy(1 / STEP); return e.preventDefault();
        case "0": self.reset(); return e.preventDefault();
        case "h": case "H":
          if (self.overlay && self.overlayToggle) {
            self.overlayToggle.checked = !self.overlayToggle.checked;
            self.showOverlay(self.overlayToggle.checked);
          }
          break;
        default: handled = false;
      }
      if (handled) { e.preventDefault(); self.apply(); }
    });
    window.addEventListener("resize", function () { if (self.scale === self.fitScale) self.fit(); });
  };

  Viewer.prototype.fit = function () {
    var w = this.img.naturalWidth, h = this.img.naturalHeight;
    var sw = this.stage.clientWidth, sh = this.stage.clientHeight;
    if (!w || !h || !sw || !sh) return;
    this.fitScale = Math.min(sw / w, sh / h);
    this.scale = this.fitScale;
    this.x = (sw - w * this.scale) / 2;
    this.y = (sh - h * this.scale) / 2;
    this.apply();
  };

  Viewer.prototype.zoomBy = function (factor, cx, cy) {
    var next = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, this.scale * factor));
    if (cx === undefined) { cx = this.stage.clientWidth / 2; cy = this.stage.clientHeight / 2; }
    // Keep the point under the cursor (or the centre) where it is.
    this.x = cx - (cx - this.x) * (next / this.scale);
    this.y = cy - (cy - this.y) * (next / this.scale);
    this.scale = next;
    this.apply();
  };

  Viewer.prototype.reset = function () {
    if (this.brightness) { this.brightness.value = 100; this.brightness.setAttribute("aria-valuetext", "100%"); }
    if (this.contrast) { this.contrast.value = 100; this.contrast.setAttribute("aria-valuetext", "100%"); }
    this.applyFilter();
    this.fit();
  };

  Viewer.prototype.apply = function () {
    var t = "translate(" + this.x + "px," + this.y + "px) scale(" + this.scale + ")";
    this.img.style.transform = t;
    if (this.overlay) this.overlay.style.transform = t;
    if (this.zoomLabel) this.zoomLabel.textContent = Math.round(this.scale * 100) + "%";
    this.root.setAttribute("data-zoom", this.scale.toFixed(3));
  };

  Viewer.prototype.applyFilter = function () {
    var b = this.brightness ? this.brightness.value : 100;
    var c = this.contrast ? this.contrast.value : 100;
    this.img.style.filter = "brightness(" + b + "%) contrast(" + c + "%)";
  };

  Viewer.prototype.setOverlay = function (url, label) {
    if (!url) return;
    if (!this.overlay) {
      this.overlay = document.createElement("img");
      this.overlay.className = "viewer-overlay";
      this.overlay.alt = "";
      this.overlay.hidden = true;
      this.stage.appendChild(this.overlay);
    }
    this.overlay.src = url;
    if (this.overlayControl) {
      this.overlayControl.hidden = false;
      if (label) {
        var text = this.overlayControl.lastChild;
        if (text && text.nodeType === 3) text.textContent = " " + label;
      }
    }
    this.apply();
  };

  Viewer.prototype.showOverlay = function (show) {
    if (this.overlay) this.overlay.hidden = !show;
  };

  var viewers = [];
  function init() {
    var els = document.querySelectorAll("[data-viewer]");
    for (var i = 0; i < els.length; i++) {
      if (!els[i]._octViewer) { els[i]._octViewer = new Viewer(els[i]); viewers.push(els[i]._octViewer); }
    }
  }
  window.OCTViewer = {
    init: init,
    setOverlay: function (el, url, label) { if (el && el._octViewer) el._octViewer.setOverlay(url, label); },
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
