"""Kafka plumbing for the twin: local broker management and stream processing."""
