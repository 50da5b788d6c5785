from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.positions import AvroPosition, ParquetPosition, PositionError, parse_position


@given(st.integers(0, 2**40), st.integers(0, 2**40))
def test_parquet_position_round_trips(group: int, offset: int) -> None:
    pos = ParquetPosition(group, offset)
    assert parse_position(str(pos)) == pos


@given(st.integers(0, 2**62), st.integers(0, 2**31))
def test_avro_position_round_trips(offset: int, record: int) -> None:
    assert parse_position(str(AvroPosition(offset))) == AvroPosition(offset)
    assert parse_position(str(AvroPosition(offset, record))) == AvroPosition(offset, record)
    assert str(AvroPosition(offset)) == f"block:{offset}"


@pytest.mark.parametrize("text", ["", "rg:", "rg:x/1", "block:-1", "row:3", "rg:1/-2", "block:5/-1", "block:5/x"])
def test_bad_positions_are_named(text: str) -> None:
    with pytest.raises(PositionError, match="bad position"):
        parse_position(text)
