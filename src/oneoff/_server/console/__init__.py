"""The team server's web console: server-rendered pages, signed login links, no passwords.

``routes`` (registered in ``oneoff._server.app.ROUTE_MODULES``) serves the pages; see
docs/console.md for the login link, why an approval made from a browser is still a key's
signature over the plan hash, and the threat model.
"""
