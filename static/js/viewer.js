/* OCT Portal B-scan viewer: one component for every page that shows a B-scan.
 *
 * Markup: templates/cases/_viewer.html, an element with [data-viewer] holding
 * [data-viewer-stage] > img[data-viewer-image], the controls, optionally the heatmap
 * control (absent for a blinded tier 2 grader: then no overlay is ever attached, see
 * data-viewer-no-heatmap) and the side-by-side comparison with verified examples.
 * The heatmap comes from the viewer's data-overlay-src, or from an element on the page
 * carrying data-viewer-overlay="URL" (the reading partial once a reading arrives), or
 * from OCTViewer.setOverlay(viewerElement, url). OCTViewer.setImage(viewerElement, src,
 * overlayUrl) swaps the image (the volume viewer's current slice).
 * Keyboard (stage focused): arrows pan, + / - zoom, F fits, 0 resets, B / Shift+B
 * brightness, K / Shift+K contrast, H heatmap, [ / ] heatmap opacity, ? the shortcuts.
 */
(function () {
  "use strict";

  var MIN_ZOOM = 0.1, MAX_ZOOM = 16, STEP = 1.25, PAN_STEP = 40, LEVEL_STEP = 10, OPACITY_STEP = 10;

  function Viewer(root) {
    this.root = root;
    this.stage = root.querySelector("[data-viewer-stage]");
    this.img = root.querySelector("[data-viewer-image]");
    this.zoomLabel = root.querySelector("[data-viewer-zoom-label]");
    this.brightness = root.querySelector("[data-viewer-brightness]");
    this.contrast = root.querySelector("[data-viewer-contrast]");
    this.opacity = root.querySelector("[data-viewer-opacity]");
    this.overlayControl = root.querySelector("[data-viewer-overlay-control]");
    this.overlayToggle = root.querySelector("[data-viewer-overlay-toggle]");
    this.compare = root.querySelector("[data-viewer-compare]");
    this.compareImg = root.querySelector("[data-viewer-compare-image]");
    this.compareCaption = root.querySelector("[data-viewer-compare-caption]");
    this.help = root.querySelector("[data-viewer-help]");
    this.noHeatmap = root.hasAttribute("data-viewer-no-heatmap") || !this.overlayControl;
    this.overlay = null;
    this.scale = 1; this.fitScale = 1; this.x = 0; this.y = 0;
    this.pointers = {}; this.pinchDistance = 0;
    this.bind();
    var overlaySource = root.getAttribute("data-overlay-src");
    var hint = document.querySelector("[data-viewer-overlay]");
    if (overlaySource) {
      this.setOverlay(overlaySource);
    } else if (hint) {
      this.setOverlay(hint.getAttribute("data-viewer-overlay"));
    }
    var self = this;
    this.img.addEventListener("load", function () { self.fit(); });
    if (this.img.complete && this.img.naturalWidth) this.fit();
    root.classList.add("viewer-ready");
  }

  Viewer.prototype.bind = function () {
    var self = this, stage = this.stage;
    function on(sel, ev, fn) { var el = self.root.querySelector(sel); if (el) el.addEventListener(ev, fn); }
    on("[data-viewer-zoom-in]", "click", function () { self.zoomBy(STEP); });
    on("[data-viewer-zoom-out]", "click", function () { self.zoomBy(1 / STEP); });
    on("[data-viewer-fit]", "click", function () { self.fit(); });
    on("[data-viewer-reset]", "click", function () { self.reset(); });
    on("[data-viewer-compare-close]", "click", function () { self.closeCompare(); });
    [this.brightness, this.contrast, this.opacity].forEach(function (input) {
      if (!input) return;
      input.addEventListener("input", function () {
        input.setAttribute("aria-valuetext", input.value + "%");
        self.applyFilter();
      });
    });
    if (this.overlayToggle) {
      this.overlayToggle.addEventListener("change", function () { self.showOverlay(self.overlayToggle.checked); });
    }
    Array.prototype.forEach.call(this.root.querySelectorAll("[data-compare-src]"), function (button) {
      button.addEventListener("click", function () {
        self.openCompare(button.getAttribute("data-compare-src"), button.getAttribute("data-compare-caption"), button);
      });
    });
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
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      var handled = true;
      switch (e.key) {
        case "ArrowLeft": self.x += PAN_STEP; self.apply(); break;
        case "ArrowRight": self.x -= PAN_STEP; self.apply(); break;
        case "ArrowUp": self.y += PAN_STEP; self.apply(); break;
        case "ArrowDown": self.y -= PAN_STEP; self.apply(); break;
        case "+": case "=": self.zoomBy(STEP); break;
        case "-": case "_": self.zoomBy(1 / STEP); break;
        case "0": self.reset(); break;
        case "f": case "F": self.fit(); break;
        case "b": self.step(self.brightness, LEVEL_STEP); break;
        case "B": self.step(self.brightness, -LEVEL_STEP); break;
        case "k": self.step(self.contrast, LEVEL_STEP); break;
        case "K": self.step(self.contrast, -LEVEL_STEP); break;
        case "]": self.step(self.opacity, OPACITY_STEP); break;
        case "[": self.step(self.opacity, -OPACITY_STEP); break;
        case "h": case "H":
          if (self.overlay && self.overlayToggle) {
            self.overlayToggle.checked = !self.overlayToggle.checked;
            self.showOverlay(self.overlayToggle.checked);
          }
          break;
        case "?": if (self.help) self.help.open = !self.help.open; break;
        default: handled = false;
      }
      // The grading page's own shortcuts (static/verification/grading.js) must not see these.
      if (handled) { e.preventDefault(); e.stopPropagation(); }
    });
    window.addEventListener("resize", function () { if (self.scale === self.fitScale) self.fit(); });
  };

  Viewer.prototype.step = function (input, delta) {
    if (!input) return;
    var v = Math.min(Number(input.max), Math.max(Number(input.min), Number(input.value) + delta));
    input.value = String(v);
    input.setAttribute("aria-valuetext", v + "%");
    this.applyFilter();
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
    [this.brightness, this.contrast].forEach(function (input) {
      if (input) { input.value = 100; input.setAttribute("aria-valuetext", "100%"); }
    });
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
    var f = "brightness(" + b + "%) contrast(" + c + "%)";
    this.img.style.filter = f;
    if (this.compareImg) this.compareImg.style.filter = f;
    if (this.overlay && this.opacity) this.overlay.style.opacity = String(this.opacity.value / 100);
  };

  Viewer.prototype.setOverlay = function (url) {
    // A blinded tier 2 grader's viewer has no heatmap control: never attach one.
    if (this.noHeatmap) return;
    if (!url) {
      if (this.overlay) { this.overlay.remove(); this.overlay = null; }
      if (this.overlayControl) this.overlayControl.hidden = true;
      return;
    }
    if (!this.overlay) {
      this.overlay = document.createElement("img");
      this.overlay.className = "viewer-overlay";
      this.overlay.alt = "";
      this.overlay.setAttribute("data-viewer-overlay-image", "");
      this.overlay.hidden = !(this.overlayToggle && this.overlayToggle.checked);
      this.stage.appendChild(this.overlay);
    }
    this.overlay.src = url;
    if (this.overlayControl) this.overlayControl.hidden = false;
    this.applyFilter();
    this.apply();
  };

  Viewer.prototype.setImage = function (src, overlayUrl) {
    if (src && this.img.getAttribute("src") !== src) this.img.src = src;
    this.root.setAttribute("data-src", src || "");
    this.setOverlay(overlayUrl || "");
  };

  Viewer.prototype.showOverlay = function (show) {
    if (this.overlay) this.overlay.hidden = !show;
  };

  Viewer.prototype.openCompare = function (src, caption, button) {
    if (!this.compare || !this.compareImg) return;
    this.compareImg.src = src;
    this.compareImg.alt = caption || "Verified example";
    if (this.compareCaption) this.compareCaption.textContent = caption || "";
    this.compare.hidden = false;
    this.root.classList.add("viewer-comparing");
    Array.prototype.forEach.call(this.root.querySelectorAll("[data-compare-src]"), function (b) {
      b.setAttribute("aria-pressed", b === button ? "true" : "false");
    });
    this.applyFilter();
    this.fit();
  };

  Viewer.prototype.closeCompare = function () {
    if (!this.compare) return;
    this.compare.hidden = true;
    this.root.classList.remove("viewer-comparing");
    Array.prototype.forEach.call(this.root.querySelectorAll("[data-compare-src]"), function (b) {
      b.setAttribute("aria-pressed", "false");
    });
    this.fit();
  };

  function init() {
    var els = document.querySelectorAll("[data-viewer]");
    for (var i = 0; i < els.length; i++) {
      if (!els[i]._octViewer) els[i]._octViewer = new Viewer(els[i]);
    }
  }
  window.OCTViewer = {
    init: init,
    setOverlay: function (el, url) { if (el && el._octViewer) el._octViewer.setOverlay(url); },
    setImage: function (el, src, overlayUrl) { if (el && el._octViewer) el._octViewer.setImage(src, overlayUrl); },
  };
  // A reading that arrives while the page is open brings its heatmap along.
  document.addEventListener("oct:analysis-updated", function () {
    var hint = document.querySelector("[data-viewer-overlay]");
    var el = document.querySelector("[data-viewer]");
    if (hint && el && el._octViewer && !el._octViewer.overlay) el._octViewer.setOverlay(hint.getAttribute("data-viewer-overlay"));
  });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
