"""The compiled batch builder against aiokafka's own: same hashes, same CRC, same bytes.

Brokers reject a batch whose CRC or layout is off, and a key placed on another partition than
Kafka's default partitioner would choose breaks per-key order for consumers: so the batches are
read back with aiokafka's reader and compared byte for byte with aiokafka's builder.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from aiokafka import codec
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from aiokafka.producer.message_accumulator import MessageAccumulator, MessageBatch
from aiokafka.record.default_records import (
    DefaultRecordBatch,
    DefaultRecordBatchBuilder,
    _DefaultRecordBatchBuilderPy,
)
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.kafka import _batches
from pipeline.kafka.batches import HEADER_SIZE, PrebuiltBatch, build_batches

pytestmark = pytest.mark.unit

TS = 1_700_000_000_123
PRODUCER = {"producer_id": 4242, "producer_epoch": 7, "base_sequence": 1000}
INSTALLED = [name for name, has in [("gzip", codec.has_gzip), ("snappy", codec.has_snappy),
                                    ("lz4", codec.has_lz4), ("zstd", codec.has_zstd)] if has()]
# codecs whose output depends on the input alone (gzip writes the time into its header)
DETERMINISTIC = [name for name in INSTALLED if name != "gzip"]
CODEC_BITS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def kafka_index(key: bytes, partitions: int) -> int:
    return (aiokafka_murmur2(key) & 0x7FFFFFFF) % partitions


def rows(n: int, seed: int = 1, *, keyed: bool = True,
         headers: bool = True) -> tuple[list[bytes | None], list[bytes | None] | None,
                                        list[Any] | None]:
    """n rows of varied sizes, some keys and values None, headers with unicode keys."""
    rnd = random.Random(seed)
    values: list[bytes | None] = [None if rnd.random() < 0.05 else rnd.randbytes(rnd.choice([0, 3, 200, 900]))
                                  for _ in range(n)]
    keys = [None if rnd.random() < 0.2 else f"key-{rnd.randrange(10**6)}".encode()
            for _ in range(n)] if keyed else None
    shared = (("hdfs2kafka.path", b"/data/f\xc3\xa9.parquet"), ("pos", b"block:4"))
    hs = [shared if i % 3 == 0 else [("é-key", rnd.randbytes(5)), ("nul", None)] if i % 3 == 1
          else None for i in range(n)] if headers else None
    return values, keys, hs


def finished(buf: bytearray, count: int, *, attributes: int = 0, **producer: int) -> bytearray:
    state = {**PRODUCER, **producer}
    _batches.finish(buf, count, attributes=attributes, first_timestamp=TS, max_timestamp=TS,
                    **state)
    return buf


def aiokafka_batches(values: list[bytes | None], keys: list[bytes | None] | None,
                     headers: list[Any] | None, *, limit: int, compression: int = 0,
                     builder_class: Any = DefaultRecordBatchBuilder) -> list[bytes]:
    """The same rows through aiokafka's builder, a new batch whenever `append` refuses.

    aiokafka has two builders: the compiled one it uses, which closes a batch before it
    reaches the limit, and the pure-Python one, which fills it up to the limit as `build` does.
    """
    out: list[bytes] = []
    builder = None
    offset = 0

    def new() -> Any:
        return builder_class(2, compression, True, PRODUCER["producer_id"],
                             PRODUCER["producer_epoch"], PRODUCER["base_sequence"], limit)

    for i, v in enumerate(values):
        k = keys[i] if keys is not None else None
        h = list(headers[i] or ()) if headers is not None else []
        if builder is None:
            builder, offset = new(), 0
        if builder.append(offset, TS, k, v, h) is None:
            out.append(bytes(builder.build()))
            builder, offset = new(), 0
            assert builder.append(offset, TS, k, v, h) is not None
        offset += 1
    if builder is not None:
        out.append(bytes(builder.build()))
    return out


def read_back(buf: bytes | bytearray) -> tuple[DefaultRecordBatch, list[Any]]:
    records = MemoryRecords(bytes(buf))
    batch = records.next_batch()
    assert batch is not None and not records.has_next()
    assert batch.validate_crc()
    return batch, list(batch)


# ---------------------------------------------------------------- murmur2


@pytest.mark.parametrize(("text", "java"), [
    ("21", -973932308), ("foobar", -790332482), ("a-little-bit-long-string", -985981536),
    ("a-little-bit-longer-string", -1486304829),
    ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971), ("abc", 479470107)])
def test_murmur2_matches_javas_vectors(text: str, java: int) -> None:
    signed = lambda h: h - (1 << 32) if h >= 1 << 31 else h  # noqa: E731
    assert signed(aiokafka_murmur2(text.encode())) == java
    assert _batches.murmur2(text.encode()) == aiokafka_murmur2(text.encode())


def test_murmur2_matches_aiokafka_on_random_bytes() -> None:
    rnd = random.Random(7)
    for length in range(41):
        for _ in range(50):
            data = rnd.randbytes(length)
            assert _batches.murmur2(data) == aiokafka_murmur2(data), data


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_murmur2_matches_aiokafka_on_any_bytes(data: bytes) -> None:
    assert _batches.murmur2(data) == aiokafka_murmur2(data)


# ---------------------------------------------------------------- crc32c


@pytest.mark.parametrize("crc", [_batches.crc32c, _batches._crc32c_sw], ids=["fast", "tables"])
def test_crc32c_matches_aiokafka(crc: Any) -> None:
    rnd = random.Random(3)
    assert crc(b"") == calc_crc32c(b"") == 0
    assert crc(b"123456789") == 0xE3069283  # the CRC-32C check value
    for length in [*range(70), 1000, 4097, 65536 + 13]:
        data = rnd.randbytes(length)
        assert crc(data) == calc_crc32c(data), length
    # unaligned starts: the fast path aligns before its 8-byte steps
    view = memoryview(rnd.randbytes(300))
    for start in range(9):
        assert crc(view[start:]) == calc_crc32c(bytes(view[start:]))
    assert crc(bytearray(b"abc")) == calc_crc32c(b"abc")


def test_the_fast_crc_uses_the_cpu_instruction_where_there_is_one() -> None:
    with open("/proc/cpuinfo") as f:
        has_sse42 = " sse4_2" in f.read()
    assert _batches.CRC32C_HARDWARE == has_sse42


# ---------------------------------------------------------------- the bytes


@pytest.mark.parametrize("builder_class", [DefaultRecordBatchBuilder, _DefaultRecordBatchBuilderPy],
                         ids=["compiled", "python"])
def test_a_batch_is_byte_identical_to_aiokafkas(builder_class: Any) -> None:
    values, keys, headers = rows(300)
    built = _batches.build(values, keys, headers, 1, 0, 10**8, TS)
    assert [(i, c) for i, c, _ in built] == [(0, 300)]
    ours = finished(built[0][2], 300, attributes=0x10)
    assert [bytes(ours)] == aiokafka_batches(values, keys, headers, limit=10**8,
                                             builder_class=builder_class)


@given(st.lists(st.tuples(st.none() | st.binary(max_size=300), st.none() | st.binary(max_size=20),
                          st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8)),
                                   max_size=3)),
                min_size=1, max_size=200),
       st.integers(HEADER_SIZE, 3000))
@settings(max_examples=150, deadline=None)
def test_any_rows_split_and_encode_as_aiokafka_would(rows_: list[Any], limit: int) -> None:
    values = [v for v, _, _ in rows_]
    keys = [k for _, k, _ in rows_]
    headers = [h for _, _, h in rows_]
    built = _batches.build(values, keys, headers, 1, 0, limit, TS)
    ours = [bytes(finished(buf, count, attributes=0x10)) for _, count, buf in built]
    assert ours == aiokafka_batches(values, keys, headers, limit=limit,
                                    builder_class=_DefaultRecordBatchBuilderPy)


def test_records_read_back_with_aiokafkas_reader() -> None:
    values, keys, headers = rows(500)
    built = _batches.build(values, keys, headers, 1, 0, 10**8, TS)
    _, count, buf = built[0]
    batch, records = read_back(finished(buf, count, attributes=0x10, producer_epoch=3,
                                        base_sequence=77))
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (4242, 3, 77)
    assert batch.is_transactional and batch.compression_type == 0
    assert (batch.first_timestamp, batch.max_timestamp, batch.last_offset_delta) == (TS, TS, 499)
    assert batch.base_offset == 0 and batch.magic == 2
    expect_headers = [list(h or ()) for h in headers or []]
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in records] == \
        [(i, TS, keys[i] if keys else None, values[i], expect_headers[i]) for i in range(500)]


@pytest.mark.parametrize("compression", [None, *INSTALLED])
@pytest.mark.parametrize("transactional", [True, False])
def test_prebuilt_batches_read_back_compressed_or_not(compression: str | None,
                                                      transactional: bool) -> None:
    values = [f"row {i} ".encode() * 20 for i in range(2000)]  # compressible
    keys = [f"k{i % 37}".encode() for i in range(2000)]
    batches = build_batches(values, keys, None, partitions=4, null_index=0,
                            max_batch_bytes=64 * 1024, compression=compression,
                            transactional=transactional, timestamp_ms=TS)
    seen: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    for index, batch in batches:
        batch._set_producer_state(99, 2, 5000)
        buf = batch._build()
        sent = bytes(buf)
        assert batch._build() is buf and buf == sent  # a retry sends the same bytes
        batch._set_producer_state(99, 2, 5000)
        assert batch._build() is buf and buf == sent
        assert batch.size() == len(buf)
        parsed, records = read_back(buf)
        assert parsed.compression_type == (CODEC_BITS[compression] if compression else 0)
        assert parsed.is_transactional == transactional
        assert (parsed.producer_id, parsed.producer_epoch, parsed.base_sequence) == (99, 2, 5000)
        assert [r.timestamp for r in records] == [TS] * batch.record_count()
        seen.setdefault(index, []).extend((r.key, r.value) for r in records)
    for index, got in seen.items():
        assert got == [(k, v) for k, v in zip(keys, values, strict=True)
                       if kafka_index(k, 4) == index]
    assert sum(len(v) for v in seen.values()) == 2000


@pytest.mark.parametrize("compression", DETERMINISTIC)
def test_compressed_batches_are_byte_identical_to_aiokafkas(compression: str) -> None:
    values, keys, headers = rows(400, seed=5)
    values = [(v or b"") * 3 + b"repeat " * 30 for v in values]
    [(_, batch)] = build_batches(values, keys, headers, partitions=1, null_index=0,
                                 max_batch_bytes=10**8, compression=compression,
                                 transactional=True, timestamp_ms=TS)
    batch._set_producer_state(**PRODUCER)
    expected = aiokafka_batches(values, keys, headers, limit=10**8,
                                compression=CODEC_BITS[compression])
    assert [bytes(batch._build())] == expected


def test_incompressible_records_are_sent_compressed_as_aiokafka_sends_them() -> None:
    # aiokafka's compiled builder (the one it uses) keeps the codec even when it does not help
    values = [random.Random(i).randbytes(300) for i in range(50)]
    compression = INSTALLED[-1]
    [(_, batch)] = build_batches(values, None, None, partitions=1, null_index=0,
                                 max_batch_bytes=10**8, compression=compression,
                                 transactional=True, timestamp_ms=TS)
    batch._set_producer_state(**PRODUCER)
    parsed, records = read_back(batch._build())
    assert parsed.compression_type == CODEC_BITS[compression]
    assert [r.value for r in records] == values


# ---------------------------------------------------------------- placing and splitting


def test_keyed_rows_go_where_kafkas_default_partitioner_puts_them_in_input_order() -> None:
    values, keys, headers = rows(5000, seed=11)
    assert keys is not None
    built = _batches.build(values, keys, headers, 7, 3, 50_000, TS)
    expected: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    for k, v in zip(keys, values, strict=True):
        expected.setdefault(3 if k is None else kafka_index(k, 7), []).append((k, v))
    actual: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    for index, count, buf in built:
        assert len(buf) <= 50_000
        records = read_back(finished(buf, count))[1]
        assert [r.offset for r in records] == list(range(count))
        actual.setdefault(index, []).extend((r.key, r.value) for r in records)
    assert actual == expected
    assert list(actual) == list(expected)  # indexes in order of first appearance


def test_rows_without_keys_all_go_to_the_null_index() -> None:
    values, _, headers = rows(1000, keyed=False)
    for keys in (None, [None] * 1000):
        built = _batches.build(values, keys, headers, 5, 4, 30_000, TS)
        assert {index for index, _, _ in built} == {4}
        assert sum(count for _, count, _ in built) == 1000


def test_batches_stay_within_the_limit_and_fill_up_to_it() -> None:
    values = [bytes(100)] * 1000
    limit = 4096
    built = _batches.build(values, None, None, 1, 0, limit, TS)
    sizes = [len(buf) for _, _, buf in built]
    assert all(size <= limit for size in sizes)
    # each batch but the last could not take one more record (about 105 bytes)
    assert all(size > limit - 110 for size in sizes[:-1])
    assert sum(count for _, count, _ in built) == 1000


def test_a_record_larger_than_the_limit_is_alone_in_its_batch() -> None:
    values = [b"a" * 10, b"b" * 5000, b"c" * 10, b"d" * 10]
    built = _batches.build(values, None, None, 1, 0, 1000, TS)
    assert [count for _, count, _ in built] == [1, 1, 2]
    assert len(built[1][2]) > 1000
    assert [r.value for r in read_back(finished(built[1][2], 1))[1]] == [b"b" * 5000]


def test_no_rows_no_batches() -> None:
    assert _batches.build([], None, None, 3, 0, 1000, TS) == []
    assert build_batches([], [], [], partitions=3, null_index=1, max_batch_bytes=1000,
                         compression=None, transactional=True) == []


def test_many_keyed_rows_take_the_path_without_the_gil() -> None:
    # above the size where the GIL is released: same result as aiokafka's placement
    values = [bytes([i % 251]) * 200 for i in range(20_000)]
    keys = [f"{i:016d}".encode() for i in range(20_000)]
    built = _batches.build(values, keys, None, 12, 0, 512 * 1024, TS)
    placed = {}
    for index, count, buf in built:
        for r in read_back(finished(buf, count))[1]:
            placed[r.key] = index
    assert placed == {k: kafka_index(k, 12) for k in keys}


def test_threads_building_at_once_get_what_one_thread_gets() -> None:
    # the hashing and copying run without the GIL: workers build side by side
    from concurrent.futures import ThreadPoolExecutor

    values, keys, headers = rows(6000, seed=2)
    values, keys, headers = values * 2, (keys or []) * 2, (headers or []) * 2

    def build() -> list[tuple[int, int, bytes]]:
        return [(i, c, bytes(b)) for i, c, b in _batches.build(values, keys, headers, 5, 2,
                                                               256 * 1024, TS)]

    alone = build()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: build(), range(8)))
    assert all(result == alone for result in results)


# ---------------------------------------------------------------- what aiokafka calls


async def test_aiokafkas_accumulator_takes_a_prebuilt_batch() -> None:
    class Txn:
        transactional_id = "t"
        producer_id, producer_epoch = 31, 4

        def has_pid(self) -> bool:
            return True

        def sequence_number(self, tp: TopicPartition) -> int:
            return 120

        def increment_sequence_number(self, tp: TopicPartition, n: int) -> None:
            self.incremented = n

        def maybe_add_partition_to_txn(self, tp: TopicPartition) -> None:
            pass

    class Cluster:
        def leader_for_partition(self, tp: TopicPartition) -> int:
            return 1

    txn = Txn()
    acc = MessageAccumulator(Cluster(), 16384, 0, 30, txn_manager=txn)
    [(_, batch)] = build_batches([b"x"] * 10, None, None, partitions=1, null_index=0,
                                 max_batch_bytes=10**6, compression=None, transactional=True,
                                 timestamp_ms=TS)
    tp = TopicPartition("topic", 0)
    await acc.add_batch(batch, tp, 5)
    # a send() to the same partition meanwhile is refused by the closed batch, not appended
    assert batch.append(timestamp=None, key=None, value=b"y") is None  # type: ignore[func-returns-value]
    nodes, _ = acc.drain_by_nodes(set())
    drained: MessageBatch = nodes[1][tp]
    assert drained.record_count == 10 and txn.incremented == 10
    parsed, records = read_back(drained.get_data_buffer())
    assert (parsed.producer_id, parsed.producer_epoch, parsed.base_sequence) == (31, 4, 120)
    assert [r.value for r in records] == [b"x"] * 10


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(("args", "error", "match"), [
    (([b"a"], [b"k", b"l"], None, 1, 0, 100, TS), ValueError, "keys has 2 items for 1"),
    (([b"a"], None, [[], []], 1, 0, 100, TS), ValueError, "headers has 2 items for 1"),
    (([b"a", "b"], None, None, 1, 0, 100, TS), TypeError, "value of row 1 is str"),
    (([bytearray(b"a")], None, None, 1, 0, 100, TS), TypeError, "value of row 0 is bytearray"),
    (([b"a"], [1], None, 1, 0, 100, TS), TypeError, "key of row 0 is int"),
    (([b"a"], None, [[(b"k", b"v")]], 1, 0, 100, TS), TypeError, "header key of row 0 is bytes"),
    (([b"a"], None, [[("k", "v")]], 1, 0, 100, TS), TypeError, "header value of row 0 is str"),
    (([b"a"], None, [[("k",)]], 1, 0, 100, TS), TypeError, "header of row 0 is tuple"),
    (([b"a"], None, [5], 1, 0, 100, TS), TypeError, "sequence of pairs"),
    ((b"a", None, None, 1, 0, 100, TS), TypeError, "values must be a list"),
    (([b"a"], None, None, 0, 0, 100, TS), ValueError, "partitions must be"),
    (([b"a"], None, None, 3, 3, 100, TS), ValueError, "null_index 3"),
    (([b"a"], None, None, 3, -1, 100, TS), ValueError, "null_index -1"),
    (([b"a"], None, None, 1, 0, 0, TS), ValueError, "max_batch_bytes must be positive"),
])
def test_bad_input_is_refused_clearly(args: tuple[Any, ...], error: type[Exception],
                                      match: str) -> None:
    with pytest.raises(error, match=match):
        _batches.build(*args)


def test_finish_refuses_what_is_no_batch() -> None:
    with pytest.raises(ValueError, match="61-byte header"):
        _batches.finish(bytearray(60), 1, attributes=0, **PRODUCER, first_timestamp=0,
                        max_timestamp=0)
    with pytest.raises(TypeError):
        _batches.finish(bytes(61), 1, attributes=0, **PRODUCER,  # type: ignore[arg-type]
                        first_timestamp=0, max_timestamp=0)
    with pytest.raises(ValueError, match="record_count"):
        _batches.finish(bytearray(61), 0, attributes=0, **PRODUCER, first_timestamp=0,
                        max_timestamp=0)
    with pytest.raises(ValueError, match="int16"):
        _batches.finish(bytearray(61), 1, attributes=1 << 16, **PRODUCER, first_timestamp=0,
                        max_timestamp=0)


def test_a_changed_producer_state_rewrites_the_header_in_place() -> None:
    [(_, batch)] = build_batches([b"a", b"b"], None, None, partitions=1, null_index=0,
                                 max_batch_bytes=1000, compression=None, transactional=False,
                                 timestamp_ms=TS)
    buf = batch._build()
    assert read_back(buf)[0].producer_id == -1  # aiokafka's defaults for no producer id
    batch._set_producer_state(8, 1, 40)
    assert batch._build() is buf
    parsed, _ = read_back(buf)
    assert (parsed.producer_id, parsed.producer_epoch, parsed.base_sequence) == (8, 1, 40)


def test_build_batches_refuses_an_unknown_codec() -> None:
    with pytest.raises(ValueError, match="unknown compression 'brotli'"):
        build_batches([b"a"], None, None, partitions=1, null_index=0, max_batch_bytes=100,
                      compression="brotli", transactional=False)
    with pytest.raises(ValueError, match="at least one record"):
        PrebuiltBatch(bytearray(70), 0, timestamp_ms=TS, compression=None, transactional=False)
