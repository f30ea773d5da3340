"""The team server (``oneoff server``): an ASGI app over the same library the CLI uses.

Requests, approvals, nonces, releases and the audit log live in the server's store, which
clients never touch; every call that acts is signed by a person's SSH key (see
``oneoff._envelope``), every read carries a short-lived token the server MAC'd. Starlette
and uvicorn come with the ``server`` extra and are imported only by ``oneoff server``.
"""
