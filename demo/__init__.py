"""`hdfs2kafka demo`: the product working against the local dev stack, live.

It writes sample files into HDFS, runs the daemon on them as a subprocess, keeps writing while
it runs, shows the daemon's progress and a sample of the rows arriving in Kafka, and at the end
checks that every row written arrived exactly once. One module per job:

- `sample_data`: the Parquet and Avro sample files (shared with the integration tests and
  `bench/`);
- `writer`: writes them into HDFS as `hdfs dfs -put` does, in a background thread;
- `consume`: a read_committed consumer of the demo's topics;
- `check`: counts every row by id and says what is missing, duplicated or unexpected;
- `screen`: the live view (a block redrawn on a terminal, plain lines otherwise);
- `supervise`: the daemon as a subprocess, stopped in order;
- `run`: the command (`NAME`, `HELP`, `add_arguments`, `run`) and the demo's life.

It is not part of the daemon's package (`pipeline`); `pipeline.cli` dispatches to `demo.run`.
"""
