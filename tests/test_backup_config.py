"""backup_verify checks the configuration and state in backup.json the way the server checks a
restore request, and stream_restore refuses a configuration the server would refuse before it
deletes anything.

Every damaged configuration below is also sent to the real server as a restore request, to
show that the server refuses it too: natsop's rules are the server's, not stricter ones.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from natsop import EmbeddedServer, Toolkit
from natsop.errors import NatsopError
from natsop.ops.backup import AccountRestoreResult, BackupVerifyResult
from natsop.ops.backup import StreamRestoreResult as Restored
from tests.backup_support import api, connect, fill, make_stream, stream_state

NS = 1_000_000_000

# label: (changes to the config, the sentence natsop reports). A value of None removes the field.
DAMAGED: dict[str, tuple[dict[str, Any], str]] = {
    "subjects_not_a_list": ({"subjects": "notalist"}, "config.subjects is a string ('notalist'); it must be a list"),
    "retention_unknown": ({"retention": "bogus"},
                          "config.retention is 'bogus'; the server accepts 'limits', 'interest', 'workqueue'"),
    "max_age_text": ({"max_age": "ten"}, "config.max_age is a string ('ten'); it must be a whole number of "
                                         "nanoseconds"),
    "storage_unknown": ({"storage": "disk"}, "config.storage is 'disk'; the server accepts 'file', 'memory'"),
    "storage_capitalised": ({"storage": "File"}, "config.storage is 'File'"),
    "discard_unknown": ({"discard": "sometimes"}, "config.discard is 'sometimes'"),
    "compression_unknown": ({"compression": "zip"}, "config.compression is 'zip'; the server accepts 'none', 's2'"),
    "retention_null": ({"retention": None}, "config.retention is null"),
    "limit_fractional": ({"max_msgs": 1.5}, "config.max_msgs is a fractional number (1.5)"),
    "limit_boolean": ({"max_bytes": True}, "config.max_bytes is a boolean (True)"),
    "limit_too_big": ({"max_msg_size": 1 << 31}, "config.max_msg_size is 2147483648, outside the range"),
    "max_age_negative": ({"max_age": -NS}, "config.max_age is -1000000000; a duration (nanoseconds) cannot be "
                                           "negative"),
    "max_age_too_short": ({"max_age": 5}, "config.max_age is 5 ns; the server needs 0 or at least 100 ms"),
    "window_longer_than_age": ({"max_age": NS, "duplicate_window": 10 * NS},
                               "config.duplicate_window (10000000000 ns) is longer than config.max_age"),
    "replicas_too_many": ({"num_replicas": 9}, "config.num_replicas is 9; the server accepts 1 to 5"),
    "replicas_negative": ({"num_replicas": -1}, "config.num_replicas is -1"),
    "first_seq_negative": ({"first_seq": -1}, "config.first_seq is -1, outside the range"),
    "subject_invalid": ({"subjects": ["a..b"]}, "config.subjects[0]: subject 'a..b' has an empty token"),
    "subject_not_text": ({"subjects": [5]}, "config.subjects[0] is a number (5); it must be a string"),
    "subjects_overlap": ({"subjects": ["x.*", "x.a"]}, "config.subjects[1] 'x.a' overlaps 'x.*'"),
    "subject_twice": ({"subjects": ["x.a", "x.a"]}, "config.subjects[1] 'x.a' appears twice"),
    "subject_in_api": ({"subjects": ["$JS.API.>"]}, "overlaps the JetStream or system API"),
    "flag_text": ({"deny_purge": "yes"}, "config.deny_purge is a string ('yes'); it must be true or false"),
    "rollup_without_purge": ({"deny_purge": True, "allow_rollup_hdrs": True},
                             "roll-ups need the purge permission"),
    "per_subject_discard_alone": ({"discard_new_per_subject": True, "discard": "old"},
                                  "config.discard_new_per_subject is true but config.discard is not 'new'"),
    "metadata_list": ({"metadata": ["x"]}, "config.metadata is a list (['x']); it must be an object"),
    "metadata_number": ({"metadata": {"a": 1}}, "config.metadata['a'] is a number (1); it must be a string"),
    "placement_text": ({"placement": "here"}, "config.placement is a string ('here'); it must be an object"),
    "tags_text": ({"placement": {"tags": "x"}}, "config.placement.tags is a string ('x'); it must be a list"),
    "sources_object": ({"sources": {"name": "x"}}, "config.sources is an object"),
    "source_name": ({"sources": [{"name": "x y"}]}, "config.sources[0].name: stream name 'x y' contains ' '"),
    "mirror_and_subjects": ({"mirror": {"name": "ORIGIN"}}, "config has both a mirror and subjects"),
    "description_too_long": ({"description": "d" * 5000}, "config.description is 5000 characters"),
}


def _damage(good: Path, target: Path, config_changes: dict[str, Any] | None = None,
            state_changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of the backup in `good` with backup.json changed; returns the new backup.json."""
    shutil.copytree(good, target)
    doc: dict[str, Any] = json.loads((good / "backup.json").read_text())
    for part, changes in (("config", config_changes), ("state", state_changes)):
        for key, value in (changes or {}).items():
            doc[part][key] = value
    (target / "backup.json").write_text(json.dumps(doc, indent=2))
    return doc


async def _good_backup(server: EmbeddedServer, toolkit: Toolkit, name: str, tmp_path: Path) -> Path:
    async with connect(server) as nc:
        await make_stream(nc, name, max_age=3600 * NS, allow_msg_ttl=True, subject_delete_marker_ttl=2 * NS,
                          metadata={"owner": "ops"}, compression="s2")
        await fill(nc, name, 40)
    await toolkit.call("stream_backup", stream=name, directory="good")
    return tmp_path / "good"


async def test_backup_verify_reports_every_problem_of_a_damaged_config(
        server: EmbeddedServer, toolkit: Toolkit, uniq: str, tmp_path: Path) -> None:
    good = await _good_backup(server, toolkit, uniq, tmp_path)
    checked = await toolkit.call("backup_verify", directory="good")
    assert isinstance(checked, BackupVerifyResult)
    assert checked.ok and checked.backups[0].problems == [], checked.backups[0].problems
    assert not [n for n in checked.backups[0].notes if "does not know" in n], checked.backups[0].notes

    # The audit's case: all three problems at once, each named.
    _damage(good, tmp_path / "all" / "three", {"subjects": "notalist", "retention": "bogus", "max_age": "ten"})
    three = await toolkit.call("backup_verify", directory="all/three")
    assert isinstance(three, BackupVerifyResult) and not three.ok
    problems = three.backups[0].problems
    assert len(problems) == 3, problems
    for expected in ("config.subjects is a string", "config.retention is 'bogus'", "config.max_age is a string"):
        assert any(expected in p for p in problems), (expected, problems)
    assert three.backups[0].state is not None  # the state is sound, and still shown

    root = tmp_path / "damaged"
    for label, (changes, _) in DAMAGED.items():
        _damage(good, root / label, changes)
    verified = await toolkit.call("backup_verify", directory="damaged", limit=len(DAMAGED))
    assert isinstance(verified, BackupVerifyResult)
    assert verified.total == len(DAMAGED) and not verified.ok
    by_label = {Path(c.directory).name: c for c in verified.backups}
    for label, (_, expected) in DAMAGED.items():
        check = by_label[label]
        assert not check.ok, label
        assert any(expected in p for p in check.problems), (label, check.problems)
        # Nothing else in the backup is wrong: the archive still decodes in full.
        assert check.complete and check.format == "NATSARC1", (label, check.problems)

    # The real server refuses every one of them at the restore request, and only for what natsop names.
    async with connect(server) as nc:
        await api(nc, f"STREAM.DELETE.{uniq}")
        for label in DAMAGED:
            doc = json.loads((root / label / "backup.json").read_text())
            answer = await api(nc, f"STREAM.RESTORE.{uniq}", doc)
            assert "error" in answer, (label, answer)
            assert answer["error"]["err_code"] != 10058, (label, answer)  # not "stream name already in use"
        # The control: the undamaged backup.json is accepted (the upload is then ended at once).
        accepted = await api(nc, f"STREAM.RESTORE.{uniq}", json.loads((good / "backup.json").read_text()))
        assert "deliver_subject" in accepted, accepted
        await nc.request(accepted["deliver_subject"], b"", timeout=10)
        await api(nc, f"STREAM.DELETE.{uniq}")
        assert await stream_state(nc, uniq) is None


async def test_a_backup_with_a_config_the_server_refuses_never_replaces_a_stream(
        server: EmbeddedServer, toolkit: Toolkit, uniq: str, tmp_path: Path) -> None:
    good = await _good_backup(server, toolkit, uniq, tmp_path)  # the stream stays, with 40 messages
    _damage(good, tmp_path / "bad", {"retention": "bogus"})
    for args in ({}, {"confirm": uniq}, {"check_archive": False, "confirm": uniq}):
        with pytest.raises(NatsopError) as refused:
            await toolkit.call("stream_restore", directory="bad", **args)
        err = refused.value
        assert err.code == "backup_config_invalid", (args, err.code, err.message)
        assert "config.retention is 'bogus'" in err.message and "nothing was changed" in err.message
        assert err.hint and "backup_verify" in err.hint
    # In an account restore, that stream fails with the same reason and the others go on.
    (tmp_path / "acct").mkdir()
    shutil.move(tmp_path / "bad", tmp_path / "acct" / uniq)
    dry = await toolkit.call("account_restore", directory="acct")
    assert isinstance(dry, AccountRestoreResult) and dry.confirm_with
    done = await toolkit.call("account_restore", directory="acct", confirm=dry.confirm_with)
    assert isinstance(done, AccountRestoreResult)
    assert done.failed == 1 and done.restored == 0
    assert (done.streams[0].reason or "").startswith("backup_config_invalid: "), done.streams[0].reason
    async with connect(server) as nc:
        assert (await stream_state(nc, uniq) or {}).get("messages") == 40

        # A corrected configuration given with config_file restores it.
        cfg = json.loads((good / "backup.json").read_text())["config"]
        (tmp_path / "fixed.json").write_text(json.dumps(cfg))
        fixed = await toolkit.call("stream_restore", directory=f"acct/{uniq}", config_file="fixed.json",
                                   confirm=uniq)
        assert isinstance(fixed, Restored) and fixed.verified, fixed.differences
        await api(nc, f"STREAM.DELETE.{uniq}")


async def test_unknown_fields_and_odd_values_the_server_accepts_are_notes(
        server: EmbeddedServer, toolkit: Toolkit, uniq: str, tmp_path: Path) -> None:
    good = await _good_backup(server, toolkit, uniq, tmp_path)
    _damage(good, tmp_path / "newer", {"allow_future_thing": True})
    _damage(good, tmp_path / "odd", {"max_msgs": -5, "discard": "NEW"})
    _damage(good, tmp_path / "odd_state", state_changes={"messages": 1000})
    _damage(good, tmp_path / "bad_state", state_changes={"messages": -1, "first_ts": 5})

    newer = await toolkit.call("backup_verify", directory="newer")
    assert isinstance(newer, BackupVerifyResult)
    assert newer.ok and newer.backups[0].problems == [], newer.backups[0].problems
    assert any("config.allow_future_thing is a field natsop does not know; a server that does not know it refuses "
               "the restore" in n for n in newer.backups[0].notes), newer.backups[0].notes

    odd = await toolkit.call("backup_verify", directory="odd")
    assert isinstance(odd, BackupVerifyResult)
    assert odd.ok and odd.backups[0].problems == [], odd.backups[0].problems
    assert any("config.max_msgs is -5" in n for n in odd.backups[0].notes), odd.backups[0].notes

    odd_state = await toolkit.call("backup_verify", directory="odd_state")
    assert isinstance(odd_state, BackupVerifyResult) and odd_state.ok, odd_state.backups[0].problems
    assert any("records 1000 messages, more than the sequences 1..40 hold" in n for n in odd_state.backups[0].notes)

    bad = await toolkit.call("backup_verify", directory="bad_state")
    assert isinstance(bad, BackupVerifyResult) and not bad.ok
    assert bad.backups[0].state is None
    assert any("state.messages is -1, outside the range" in p for p in bad.backups[0].problems)
    assert any("state.first_ts is a number (5); it must be a string" in p for p in bad.backups[0].problems)

    async with connect(server) as nc:
        await api(nc, f"STREAM.DELETE.{uniq}")
        doc = json.loads((tmp_path / "bad_state" / "backup.json").read_text())
        assert "error" in await api(nc, f"STREAM.RESTORE.{uniq}", doc)
        # What the notes say holds: this server (2.15, strict) refuses the unknown field...
        with pytest.raises(NatsopError) as unknown:
            await toolkit.call("stream_restore", directory="newer")
        assert "unknown field" in unknown.value.message and "allow_future_thing" in unknown.value.message, \
            unknown.value.message
        assert await stream_state(nc, uniq) is None
        # ...and takes the values it treats as their neighbours: the restore goes ahead and matches.
        restored = await toolkit.call("stream_restore", directory="odd")
        assert isinstance(restored, Restored) and restored.verified, restored.differences
        await api(nc, f"STREAM.DELETE.{uniq}")
