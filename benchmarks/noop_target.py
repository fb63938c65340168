"""A singer-sdk target that does nothing: the baseline for the local throughput benchmark.

It reads, parses and batches records exactly like any singer-sdk target (the default
``BatchSink.process_record`` stages records in the batch context) and its ``process_batch``
throws the batch away. Run with ``validate_records: false`` for the fastest SDK baseline.

Usage::

    python benchmarks/noop_target.py --config '{"validate_records": false}' < profiles.singer
"""

from __future__ import annotations

from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.sinks import BatchSink


class NoopSink(BatchSink):
    """A batch sink whose batches go nowhere."""

    def process_batch(self, context: dict) -> None:
        """Drop the batch."""


class NoopTarget(Target):
    """Singer target that reads everything and writes nothing."""

    name = "target-noop"
    config_jsonschema = th.PropertiesList().to_dict()
    default_sink_class = NoopSink


if __name__ == "__main__":
    NoopTarget.cli()
