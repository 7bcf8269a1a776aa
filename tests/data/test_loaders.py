import json

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from goalrank.data.loaders import load_log
from goalrank.errors import DataError


def expected(users, items, timestamps, labels):
    return pl.DataFrame({"user": users, "item": items, "timestamp": timestamps, "label": labels},
                        schema={"user": pl.Int64, "item": pl.Int64, "timestamp": pl.Int64, "label": pl.Int8})


MOVIELENS = expected([1, 1, 2], [1193, 661, 1193], [978300760, 978302109, 978298413], [1, 0, 1])


@pytest.mark.parametrize("name, text", [
    ("ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"),
    ("u.data", "1\t1193\t5\t978300760\n1\t661\t3\t978302109\n2\t1193\t4\t978298413\n"),
    ("ratings.csv", "UserID,MovieID,Rating,Timestamp\n1,1193,5,978300760\n1,661,3,978302109\n"
                    "2,1193,4,978298413\n"),
    ("ratings", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"),
])
def test_movielens_forms_give_the_same_log(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert_frame_equal(load_log("movielens", path), MOVIELENS)


def test_movielens_label_threshold_is_an_option(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("1\t10\t3\t5\n1\t11\t2\t6\n")
    assert load_log("movielens", path, min_positive_rating=3)["label"].to_list() == [1, 0]


AMAZON = expected([1, 0, 1], [0, 1, 1], [100, 200, 150], [1, 0, 1])


@pytest.mark.parametrize("text", [
    "A2,0001,5.0,100\nA1,0002,3.0,200\nA2,0002,4.0,150\n",
    "user,item,rating,timestamp\nA2,0001,5.0,100\nA1,0002,3.0,200\nA2,0002,4.0,150\n",
])
def test_amazon_csv_encodes_string_ids_in_sorted_order(tmp_path, text):
    path = tmp_path / "ratings_Books.csv"
    path.write_text(text)
    assert_frame_equal(load_log("amazon", path), AMAZON)


def test_amazon_json_lines(tmp_path):
    rows = [("A2", "0001", 5.0, 100), ("A1", "0002", 3.0, 200), ("A2", "0002", 4.0, 150)]
    path = tmp_path / "Books_5.json"
    path.write_text("".join(
        json.dumps({"reviewerID": u, "asin": i, "overall": r, "unixReviewTime": t, "reviewText": "ok"}) + "\n"
        for u, i, r, t in rows))
    assert_frame_equal(load_log("amazon", path), AMAZON)


def test_kuairand_long_view_by_default_is_click_as_option(tmp_path):
    path = tmp_path / "log_standard.csv"
    path.write_text("user_id,video_id,date,hourmin,time_ms,is_click,long_view\n"
                    "0,5,20220408,1200,1649390000000,1,0\n3,6,20220408,1300,1649393600000,1,1\n")
    assert_frame_equal(load_log("kuairand", path),
                       expected([0, 3], [5, 6], [1649390000000, 1649393600000], [0, 1]))
    assert load_log("kuairand", path, kuairand_positive="is_click")["label"].to_list() == [1, 1]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_generic_csv_and_parquet(tmp_path, suffix):
    frame = expected([3, 1], [9, 8], [20, 10], [0, 1])
    path = tmp_path / f"log.{suffix}"
    frame.write_csv(path) if suffix == "csv" else frame.write_parquet(path)
    assert_frame_equal(load_log("generic", path), frame)


def test_simulator_folder_reads_its_interactions(tmp_path):
    frame = expected([0, 0], [1, 2], [0, 1], [1, 0])
    frame.write_parquet(tmp_path / "interactions.parquet")
    assert_frame_equal(load_log("simulator", tmp_path), frame)


@pytest.mark.parametrize("source, name, text, message", [
    ("movielens", "ratings.csv", "1::1193::5::978300760\n", r"separated by ','"),
    ("movielens", "ratings.dat", "1,1193,5,978300760\n", r"separated by '::'"),
    ("movielens", "u.data", "1,1193,5,978300760\n", r"separated by '\\t'"),
    ("movielens", "ratings.dat", "abc::1193::5::978300760\n", r"column 'UserID' has non-numeric value 'abc'"),
    ("movielens", "ratings.csv", "UserID,MovieID,Rating,Timestamp\n1,2,5,\n",
     r"column 'Timestamp' has 1 null/NaN"),
    ("movielens", "ratings.csv", "UserID,MovieID,Rating,Timestamp\n1,2,,7\n", r"column 'Rating' has 1 null"),
    ("movielens", "ratings.csv", "UserID,ItemID,Rating,Timestamp\n1,2,5,7\n", r"missing column\(s\) \['MovieID'\]"),
    ("amazon", "ratings.csv", "A1,0001,5.0\n", r"expected 4 fields"),
    ("amazon", "ratings.csv", "A1,0001,good,100\n", r"missing column\(s\)"),
    ("kuairand", "log.csv", "user_id,video_id,time_ms,is_click\n1,2,3,1\n", r"missing column\(s\) \['long_view'\]"),
    ("kuairand", "log.csv", "user_id,video_id,time_ms,long_view\nu1,2,3,1\n", r"column 'user_id' has non-numeric"),
    ("generic", "log.csv", "user,item,timestamp,label\n1,2,3,\n", r"column 'label' has 1 null/NaN"),
    ("generic", "log.csv", "user,item,timestamp,label\n1,2,3,2\n", r"column 'label' has value 2"),
    ("generic", "log.csv", "", r"file is empty"),
])
def test_bad_input_names_file_and_column(tmp_path, source, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        load_log(source, path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_nan_label_in_parquet_and_missing_files(tmp_path):
    path = tmp_path / "log.parquet"
    pl.DataFrame({"user": [1], "item": [2], "timestamp": [3], "label": [float("nan")]}).write_parquet(path)
    with pytest.raises(DataError, match="column 'label' has 1 null/NaN"):
        load_log("generic", path)
    with pytest.raises(DataError, match="nothing.csv: file not found"):
        load_log("movielens", tmp_path / "nothing.csv")
    with pytest.raises(DataError, match="simulator folder not found"):
        load_log("simulator", tmp_path / "no-sim")
