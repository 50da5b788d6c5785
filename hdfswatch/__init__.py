"""hdfswatch: the NameNode side of HDFS.

The Hadoop IPC client (no JVM), the NameNode edit-stream tailer, the file detector that turns
raw edit events into "file ready" events, and listings. File contents are read by `hdfsread`.

Layers, from bytes up (each module needs only the one below it):

- `proto/`        Hadoop's protobuf messages (the subset used; public field numbers)
- `framing`       Hadoop IPC framing, sans-IO: requests to bytes, bytes to replies
- `sasl`          Hadoop IPC SASL with Kerberos, sans-IO: the negotiation, QOP, wrapping
- `connection`    one asyncio connection: handshake (SASL slot), concurrent calls, timeouts
- `kerberos`      the `gssapi` package behind `sasl`, and the authenticator connections run
- `namenode`      `NameNodeClient`: typed ClientProtocol calls, HA failover, retries
- `events`        the edit stream's seven event types and their decoding (sans-IO)
- `tailer`        `EditTailer`: event batches from a txid on, gaps made explicit
- `patterns`      `PathMatcher`: source globs, hidden and temporary names
- `detector`      `FileDetector`: events to `FileReady`
- `listing`       `ListingDetector`: `FileReady` by listing (non-superusers, reconciling)
- `hadoop_conf`   NameNode addresses and RPC security from `HADOOP_CONF_DIR`
- `errors`        one exception hierarchy under `HdfsWatchError`
"""
