"""Reading the workflow's own JSONL files: a damaged file is named with its line, never a bare JSON error."""

import pytest

from lcopt.io import read_jsonl


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"a": 1}\n{"a": \n', "line 2 is not valid JSON (Expecting value; column 7)"),
        (b'{"a": 1}\n\n[1, 2]\n', "line 3 is a JSON list, expected an object"),
        (b'{"a": "\xff"}\n', "line 1 is not UTF-8 text (invalid start byte at byte 7)"),
    ],
)
def test_a_bad_line_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        read_jsonl(path)
    assert str(err.value) == f"{path}: {message}"


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"a": 2}\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
