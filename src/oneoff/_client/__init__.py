"""The CLI as a client of the team server (issue #13): stdlib HTTP, signed calls, sessions.

``oneoff --server URL`` (or ``ONEOFF_SERVER``, or ``[server] url`` in oneoff.toml) makes
the access, run-history and audit commands ask the server instead of opening the app's
store. Nothing here is imported unless a server is named: ``oneoff --help`` stays fast.

* ``url``: choosing and checking the server's URL (flag > variable > manifest).
* ``http``: one stdlib ``http.client`` call; the server's error bodies become the same
  oneoff errors (class, exit code, message) a local run raises.
* ``session``: the read-only session token, cached per server, person and key.
* ``remote``: the per-command calls; ``witness``: the remembered checkpoint per server.
"""
