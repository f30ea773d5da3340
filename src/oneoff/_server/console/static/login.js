// The login link carries its signed token in the URL fragment (never sent to a server,
// never in a Referer): move it into the form, drop it from the address bar, and post it.
"use strict";
(function () {
  var token = window.location.hash.replace(/^#/, "");
  if (!token) { return; }
  history.replaceState(null, "", window.location.pathname);
  var form = document.getElementById("login-form");
  var field = document.getElementById("token");
  if (!form || !field) { return; }
  field.value = token;
  form.submit();
})();
