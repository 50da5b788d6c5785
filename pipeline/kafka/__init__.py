"""Everything that talks to Kafka: client settings, the ledger topic's I/O, the transaction
builder (records in, decisions out) and the committer loop that sends and commits."""
