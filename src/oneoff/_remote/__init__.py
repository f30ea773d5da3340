"""Runs mediated by the team server: the run grant's format, and the runner that presents it.

Standard library, ``cryptography`` and oneoff's own modules only: the CLI on a deploy host
imports this without the server's dependencies.
"""
