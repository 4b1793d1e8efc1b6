"""``virsh dommemstat`` / ``virsh domstats --balloon`` recordings → the twin's inputs."""

from __future__ import annotations

from twin.sources import SourceProblem, ingest
from twin.sources.errors import Problems
from twin.sources.virsh import parse_virsh, read_virsh

from .helpers import DATA, replays, types

T0 = 1_767_225_600_000


def test_one_dommemstat_output_is_one_sample_of_the_named_domain():
    problems: list[SourceProblem] = []
    events = list(read_virsh(DATA / "virsh_dommemstat_web01.txt", domain="web-01", problems=problems))
    assert problems == []
    assert types(events) == ["host.joined", "vm.started", "guest.status"]
    assert events[0].at_ms == 1_767_225_598_000  # no '@' line, no at_ms: last_update
    assert events[1].settings.startup_mib == events[1].settings.maximum_mib == 4096  # actual
    status = events[2]
    assert status.committed_mib == (4030524 - 3332968) // 1024  # available − usable
    assert status.available_mib == 3332968 // 1024
    replays(events)
    at = list(read_virsh(DATA / "virsh_dommemstat_web01.txt", domain="web-01", at_ms=T0))
    assert at[0].at_ms == T0


def test_parse_reads_domstats_and_dommemstat_forms_alike():
    problems = Problems("t", [])
    samples = parse_virsh((DATA / "virsh_domstats.log").read_text(), problems)
    assert [(line, at) for line, at, _ in samples] == [(1, T0), (39, T0 + 5000), (77, T0 + 10000),
                                                        (115, T0 + 15000)]
    first = {d.domain: d.stats for d in samples[0][2]}
    assert set(first) == {"web-01", "db-01", "legacy"}
    assert first["web-01"]["actual"] == first["web-01"]["maximum"] == 4194304
    assert first["web-01"]["last_update"] == 1767225598
    assert first["legacy"] == {"actual": 2097152, "maximum": 2097152, "rss": 1410172}
    assert problems.into == []


def test_a_domstats_recording_follows_balloons_and_domains_coming_and_going():
    problems: list[SourceProblem] = []
    events = list(ingest("virsh", DATA / "virsh_domstats.log", problems=problems, host="kvm01"))
    assert [(p.line, p.reason) for p in problems] == [
        (34, ("domain 'legacy' has no guest statistics ('available'): it reports nothing; turn them on "
              "with virsh dommemstat --period"))]
    assert events[0].total_mib == 4096 + 8192 + 2048 + 2048  # Σ Startup + reserve
    started = {e.vm: e.settings for e in events if e.type == "vm.started"}
    assert set(started) == {"web-01", "db-01", "legacy"}
    web = [e for e in events if e.type == "guest.status" and e.vm == "web-01"]
    # From the third sample the balloon holds 512 MiB of web-01: a Hyper-V guest counts them as committed.
    used = [(4194304 - 163780 - (3332968 - 100000 * k)) // 1024 for k in range(2)]
    assert [e.committed_mib for e in web[:2]] == used
    assert web[2].committed_mib == (3670016 - 163780 - (3332968 - 200000 - 524288)) // 1024 + 512
    assert [e.at_ms for e in events if e.type == "vm.stopped"] == [T0 + 15000]
    assert not [e for e in events if e.type == "guest.status" and e.vm == "legacy"]
    state = replays(events).twin.hosts["kvm01"]
    assert sorted(state.vms.names) == ["legacy", "web-01"]


def test_without_usable_the_demand_leaves_out_free_memory_and_caches():
    events = list(read_virsh(DATA / "virsh_loop.log"))
    db = [e for e in events if e.type == "guest.status" and e.vm == "db-01"]
    assert db[0].committed_mib == (8224768 - 1048576 - 2097152) // 1024
    assert db[0].available_mib == 1048576 // 1024  # unused
    replays(events)


def test_bad_lines_are_reported_and_the_rest_ingested():
    problems: list[SourceProblem] = []
    events = list(read_virsh(DATA / "virsh_bad.log", problems=problems))
    assert [(p.line, p.reason) for p in problems] == [
        (2, "statistics before any 'Domain:' line and no domain named: ignored"),
        (6, "bad number 'lots' for usable: ignored"),
        (7, "unknown statistic 'balloon_size': ignored"),
        (8, "not a dommemstat line: \"error: failed to get domain 'ghost'\""),
        (9, "domain 'web-01' twice in one sample: the later one ignored"),
        (11, "domain 'nosize' has no 'actual' size: skipped"),
        (13, "time goes backwards (@1767225595000): sample skipped"),
    ]
    assert [e.at_ms - T0 for e in events if e.type == "guest.status"] == [0, 5000]
    replays(events)
