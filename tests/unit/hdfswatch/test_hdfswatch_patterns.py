"""Which paths a source pattern watches."""

from __future__ import annotations

import pytest

from hdfswatch.errors import ConfigError
from hdfswatch.patterns import PathMatcher


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("/data/clicks/**", "/data/clicks/a.parquet", True),
    ("/data/clicks/**", "/data/clicks/x/y/z/a.parquet", True),
    ("/data/clicks/**", "/data/clicks", False),
    ("/data/clicks/**", "/data/clicksX/a.parquet", False),
    ("/data/t/*.parquet", "/data/t/part-0.parquet", True),
    ("/data/t/*.parquet", "/data/t/part-0.avro", False),
    ("/data/t/*.parquet", "/data/t/sub/part-0.parquet", False),
    ("/data/t/dt=*/*", "/data/t/dt=2024-01-01/part-0", True),
    ("/data/t/dt=*/*", "/data/t/hour=1/part-0", False),
    ("/data/t/dt=*/*", "/data/t/dt=2024-01-01/h=1/part-0", False),
    # A directory: its files and Hive-style partitions below it, at any depth.
    ("/data/t", "/data/t/part-0.parquet", True),
    ("/data/t", "/data/t/dt=2024-01-01/part-0.parquet", True),
    ("/data/t", "/data/t/dt=2024-01-01/hour=03/part-0.parquet", True),
    ("/data/t", "/data/t/archive/part-0.parquet", False),
    ("/data/t/", "/data/t/part-0.parquet", True),
    # Hidden, temporary and in-progress names are never ready.
    ("/data/t/**", "/data/t/_SUCCESS", False),
    ("/data/t/**", "/data/t/.part-0.parquet.crc", False),
    ("/data/t/**", "/data/t/x.parquet._COPYING_", False),
    ("/data/t/**", "/data/t/_temporary/0/task/part-0.parquet", False),
    ("/data/t/**", "/data/t/.hive-staging/part-0", False),
    ("/data/t", "/data/t/_temporary/0/dt=1/part-0", False),
    ("/data/t/*", "/data/t/_x", False),
    # ...unless the pattern names them itself.
    ("/data/_landing/**", "/data/_landing/a.avro", True),
    ("/data/t/_*", "/data/t/_manifest", True),
    ("/data/_temporary/**", "/data/_temporary/a", False),
    # Globs within a segment.
    ("/data/{a,b}/*.avro", "/data/b/x.avro", True),
    ("/data/{a,b}/*.avro", "/data/c/x.avro", False),
    ("/data/t/part-?.parquet", "/data/t/part-7.parquet", True),
    ("/data/t/part-[0-3].parquet", "/data/t/part-4.parquet", False),
    ("/data/t/part-[!0-3].parquet", "/data/t/part-4.parquet", True),
    ("/data/**/events/*.avro", "/data/a/b/events/x.avro", True),
    ("/data/**/events/*.avro", "/data/events/x.avro", True),
    ("/**", "/anything/at/all", True),
])
def test_matches(pattern, path, expected):
    assert PathMatcher([pattern]).matches(path) is expected


def test_which_names_the_first_matching_pattern():
    m = PathMatcher(["/data/a/**", "/data/**"])
    assert m.which("/data/a/x") == "/data/a/**"
    assert m.which("/data/b/x") == "/data/**"
    assert m.which("/other/x") is None


@pytest.mark.parametrize(("pattern", "directory", "expected"), [
    ("/data/t/dt=*/*", "/data", True),
    ("/data/t/dt=*/*", "/data/t", True),
    ("/data/t/dt=*/*", "/data/t/dt=1", True),
    ("/data/t/dt=*/*", "/data/t/other", False),
    ("/data/t/dt=*/*", "/data/t/_temporary", False),
    ("/data/t", "/data/t/dt=1/h=2", True),
    ("/data/t", "/data/t/archive", False),
    ("/data/t/**", "/data/t/.staging", False),
    ("/data/t/**", "/elsewhere", False),
])
def test_could_contain_prunes_listings_and_directory_renames(pattern, directory, expected):
    assert PathMatcher([pattern]).could_contain(directory) is expected


def test_roots_are_literal_prefixes_without_nesting():
    m = PathMatcher(["/data/t/dt=*/*", "/data/t/x/*.avro", "/data/u", "/logs/**/*.avro"])
    assert sorted(m.roots()) == ["/data/t", "/data/u", "/logs"]


@pytest.mark.parametrize("bad", ["relative/path", "/data/../etc", "/data/{a,b"])
def test_bad_patterns_are_config_errors(bad):
    with pytest.raises(ConfigError):
        PathMatcher([bad])
