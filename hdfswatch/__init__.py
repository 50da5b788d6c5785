"""hdfswatch: everything that speaks to HDFS.

The Hadoop IPC client (no JVM), the NameNode edit-stream tailer, the file detector that turns
raw edit events into "file ready" events, listings, and ranged reads of file contents.
"""
