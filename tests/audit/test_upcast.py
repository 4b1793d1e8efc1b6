"""Events of older schema versions are upgraded on reading; newer ones are refused clearly."""

import json

import pytest

from twin.errors import Rejected
from twin.events import GuestStatusReported, MemorySettings, VmStarted
from twin.log import decode, encode, replay
from twin.upcast import MIB, UPCASTERS, upcast

V0_STARTED = {"v": 0, "type": "vm.started", "at_ms": 5, "host": "h", "vm": "a",
              "settings": {"startup_bytes": 1024 * MIB, "minimum_bytes": 512 * MIB, "maximum_bytes": 4096 * MIB}}


def test_v0_bytes_become_v1_mib():
    event = decode(json.dumps(V0_STARTED))
    assert event == VmStarted(at_ms=5, host="h", vm="a",
                              settings=MemorySettings(startup_mib=1024, minimum_mib=512, maximum_mib=4096))
    report = decode(json.dumps({"v": 0, "type": "guest.status", "at_ms": 6, "host": "h", "vm": "a",
                                "committed_bytes": 2000 * MIB + 1, "available_bytes": 0}))
    assert report == GuestStatusReported(at_ms=6, host="h", vm="a", committed_mib=2001, available_mib=0)


def test_a_v0_log_replays_like_its_v1_form():
    v0 = [json.dumps({"v": 0, "type": "host.joined", "at_ms": 0, "host": "h", "total_bytes": 8192 * MIB,
                      "reserve_bytes": 1024 * MIB}), json.dumps(V0_STARTED)]
    v1 = [encode(decode(line)) for line in v0]
    assert all('"v":1' in line for line in v1)
    assert replay(v0).twin.hosts["h"].to_dict() == replay(v1).twin.hosts["h"].to_dict()


def test_every_older_version_has_an_upcaster():
    from twin.events import SCHEMA_VERSION

    assert set(UPCASTERS) == set(range(SCHEMA_VERSION))


@pytest.mark.parametrize("version, message", [(2, "newer dmtwin"), (-1, "whole number"), ("1", "whole number")])
def test_unknown_versions_are_refused(version, message):
    with pytest.raises(Rejected, match=message):
        upcast({"v": version})
    with pytest.raises(Rejected, match=message) as refused:
        decode(json.dumps({**V0_STARTED, "v": version}), position=3)
    assert refused.value.position == 3 and refused.value.field == "v"
