"""The docs that list what the code defines stay in step with it."""

from pathlib import Path

from streams.ops.metrics import metrics_markdown
from streams.kafka.topics import Topics

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_metrics_doc_lists_every_metric():
    assert metrics_markdown() in (DOCS / "metrics.md").read_text(encoding="utf-8")


def test_topics_doc_names_every_topic():
    text = (DOCS / "topics.md").read_text(encoding="utf-8")
    topics = Topics()
    for name in (topics.telemetry, topics.host_events, topics.balloon_commands, topics.addition_commands,
                 topics.event_log, topics.dead_letters, topics.checkpoints):
        assert f"`{name}`" in text


def test_security_doc_names_every_kafka_setting_and_flag():
    from streams.kafka.security import OPTIONS, PASSWORD_ENV, PROTOCOLS, MECHANISMS

    text = (DOCS / "security.md").read_text(encoding="utf-8")
    for variable, flag, _ in OPTIONS.values():
        assert f"`{variable}`" in text and f"`{flag}`" in text
    assert f"`{PASSWORD_ENV}`" in text
    assert all(f"`{name}`" in text for name in PROTOCOLS + MECHANISMS)
