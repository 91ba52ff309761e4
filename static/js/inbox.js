// The inbox's bulk bar: "select all on this page" and a live count of ticked groups.
// Works on the page and on every htmx swap of the results region; without it the boxes still post.
(function () {
  "use strict";
  function boxes() { return document.querySelectorAll('input[name="groups"][form="bulk"]'); }
  function refresh() {
    var ticked = Array.prototype.filter.call(boxes(), function (b) { return b.checked; }).length;
    var matching = document.querySelector("[data-select-matching]");
    var every = matching && matching.checked;
    var label = document.querySelector("[data-bulk-count]");
    if (label) {
      label.textContent = every ? "Every match selected" : ticked ? ticked + " selected" : "Tick groups to act on them";
    }
    var bar = document.getElementById("bulk");
    if (bar) { bar.classList.toggle("has-selection", every || ticked > 0); }
  }
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches && target.matches("[data-select-all]")) {
      boxes().forEach(function (b) { b.checked = target.checked; });
    }
    if (target.matches && (target.matches("[data-select-all], [data-select-matching]") || target.name === "groups")) { refresh(); }
  });
  document.addEventListener("htmx:afterSwap", refresh);
  document.addEventListener("DOMContentLoaded", refresh);
})();
