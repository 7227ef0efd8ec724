// Re-fetches every [data-refresh] fragment (the queue graphs) every few seconds. The
// fragments are server-rendered SVG; this file is the page's only script (CSP: script-src 'self').
"use strict";
(function () {
  const PERIOD_MS = 3000;
  function refresh(element) {
    fetch(element.dataset.refresh, { credentials: "same-origin", cache: "no-store" })
      .then(function (reply) { return reply.ok ? reply.text() : null; })
      .then(function (html) { if (html !== null) { element.innerHTML = html; } })
      .catch(function () { /* the coordinator restarts: try again next time */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(function (element) {
      setInterval(function () { refresh(element); }, PERIOD_MS);
    });
  });
})();
