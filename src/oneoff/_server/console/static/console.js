// The console's only script (no build step, no third-party code). Two behaviours:
// - [data-live="URL"]: re-fetch a server-rendered, escaped fragment every 2 s;
// - [data-stream="URL"]: append a running task's (redacted) output from Server-Sent Events,
//   as text nodes only: output is never parsed as HTML.
"use strict";
(function () {
  function live(el) {
    var url = el.getAttribute("data-live");
    function refresh() {
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { el.innerHTML = html; } })
        .catch(function () {})
        .then(function () { setTimeout(refresh, 2000); });
    }
    setTimeout(refresh, 2000);
  }

  function stream(el) {
    var source = new EventSource(el.getAttribute("data-stream"));
    var status = document.getElementById("run-status");
    source.addEventListener("output", function (event) {
      var data = JSON.parse(event.data);
      var span = document.createElement("span");
      span.className = "stream-" + String(data.stream);
      span.textContent = data.text;
      el.appendChild(span);
    });
    source.addEventListener("end", function (event) {
      var data = JSON.parse(event.data);
      if (status) {
        status.textContent = data.status + (data.exit_code === null ? "" : ", exit " + data.exit_code);
      }
      source.close();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(live);
    document.querySelectorAll("[data-stream]").forEach(stream);
  });
})();
