// initlab report: hover tooltips and init toggles. Everything works without it (SVG <title> tooltips).
(function () {
  "use strict";
  var tip = document.getElementById("tip");
  // Move each chart element's <title> into data-tip: one fast tooltip instead of a slow native one too.
  var titled = document.querySelectorAll("svg.plot [data-tip], svg.plot .pt, svg.plot .cross");
  for (var i = 0; i < titled.length; i++) {
    var t = titled[i].querySelector("title");
    if (t) { titled[i].setAttribute("data-tip", t.textContent); t.parentNode.removeChild(t); }
  }
  function place(x, y) {
    var w = tip.offsetWidth, h = tip.offsetHeight;
    var left = x + 14, top = y + 14;
    if (left + w > window.innerWidth - 4) { left = x - w - 14; }
    if (top + h > window.innerHeight - 4) { top = y - h - 14; }
    tip.style.left = Math.max(4, left) + "px";
    tip.style.top = Math.max(4, top) + "px";
  }
  var current = null;
  function show(el, x, y) {
    if (current && current !== el) { current.classList.remove("on"); }
    current = el;
    el.classList.add("on");
    tip.textContent = el.getAttribute("data-tip");  // text, never markup
    tip.hidden = false;
    place(x, y);
  }
  function hide() {
    if (current) { current.classList.remove("on"); current = null; }
    tip.hidden = true;
  }
  document.addEventListener("mouseover", function (e) {
    var el = e.target.closest ? e.target.closest("[data-tip]") : null;
    if (el) { show(el, e.clientX, e.clientY); } else { hide(); }
  });
  document.addEventListener("mousemove", function (e) { if (!tip.hidden) { place(e.clientX, e.clientY); } });
  window.addEventListener("scroll", hide, { passive: true });
  // Toggle an init everywhere: every chart's series, every legend button, every table row of that init.
  document.addEventListener("click", function (e) {
    var b = e.target.closest ? e.target.closest("button.lg[data-init]") : null;
    if (!b) { return; }
    var key = b.getAttribute("data-init");
    var hideIt = b.getAttribute("aria-pressed") !== "false";
    var els = document.querySelectorAll('[data-init="' + key + '"]');
    for (var i = 0; i < els.length; i++) {
      els[i].classList.toggle("off", hideIt);
      if (els[i].tagName === "BUTTON") { els[i].setAttribute("aria-pressed", hideIt ? "false" : "true"); }
    }
    hide();
  });
})();
