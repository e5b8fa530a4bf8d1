/* Grading page: keyboard shortcuts and time taken (vanilla JS, no dependencies).
 *
 * Tier 2/3: 1-4 or C D R N choose a label (tier 2 also ticks the matching finding
 * unless findings were set by hand); Enter confirms the current label when none is
 * chosen, else saves and opens the next scan.
 * Tier 1: A or Enter accepts, X excludes and then 1-4 choose the reason.
 * Tier 2 of a volume: M (or the button) adds or removes the B-scan the volume viewer
 * shows in the key B-scans field (1-based numbers, as the viewer counts).
 */
(function () {
  "use strict";
  var form = document.getElementById("grading-form");
  if (!form) return;
  var started = performance.now();
  var tier = form.dataset.tier;
  var reference = form.dataset.reference || "";
  var timeInput = form.querySelector("[name=time_taken_ms]");
  var findingsTouched = false;
  var excluding = false;
  var LABELS = { "1": "CNV", "2": "DME", "3": "DRUSEN", "4": "NORMAL", c: "CNV", d: "DME", r: "DRUSEN", n: "NORMAL" };
  var FINDING_FOR = { CNV: "cnv", DME: "macular_edema", DRUSEN: "drusen" };
  var REASONS = { "1": "severe_artifact", "2": "low_resolution", "3": "not_macular_bscan", "4": "other" };

  form.addEventListener("submit", function () {
    if (timeInput) timeInput.value = String(Math.round(performance.now() - started));
  });
  ["cnv", "macular_edema", "drusen", "other"].forEach(function (name) {
    var box = form.querySelector("input[name=" + name + "]");
    if (box) box.addEventListener("change", function () { findingsTouched = true; });
  });

  function radio(name, value) {
    var input = form.querySelector("input[name=" + name + "][value='" + value + "']");
    if (input) { input.checked = true; input.focus(); }
    return input;
  }

  function chooseLabel(value) {
    if (!radio("label", value)) return;
    if (tier === "2" && !findingsTouched) {
      Object.keys(FINDING_FOR).forEach(function (label) {
        var box = form.querySelector("input[name=" + FINDING_FOR[label] + "]");
        if (box) box.checked = label === value;
      });
    }
  }

  function checked(name) {
    return form.querySelector("input[name=" + name + "]:checked");
  }

  function submit() {
    if (form.requestSubmit) form.requestSubmit(); else form.submit();
  }

  var keyField = form.querySelector("[name=key_bscans]");
  var slider = document.querySelector("[data-volume-viewer] [data-slice-slider]");
  function markSlice() {
    if (!keyField || !slider) return;
    var n = parseInt(slider.value, 10) + 1;
    var have = keyField.value.split(/[\s,;]+/).filter(Boolean).map(Number);
    var at = have.indexOf(n);
    if (at >= 0) have.splice(at, 1); else have.push(n);
    have.sort(function (a, b) { return a - b; });
    keyField.value = have.join(", ");
  }
  var markButton = form.querySelector("[data-mark-slice]");
  if (markButton) markButton.addEventListener("click", markSlice);

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var target = event.target;
    if (target.matches("textarea, input[type=text], select")) return;
    var key = event.key.length === 1 ? event.key.toLowerCase() : event.key;

    if (tier === "1") {
      if (key === "a" || (key === "Enter" && !excluding)) {
        event.preventDefault();
        radio("decision", "accept");
        submit();
      } else if (key === "x") {
        event.preventDefault();
        excluding = true;
        radio("decision", "exclude");
      } else if (excluding && REASONS[key]) {
        event.preventDefault();
        form.querySelector("[name=reason]").value = REASONS[key];
      } else if (excluding && key === "Enter") {
        event.preventDefault();
        submit();
      }
      return;
    }

    if (key === "m" && keyField) {
      event.preventDefault();
      markSlice();
    } else if (LABELS[key]) {
      event.preventDefault();
      chooseLabel(LABELS[key]);
    } else if (key === "Enter") {
      event.preventDefault();
      if (!checked("label") && reference) chooseLabel(reference);
      if (checked("label")) submit();
    }
  });
})();
