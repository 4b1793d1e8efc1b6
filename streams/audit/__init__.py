"""Audit tools around the event log: keys, trails, export, import and parallel verification.

``keys`` (Ed25519 key files), ``trail`` (writing a chained, signed log with its rejects and
checkpoints files), ``logtool`` (reading lines from files and topics), ``transfer`` (``dmtwin log
export`` and ``log import``) and ``parallel`` (``verify_parallel``, verification spread over
processes). The checks themselves are ``twin.audit``'s and ``twin.signing``'s.
"""
