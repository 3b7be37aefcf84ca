"""The schedule table file: round trip, content hash, version, validation, job matching."""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from table_fixtures import profiles, small_table

from hiertrain_edge.errors import ConfigError
from hiertrain_edge.planning.table import JobIdentity, ScheduleTable, profile_hash


@pytest.fixture(scope="module")
def table():
    return small_table()


def _envelope(table):
    return msgpack.unpackb(table.to_bytes(), raw=False)


def test_round_trip_keeps_everything_and_the_hash(table, tmp_path):
    path = table.save(tmp_path / "t.htab")
    loaded = ScheduleTable.load(path)
    assert loaded == table
    assert loaded.to_bytes() == table.to_bytes()
    env = _envelope(table)
    assert env["format"] == "hiertrain-edge/schedule-table"
    assert env["version"] == 1
    assert env["sha256"] == hashlib.sha256(env["body"]).hexdigest() == table.content_hash


def test_file_is_compact(table):
    # 1723 slots x (2 + 4) bytes plus 4 schedules x 1723 x 2 bytes, plus the rest.
    assert 24_000 < len(table.to_bytes()) < 26_000


def test_building_twice_gives_the_same_bytes(table):
    assert small_table().to_bytes() == table.to_bytes()


def test_damaged_body_is_refused(table):
    env = _envelope(table)
    body = bytearray(env["body"])
    body[-10] ^= 0xFF
    env["body"] = bytes(body)
    with pytest.raises(
        ConfigError,
        match=r"^t: content hash mismatch \(file says [0-9a-f]{12}, "
        r"body hashes to [0-9a-f]{12}\); the table is damaged$",
    ):
        ScheduleTable.from_bytes(msgpack.packb(env, use_bin_type=True), "t")


def test_other_format_version_is_refused(table):
    env = _envelope(table)
    env["version"] = 2
    with pytest.raises(ConfigError) as err:
        ScheduleTable.from_bytes(msgpack.packb(env, use_bin_type=True), "t")
    assert str(err.value) == (
        "t: table format version 2 is not supported; this hiertrain-edge reads version 1; "
        "rebuild the table with this version"
    )


def test_garbage_is_refused():
    with pytest.raises(ConfigError, match=r"^t is not a schedule table: format None"):
        ScheduleTable.from_bytes(msgpack.packb({"x": 1}), "t")
    with pytest.raises(ConfigError, match=r"^t is not a msgpack schedule table"):
        ScheduleTable.from_bytes(b"\xc1\xc1", "t")


def test_consistent_hash_but_bad_content_is_refused(table):
    body = msgpack.unpackb(_envelope(table)["body"], raw=False)
    body["schedules"][0] = [[31, 6, 6]]  # no longer adds up to the batch size
    blob = msgpack.packb(body, use_bin_type=True)
    env = {
        "format": "hiertrain-edge/schedule-table",
        "version": 1,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "body": blob,
    }
    with pytest.raises(ConfigError) as err:
        ScheduleTable.from_bytes(msgpack.packb(env, use_bin_type=True), "t")
    assert str(err.value) == (
        "t: schedule 0 ([[31, 6, 6]]) is invalid: group sizes add up to 31, expected the "
        "batch size 32"
    )


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^cannot read schedule table '.*nope.htab': "):
        ScheduleTable.load(tmp_path / "nope.htab")


def test_matching_job_passes(table):
    job = JobIdentity("small_cnn", 6, 32, {t: profile_hash(p) for t, p in profiles().items()})
    assert table.matches(job)
    table.require_match(job)
    table.require_match(JobIdentity("small_cnn", 6, 32))  # profiles unknown to the board


def test_other_job_is_refused_naming_every_difference(table):
    job = JobIdentity("vgg11", 16, 64, {"device": "0" * 64})
    assert not table.matches(job)
    with pytest.raises(ConfigError) as err:
        table.require_match(job)
    assert str(err.value) == (
        f"schedule table {table.content_hash[:12]} does not match this job: it was built for "
        f"model 'small_cnn' (job: 'vgg11'); 6 units (job: 16); batch size 32 (job: 64); "
        f"device profile {table.profiles['device'][:12]} (job: 000000000000); rebuild it "
        "with `hiertrain-edge table build`"
    )
