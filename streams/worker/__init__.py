"""The worker's hot path: from consumed records to one Kafka transaction per partition and batch.

``app`` (the Faust app and the committer), ``processor`` (decode and fold one host's inputs),
``ordering`` (event-time merge of a partition's queues), ``snapshots`` (loading a partition's hosts
from the compacted snapshot topic) and ``transactions`` (the per-partition transactional producer).
Everything a record touches between the consumer and the commit lives here; Kafka set-up is
``streams.kafka``'s, metrics are ``streams.ops``'.
"""
