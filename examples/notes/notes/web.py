"""The web process: a tiny Flask app, configured only by its environment."""

from __future__ import annotations

import os

from flask import Flask, jsonify, request

from notes.db import connect

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ["SECRET_KEY"]


@app.get("/notes")
def list_notes():  # type: ignore[no-untyped-def]
    rows = connect().execute("SELECT id, body, created_at FROM notes ORDER BY id").fetchall()
    return jsonify([{"id": i, "body": b, "created_at": c} for i, b, c in rows])


@app.post("/notes")
def add_note():  # type: ignore[no-untyped-def]
    body = (request.get_json(silent=True) or {}).get("body", "")
    if not isinstance(body, str) or not body.strip():
        return jsonify(error="body is required"), 400
    db = connect()
    with db:
        cur = db.execute("INSERT INTO notes (body) VALUES (?)", (body,))
    return jsonify(id=cur.lastrowid), 201
