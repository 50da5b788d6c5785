"""`python -m demo`: the same as `hdfs2kafka demo`."""

import sys

from pipeline.cli import main

sys.exit(main(["demo", *sys.argv[1:]]))
