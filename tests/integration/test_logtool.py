"""dmtwin log export/import on a real broker: topic → file → topic → file, nothing lost or reordered."""

from __future__ import annotations

import gzip
import json
import uuid
from collections import defaultdict

import pytest

from streams.audit.logtool import open_lines, read_topic
from streams.audit.transfer import ExportFilter, _ensure_topic, export_log, import_log
from streams.cli import main
from tests.audit.logs import chained, fleet
from twin.audit import verify

from .pipeline import send_raw

pytestmark = pytest.mark.integration


def topic_name() -> str:
    return f"t{uuid.uuid4().hex[:8]}.event-log"


def by_host(lines: list[bytes]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for line in lines:
        out[json.loads(line)["host"]].append(line)
    return dict(out)


@pytest.fixture(scope="module")
def source(kafka_bootstrap):
    """A topic holding a chained log of three hosts, keyed by host, on four partitions."""
    topic = topic_name()
    lines = [line.encode() for line in chained(fleet(duration_s=60, hosts=tuple(f"h{i}" for i in range(8))))]
    _ensure_topic(kafka_bootstrap, topic, 4)
    send_raw(kafka_bootstrap, topic, [(json.loads(line)["host"].encode(), line) for line in lines])
    return topic, lines


def test_topic_to_file_to_topic_to_file_is_identical_even_when_interrupted(kafka_bootstrap, source, tmp_path):
    topic, lines = source
    first = tmp_path / "first.jsonl.gz"
    # An export stopped twice and resumed: the sidecar says where each partition was.
    export_log(kafka_bootstrap, topic, first, max_messages=500, progress=None)
    with open(first, "ab") as torn:  # a crash in the middle of the next batch leaves half a member
        torn.write(gzip.compress(b'{"v":1,"at_ms":0,"host":"h1"')[:20])
    export_log(kafka_bootstrap, topic, first, max_messages=400, progress=None)
    stats = export_log(kafka_bootstrap, topic, first, progress=None)
    assert stats.resumed
    exported = gzip.decompress(first.read_bytes()).splitlines(keepends=True)
    assert len(exported) == len(lines)
    assert by_host([line.rstrip(b"\n") for line in exported]) == by_host(lines), "each host's order is kept"

    copy = topic_name()
    import_log(first, kafka_bootstrap, copy, max_messages=789, progress=None)  # interrupted
    done = import_log(first, kafka_bootstrap, copy, progress=None)  # resumed from the sidecar
    assert done.skipped == 789 and done.sent == len(lines) - 789
    second = tmp_path / "second.jsonl"
    export_log(kafka_bootstrap, copy, second, progress=None)
    assert second.read_bytes() == gzip.decompress(first.read_bytes()), "topic → file → topic → file"
    assert verify(open_lines(str(second))).clean
    assert verify(open_lines(f"kafka://{kafka_bootstrap}", copy)).clean


def test_an_import_that_died_after_sending_does_not_send_twice(kafka_bootstrap, source, tmp_path):
    _, lines = source
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    target = topic_name()
    import_log(path, kafka_bootstrap, target, max_messages=500, progress=None)
    # The process sent 300 more lines, then died before it could record them.
    send_raw(kafka_bootstrap, target, [(json.loads(line)["host"].encode(), line) for line in lines[500:800]])
    stats = import_log(path, kafka_bootstrap, target, progress=None)
    assert stats.already_there == 300 and stats.sent == len(lines) - 800
    copied = [value for _, _, _, value in read_topic(kafka_bootstrap, target)]
    assert by_host(copied) == by_host(lines)


def test_export_filters_by_host_time_and_offsets(kafka_bootstrap, source, tmp_path):
    topic, lines = source
    since, until = 1_767_225_600_000 + 20_000, 1_767_225_600_000 + 40_000
    path = tmp_path / "part.jsonl"
    export_log(kafka_bootstrap, topic, path, ExportFilter(since_ms=since, until_ms=until, hosts=("h2",)),
               progress=None)
    expected = [line for line in lines if b'"host":"h2"' in line and since <= json.loads(line)["at_ms"] <= until]
    assert path.read_bytes().splitlines() == expected
    window = tmp_path / "window.jsonl"
    export_log(kafka_bootstrap, topic, window, ExportFilter(first_offset=10, end_offset=20), progress=None)
    sizes: dict[int, int] = defaultdict(int)
    for partition, _, _, _ in read_topic(kafka_bootstrap, topic):
        sizes[partition] += 1
    assert len(window.read_bytes().splitlines()) == sum(max(0, min(n, 20) - 10) for n in sizes.values()) > 0


def test_the_cli_exports_imports_and_verifies(kafka_bootstrap, source, tmp_path, capsys):
    topic, _ = source
    path = tmp_path / "cli.jsonl"
    assert main(["log", "export", str(path), "--from", f"kafka://{kafka_bootstrap}", "--topic", topic,
                 "--until", "2026-01-01T00:00:30Z"]) == 0
    kept = path.read_bytes().splitlines()
    assert kept and all(json.loads(line)["at_ms"] <= 1_767_225_630_000 for line in kept)
    assert main(["log", "export", str(path), "--from", f"kafka://{kafka_bootstrap}", "--topic", topic,
                 "--since", "5"]) == 2, "another filter on the same file needs --fresh"
    copy = topic_name()
    assert main(["log", "import", str(path), "--to", f"kafka://{kafka_bootstrap}", "--topic", copy]) == 0
    assert main(["audit", "verify", f"kafka://{kafka_bootstrap}", "--topic", copy]) == 3, "chained, not signed"
    assert main(["audit", "verify", f"kafka://{kafka_bootstrap}", "--topic", copy, "--accept-unsigned"]) == 0
    assert "UNSIGNED (accepted: --accept-unsigned): chain intact" in capsys.readouterr().out


def test_a_signed_import_exports_as_a_pair_that_verifies_with_the_public_key(kafka_bootstrap, source, tmp_path,
                                                                             capsys):
    _, lines = source
    path, key = tmp_path / "signed.jsonl", tmp_path / "signer.key"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    assert main(["keys", "new", str(key)]) == 0
    log_topic, cp_topic = topic_name(), topic_name().replace("event-log", "checkpoints")
    broker = f"kafka://{kafka_bootstrap}"
    assert main(["log", "import", str(path), "--to", broker, "--topic", log_topic, "--key", str(key),
                 "--checkpoints-topic", cp_topic]) == 0
    assert "checkpoints signed by SHA256:" in capsys.readouterr().err
    out = tmp_path / "out.jsonl"
    assert main(["log", "export", str(out), "--from", broker, "--topic", log_topic, "--checkpoints",
                 "--checkpoints-topic", cp_topic]) == 0
    assert (tmp_path / "out.jsonl.checkpoints.jsonl").stat().st_size > 0
    capsys.readouterr()
    assert main(["audit", "verify", str(out), "--key", f"{key}.pub"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("OK: chain intact, signed by SHA256:")
    assert main(["log", "export", str(tmp_path / "part.jsonl"), "--from", broker, "--topic", log_topic,
                 "--checkpoints", "--since", "5"]) == 2, "a partial export cannot be checked against them"

    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(path.read_bytes().replace(b'"committed_mib":', b'"committed_mib":1', 1))
    assert main(["log", "import", str(broken), "--to", broker, "--topic", topic_name(), "--key", str(key),
                 "--checkpoints-topic", cp_topic]) == 2
    assert "not signing a log whose chain is broken" in capsys.readouterr().err
