"""pipeline: from ready files to Kafka records.

Source registry, Parquet/Avro readers, record encoders, the transactional producer and its
offset ledger, the worker pool, the daemon, its HTTP surface and the command line.
"""

__version__ = "0.1.0"
