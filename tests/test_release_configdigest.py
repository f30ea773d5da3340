"""Tests for keyed config digests: drift is visible, values are not."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oneoff._release.configdigest import ConfigSnapshot, config_digest, diff_config
from oneoff.errors import ReleaseError

KEY = b"k" * 32
ENV = {"DATABASE_URL": "postgres://u:hunter2@db/app", "DEBUG": "false", "WORKERS": "4"}


def test_snapshot_contains_no_values_only_macs_and_secret_flags() -> None:
    """The serialized snapshot never contains a value, and secret keys are flagged."""
    snap = config_digest(ENV, {"DATABASE_URL"}, KEY)
    text = json.dumps(snap.to_dict())
    assert "hunter2" not in text
    assert "false" not in text.replace('"secret": false', "")
    assert snap.values["DATABASE_URL"].secret is True
    assert snap.values["DEBUG"].secret is False


def test_diff_config_names_changed_added_removed_and_secret_flag() -> None:
    """Each differing variable is named once, sorted, with what happened to it."""
    old = config_digest(ENV, {"DATABASE_URL"}, KEY)
    new_env = {**ENV, "DATABASE_URL": "postgres://other", "NEW_FLAG": "1"}
    del new_env["WORKERS"]
    new = config_digest(new_env, {"DATABASE_URL", "DEBUG"}, KEY)
    assert diff_config(old, new) == [
        "DATABASE_URL (changed)",
        "DEBUG (now secret)",
        "NEW_FLAG (added)",
        "WORKERS (removed)",
    ]
    assert diff_config(old, config_digest(dict(reversed(ENV.items())), {"DATABASE_URL"}, KEY)) == []


def test_different_key_is_reported_instead_of_every_value_changing() -> None:
    """Snapshots made with different HMAC keys are reported as not comparable."""
    a = config_digest(ENV, (), KEY)
    b = config_digest(ENV, (), b"z" * 32)
    assert a.digest != b.digest
    assert diff_config(a, b) == ["config HMAC key differs: values cannot be compared"]


def test_name_value_boundary_is_unambiguous() -> None:
    """Moving characters between a name and its value changes the MAC."""
    a = config_digest({"AB": "C"}, (), KEY)
    b = config_digest({"A": "BC"}, (), KEY)
    assert a.values.get("AB") != b.values.get("A")
    assert a.digest != b.digest


@pytest.mark.parametrize(
    ("values", "key", "message"),
    [
        ({"A": "1"}, b"short", "at least 16 bytes"),
        ({"A\x00B": "1"}, KEY, "bad variable name"),
        ({"A=B": "1"}, KEY, "bad variable name"),
        ({"": "1"}, KEY, "bad variable name"),
    ],
)
def test_bad_key_or_name_is_refused(values: dict[str, str], key: bytes, message: str) -> None:
    """A short key or a name that could blur the name/value boundary raises ReleaseError."""
    with pytest.raises(ReleaseError, match=message):
        config_digest(values, (), key)


env_names = st.text(
    st.characters(codec="utf-8", exclude_characters="=\x00"), min_size=1, max_size=8
)
envs = st.dictionaries(env_names, st.text(max_size=20), max_size=6)


@given(envs, st.data())
def test_to_dict_from_dict_round_trips(values: dict[str, str], data: st.DataObject) -> None:
    """Any config snapshot survives to_dict -> JSON -> from_dict unchanged."""
    secret = data.draw(st.sets(st.sampled_from(sorted(values)))) if values else set()
    snap = config_digest(values, secret, KEY)
    assert ConfigSnapshot.from_dict(json.loads(json.dumps(snap.to_dict()))) == snap


@given(envs.filter(bool), st.data())
def test_any_single_value_change_alters_digest_and_is_named(
    values: dict[str, str], data: st.DataObject
) -> None:
    """Changing one value changes the overall digest and the diff names that variable."""
    name = data.draw(st.sampled_from(sorted(values)))
    new_value = data.draw(st.text(max_size=20).filter(lambda v: v != values[name]))
    old = config_digest(values, (), KEY)
    new = config_digest({**values, name: new_value}, (), KEY)
    assert old.digest != new.digest
    shown = name if name.isprintable() else name.encode("unicode_escape").decode("ascii")
    assert diff_config(old, new) == [f"{shown} (changed)"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(digest="0" * 64), "digest does not match"),
        (lambda d: d["values"]["DEBUG"].update(secret="no"), "boolean"),
        (lambda d: d["values"]["DEBUG"].update(hmac="00"), "hex digits"),
        (lambda d: d.update(format="x"), "unsupported format"),
    ],
)
def test_from_dict_rejects_tampered_or_malformed_input(mutate: object, message: str) -> None:
    """from_dict is strict: a wrong digest or malformed field raises ReleaseError."""
    data = config_digest(ENV, (), KEY).to_dict()
    mutate(data)  # type: ignore[operator]
    with pytest.raises(ReleaseError, match=message):
        ConfigSnapshot.from_dict(data)
