"""The preloaded runner: a per-user daemon that has oneoff imported and forks one runner per
invocation, so a scripted `oneoff run` does not pay Python's import time every time.

It changes where the runner's Python code starts, not what it does: each request is served
by a fresh fork that takes the caller's standard streams, working directory, umask,
environment and arguments, then runs the same ``main(argv)`` the in-process path runs. A
caller whose process differs from the daemon in anything the fork cannot take over (user,
groups, capabilities, namespaces, cgroup, resource limits, security label, interpreter,
oneoff's code) is refused, and the client runs in-process instead. Nothing here is a
privilege boundary: only processes of the daemon's own user may connect.

``paths`` (socket location and its checks) and ``wire`` (the message format) are imported
by the client on every invocation and stay tiny; ``server`` and ``peer`` run in the daemon.
"""
