"""Raw formats: a file cut into byte ranges and read back range by range gives every row once, in
order, with the line it starts on, whatever the range size, quoting or blank lines."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobrunner.tasks.features.formats import InputError, Scan, read, scan

# Fields with the characters CSV must quote: separators, quotes, line breaks.
FIELD = st.text(alphabet=st.sampled_from('ab ,"\n\r\té'), max_size=6)
ROWS = st.lists(st.lists(FIELD, min_size=2, max_size=2), max_size=25)


def _read_all(path: Path, fmt: str, found: Scan) -> list[tuple[int, str, list[str] | None]]:
    return [
        (record.line, record.text, record.fields)
        for rows in found.ranges
        for record in read(path, fmt, rows.offset, rows.end, rows.first_line, rows.sha256)
    ]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=ROWS, rows_per_range=st.integers(0, 6), blank_every=st.integers(2, 9))
def test_csv_ranges_give_back_every_row_once(
    tmp_path: Path, rows: list[list[str]], rows_per_range: int, blank_every: int
) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)  # RFC 4180: \r\n after each row, quotes any field with \r or \n
    writer.writerow(["a", "b"])
    starts = []
    for i, row in enumerate(rows):
        if i % blank_every == 0:
            text.write("\n")
        starts.append(text.getvalue().count("\n") + 1)
        writer.writerow(row)
    path = tmp_path / "rows.csv"
    path.write_bytes(text.getvalue().encode())

    found = scan(path, "csv", rows_per_range)

    assert found.columns == ("a", "b")
    assert found.rows == len(rows)
    assert found.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    ranges = -(-len(rows) // rows_per_range) if rows_per_range else 1
    assert len(found.ranges) == max(ranges, 1)
    assert sum(r.rows for r in found.ranges) == len(rows)
    got = _read_all(path, "csv", found)
    assert [fields for _, _, fields in got] == rows
    assert [line for line, _, _ in got] == starts


def test_jsonl_rows_keep_their_line_numbers_and_raw_text(tmp_path: Path) -> None:
    lines = ['{"a": 1}', "", "not json", "   ", '{"a": 2}', '{"a": 3}']
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines))  # no newline after the last row

    found = scan(path, "jsonl", 2)

    assert found.columns == ()
    assert [(r.first_line, r.last_line, r.rows) for r in found.ranges] == [(1, 3, 2), (4, 6, 2)]
    assert [(line, text) for line, text, _ in _read_all(path, "jsonl", found)] == [
        (1, '{"a": 1}'),
        (3, "not json"),
        (5, '{"a": 2}'),
        (6, '{"a": 3}'),
    ]
    assert json.loads(_read_all(path, "jsonl", found)[-1][1]) == {"a": 3}


def test_a_file_without_rows_is_one_empty_range(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("a,b\n\n")

    found = scan(path, "csv", 10)

    assert found.rows == 0
    assert [r.rows for r in found.ranges] == [0]
    assert _read_all(path, "csv", found) == []


def test_byte_order_mark_is_not_part_of_the_header(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\r\n1,2\r\n")

    found = scan(path, "csv", 0)

    assert found.columns == ("a", "b")
    assert _read_all(path, "csv", found) == [(2, "1,2", ["1", "2"])]


def test_text_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("a,b\n1,2\nZürich,3\n".encode("latin-1"))

    with pytest.raises(InputError, match=r"line 3 is not UTF-8 text \(invalid start byte"):
        scan(path, "csv", 0)
