"""`oneoff audit export --format ocsf`: every event valid against OCSF's published names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from oneoff.testing import run_cli

FIELDS = json.loads((Path(__file__).parent / "data" / "ocsf_1_3_fields.json").read_text())
CLASSES = {spec["class_uid"]: spec for spec in FIELDS["classes"].values()}


def check_object(value: dict[str, Any], name: str, where: str) -> None:
    spec = FIELDS["objects"][name]
    unknown = set(value) - set(spec["attributes"])
    assert not unknown, f"{where}: {sorted(unknown)} are not {name} attributes"
    missing = set(spec["required"]) - set(value)
    assert not missing, f"{where}: {name} lacks required {sorted(missing)}"
    for key, child in spec.get("objects", {}).items():
        if key in value:
            check_object(value[key], child, f"{where}.{key}")


def check_event(event: dict[str, Any]) -> None:
    """One OCSF event: known class, only its attributes, its required ones, sound uids."""
    spec = CLASSES[event["class_uid"]]
    allowed = set(FIELDS["base_event"]["attributes"]) | set(spec["attributes"])
    unknown = set(event) - allowed
    assert not unknown, f"{sorted(unknown)} are not attributes of class {event['class_uid']}"
    required = set(FIELDS["base_event"]["required"]) | set(spec["required"])
    assert required <= set(event), sorted(required - set(event))
    assert event["category_uid"] == spec["category_uid"]
    assert event["activity_id"] in spec["activity_ids"]
    assert event["type_uid"] == event["class_uid"] * 100 + event["activity_id"]
    assert isinstance(event["time"], int)
    check_object(event["metadata"], "metadata", "metadata")
    for key, child in spec["objects"].items():
        value = event.get(key)
        for index, item in enumerate(value if isinstance(value, list) else [value]):
            if item is not None:
                check_object(item, child, f"{key}[{index}]")


def test_ocsf_export_validates_against_published_field_names(
    app: Path, cli_env: dict[str, str]
) -> None:
    """Runs (started, finished, failed) become Process Activity and plans and the rest API
    Activity, each with only OCSF field names, its class's required fields, and the audit
    event's number and hash kept for tracing back to `oneoff audit verify`."""
    assert run_cli(["run", "hello", "--env", "development"], cwd=app, env=cli_env).exit_code == 0
    failed = run_cli(["run", "fail", "--env", "development", "-p", "code=3"], cwd=app, env=cli_env)
    assert failed.exit_code == 3
    assert run_cli(["plan", "hello", "--env", "development"], cwd=app, env=cli_env).exit_code == 0
    jsonl = run_cli(["audit", "export"], cwd=app, env=cli_env).stdout.splitlines()
    exported = run_cli(["audit", "export", "--format", "ocsf"], cwd=app, env=cli_env)
    assert exported.exit_code == 0, exported.stderr
    events = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(events) == len(jsonl) + 1  # the first export is itself an audit event
    for event in events:
        check_event(event)
    by_kind = {e["unmapped"]["oneoff"]["kind"]: e for e in events}
    assert by_kind["run.started"]["class_uid"] == 1007
    assert by_kind["run.started"]["activity_id"] == 1
    finished = [e for e in events if e["unmapped"]["oneoff"]["kind"] == "run.finished"]
    assert [(e["exit_code"], e["status_id"]) for e in finished] == [(0, 1), (3, 2)]
    assert finished[0]["process"]["name"] == "hello"
    planned = by_kind["run.planned"]
    assert (planned["class_uid"], planned["activity_id"]) == (6003, 2)
    assert planned["api"]["operation"] == "run.planned"
    assert {"type": "task", "name": "hello"} in planned["resources"]
    for event, line in zip(events, jsonl, strict=False):
        original = json.loads(line)
        assert event["metadata"]["uid"] == str(original["seq"])
        assert event["unmapped"]["oneoff"]["hash"] == original["hash"]
