import pytest

from goalrank.errors import ArtifactError
from goalrank.io import atomic_dir, read_json, sha256_file, write_json, write_text_atomic


def test_atomic_dir_renames_only_on_success(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("hello")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "hello"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_refuses_to_clobber_without_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(ArtifactError, match="already exists"):
        with atomic_dir(tmp_path / "out"):
            pass
    with atomic_dir(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "new").write_text("1")
    assert (tmp_path / "out" / "new").exists()


def test_json_round_trip_and_corruption(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"b": 1, "a": [1, 2]})
    assert read_json(path) == {"a": [1, 2], "b": 1}
    path.write_text('{"a": ')
    with pytest.raises(ArtifactError, match="m.json: not valid JSON"):
        read_json(path)
    with pytest.raises(ArtifactError, match="file not found"):
        read_json(tmp_path / "none.json")


def test_sha256_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "f.bin"
    payload = bytes(range(256)) * 5000
    path.write_bytes(payload)
    assert sha256_file(path, chunk_size=1000) == hashlib.sha256(payload).hexdigest()


def test_write_text_atomic_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("old report, much longer than the new one\n")
    write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_write_text_atomic_keeps_old_content_when_writing_fails(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "\ud800")  # a lone surrogate cannot be encoded: the write fails midway
    assert path.read_text() == "a,b\n1,2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]
