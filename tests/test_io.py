import subprocess
import sys

import pytest

from goalrank.errors import ArtifactError
from goalrank.io import (
    SUMS,
    atomic_dir,
    atomic_file,
    exclusive_lock,
    read_json,
    read_recorded_json,
    read_sha256sums,
    record_checksum,
    sha256_file,
    verify_checksum,
    write_json,
    write_recorded_json,
    write_rows_json,
    write_text_atomic,
)


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


def test_recorded_json_round_trip_and_sha256sum_compatible_record(tmp_path):
    write_recorded_json(tmp_path / "a.json", {"x": 1})
    write_recorded_json(tmp_path / "b.json", [1, 2])
    write_recorded_json(tmp_path / "a.json", {"x": 2})  # replaces a's line, keeps b's
    assert read_recorded_json(tmp_path / "a.json") == {"x": 2}
    assert len((tmp_path / SUMS).read_text().splitlines()) == 2
    checked = subprocess.run(["sha256sum", "-c", SUMS], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_recorded_file_altered_truncated_or_unrecorded_is_named(tmp_path):
    path = tmp_path / "eval-test.json"
    write_recorded_json(path, {"ndcg": 0.5})
    path.write_text(path.read_text().replace("0.5", "0.9"))  # still valid JSON: only the checksum can tell
    with pytest.raises(ArtifactError, match=r"eval-test.json: checksum mismatch"):
        read_recorded_json(path)
    write_json(tmp_path / "other.json", {})
    with pytest.raises(ArtifactError, match=r"other.json: no checksum recorded"):
        read_recorded_json(tmp_path / "other.json")
    with pytest.raises(ArtifactError, match="missing.json: file not found"):
        verify_checksum(tmp_path / "missing.json")


def test_atomic_file_keeps_the_suffix_and_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(path) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert path.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [path]


def test_overwrite_replaces_only_a_folder_goalrank_wrote(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "ratings.csv").write_text("1,2,3,4\n")  # e.g. the folder that holds the input log
    with pytest.raises(ArtifactError, match="has no goalrank manifest.json, so goalrank did not write it; refusing"):
        with atomic_dir(mine, overwrite=True) as tmp:
            (tmp / "manifest.json").write_text("{}")
    assert (mine / "ratings.csv").read_text() == "1,2,3,4\n"
    ours = tmp_path / "ours"
    for version in (1, 2):
        with atomic_dir(ours, overwrite=True) as tmp:
            (tmp / "manifest.json").write_text(f'{{"format_version": {version}}}')
    assert read_json(ours / "manifest.json") == {"format_version": 2}
    web = tmp_path / "web"
    web.mkdir()
    (web / "manifest.json").write_text('{"name": "an app"}')  # a manifest.json goalrank did not write
    with pytest.raises(ArtifactError, match="has no goalrank manifest.json"):
        with atomic_dir(web, overwrite=True):
            pass
    (tmp_path / "file").write_text("x")
    for target, named in ((tmp_path / "file", "is a file, not a folder"), (tmp_path / "file" / "out", "is a file")):
        with pytest.raises(ArtifactError, match=named):
            with atomic_dir(target, overwrite=True):
                pass


def test_a_second_writer_of_one_folder_fails_at_once_and_stale_temporaries_are_cleared(tmp_path):
    stale = tmp_path / ".out.tmp-deadbeef"
    stale.mkdir()  # what a killed writer leaves
    with atomic_dir(tmp_path / "out") as tmp:
        assert not stale.exists()
        (tmp / "manifest.json").write_text("{}")
        code = ("import sys; from goalrank.io import atomic_dir\n"
                "try:\n    atomic_dir(sys.argv[1], overwrite=True).__enter__()\n"
                "except Exception as exc:\n    print(exc)")
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True)
        assert "is being written by another process" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no lock file, no temporary left


def test_exclusive_lock_is_released_and_its_file_removed(tmp_path):
    lock = tmp_path / "run.lock"
    with exclusive_lock(lock, "busy"):
        with pytest.raises(ArtifactError, match="busy"), exclusive_lock(lock, "busy"):
            pass
    assert not lock.exists()
    with exclusive_lock(lock, "busy"):
        pass


def test_two_processes_recording_results_in_one_folder_keep_every_line(tmp_path):
    code = ("import sys; from pathlib import Path; from goalrank.io import record_checksum\n"
            "for i in range(60):\n"
            "    path = Path(sys.argv[1]) / f'{sys.argv[2]}-{i}.json'\n"
            "    path.write_text(str(i))\n"
            "    record_checksum(path)")
    writers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), name]) for name in ("a", "b")]
    assert [writer.wait(timeout=60) for writer in writers] == [0, 0]
    recorded = {name for _, name in read_sha256sums(tmp_path / SUMS)}
    assert recorded == {f"{name}-{i}.json" for name in ("a", "b") for i in range(60)}
    record_checksum(tmp_path / "a-0.json")  # the folder lock was released


def test_write_rows_json_keeps_the_key_order_and_refuses_nan(tmp_path):
    path = tmp_path / "rows.json"
    write_rows_json(path, [{"b": 1, "a": 2.5}])
    assert path.read_text() == '[\n  {\n    "b": 1,\n    "a": 2.5\n  }\n]\n'
    with pytest.raises(ValueError):
        write_rows_json(path, [{"x": float("nan")}])
    assert "2.5" in path.read_text()  # the failed write left the earlier file whole
