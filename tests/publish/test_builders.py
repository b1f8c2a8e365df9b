"""The datasets builders: synthetic movies from a recipe, the long-video benchmark, the short-video QA sets."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from datasets import Video
from safetensors.numpy import save_file

from moviellm_data.builders.movie_qa_bench import MovieQABench, bench_features, pack_benchmark, read_packed
from moviellm_data.builders.video_qa import VideoQA, pack_video_qa, video_qa_features
from moviellm_data.builders.video_qa import read_packed as read_packed_video_qa
from moviellm_data.card import card_features, load_card
from moviellm_data.errors import ConfigError
from moviellm_data.shards import read_movies
from moviellm_data.video import decode_mp4
from tests.publish.publish_support import cli, python, write_video

_OFFLINE_TINY = """
import json
from moviellm_data.builders.synthetic_movies import SyntheticMovies
from moviellm_data.features import movie_features
from moviellm_data.video import decode_mp4
from datasets import Video

builder = SyntheticMovies(config_name="offline-tiny", cache_dir={cache!r})
builder.download_and_prepare()
movies = builder.as_dataset(split="train")
same = movies.features == movie_features()
movies = movies.cast_column("mp4", Video(decode=False))
rows = [(m["__key__"], m["json"]["id"], len(m["json"]["timeline"]), len(decode_mp4(m["mp4"]["bytes"])), len(m["json"]["qa"]))
        for m in movies]
recipe = (builder.dataset_folder / "pipeline.yaml").read_text()
print(json.dumps({{"same": same, "rows": rows, "recipe": recipe}}))
"""


def test_synthetic_movies_offline_tiny_builds_with_no_network(tmp_path):
    # A dead endpoint and offline switches: any download attempt would fail the build.
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HOME": str(tmp_path / "hf")}
    result = python(_OFFLINE_TINY.format(cache=str(tmp_path / "cache")), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["same"]
    assert len(report["rows"]) == 4
    for key, movie_id, timeline, decoded, qa in report["rows"]:
        assert key == movie_id and timeline == decoded == 12 and qa > 0
    assert "--size tiny --width 128 --height 96" in report["recipe"]


def test_synthetic_movies_overrides_and_unknown_recipe(tmp_path):
    from moviellm_data.builders.synthetic_movies import SyntheticMovies

    builder = SyntheticMovies(config_name="offline-tiny", cache_dir=str(tmp_path), movies=2, seed=3,
                              output_dir=str(tmp_path / "folder"))
    builder.download_and_prepare()
    assert builder.as_dataset(split="train").num_rows == 2
    assert (tmp_path / "folder" / "README.md").exists()  # the folder moviellm push publishes
    with pytest.raises(ValueError, match="offline-tiny"):
        SyntheticMovies(config_name="offline-tny", cache_dir=str(tmp_path))


def test_benchmark_from_our_movies(movies, tmp_path):
    builder = MovieQABench(config_name="from-movies", data_dir=str(movies), cache_dir=str(tmp_path / "c"))
    builder.download_and_prepare()
    bench = builder.as_dataset(split="test").cast_column("mp4", Video(decode=False))
    scripts = {s.id: (s, mp4) for s, mp4 in read_movies(movies, decode=False)}
    assert sorted(bench["__key__"]) == sorted(scripts)
    for row in bench:
        script, mp4 = scripts[row["__key__"]]
        entry = row["json"]
        assert {k: len(v) for k, v in entry["QA"].items()} == {"overview_qa": 1, "plot_qa": 2, "temporal_qa": 1}
        expected = script.to_benchmark_json()["QA"]
        for kind, pairs in entry["QA"].items():
            assert [(p["Question"], p["Answer"]) for p in pairs] == [(p["Question"], p["Answer"]) for p in expected[kind]]
            assert all(len(p["evidence"]) == 2 for p in pairs)
        assert entry["inputs"].count("<image>") == script.num_frames and row["mp4"]["bytes"] == mp4


def _movielm_folder(tmp_path, media: str):
    folder = tmp_path / f"movielm-{media}"
    folder.mkdir()
    for name in ("Children of Men", "Heat"):
        stem = name.lower().replace(" ", "_")
        qa = {"overview_qa": [{"Question": "Can you provide a brief overview?", "Answer": f"{name} overview."}],
              "plot_qa": [{"Question": "Who?", "Answer": "Someone."}, {"Question": "Why?", "Answer": "Because."}],
              "temporal_qa": [{"Question": "Can you outline the chronological sequence of events?", "Answer": "First..."}]}
        (folder / f"{stem}.json").write_text(json.dumps({"movie_title": name, "QA": qa}))
        if media == "video":
            write_video(folder / f"{stem}{'.mkv' if name == 'Heat' else '.mp4'}", frames=3)
        else:
            feats = np.full((3, 5, 8), 0.5, np.float16)
            if name == "Heat":
                with open(folder / f"{stem}.pkl", "wb") as fh:
                    pickle.dump({"feats": feats, "inputs": "<image>a<image>b<image>"}, fh)
            else:
                save_file({"feats": feats}, str(folder / f"{stem}.safetensors"), metadata={"inputs": "<image><image><image>"})
    return folder


def test_benchmark_from_a_movielm_folder_with_videos(tmp_path):
    folder = _movielm_folder(tmp_path, "video")
    builder = MovieQABench(config_name="movielm-format", data_dir=str(folder), cache_dir=str(tmp_path / "c"))
    builder.download_and_prepare()
    bench = builder.as_dataset(split="test").cast_column("mp4", Video(decode=False))
    assert sorted(r["json"]["movie_title"] for r in bench) == ["Children of Men", "Heat"]
    for row in bench:
        assert len(decode_mp4(row["mp4"]["bytes"])) == 3  # the .mkv is re-encoded as mp4, frames kept


def test_benchmark_features_need_the_legacy_flag_for_pickles(tmp_path):
    folder = _movielm_folder(tmp_path, "features")
    with pytest.raises(ConfigError, match="pickle"):
        pack_benchmark("movielm-format", folder, tmp_path / "refused", media="features")
    assert not (tmp_path / "refused").exists(), "nothing may be written when the input is refused"
    out = pack_benchmark("movielm-format", folder, tmp_path / "packed", media="features", legacy_pickle=True)
    entries = {e["movie_title"]: e for e in read_packed(out)}
    assert entries["Heat"]["inputs"] == "<image>a<image>b<image>" and entries["Heat"]["num_frames"] == 3
    assert card_features(load_card(out / "README.md")) == bench_features("features")


def _raw_video_qa(tmp_path):
    raw = tmp_path / "msvd"
    (raw / "videos").mkdir(parents=True)
    write_video(raw / "videos" / "vidA.avi", frames=4)
    write_video(raw / "videos" / "vid-B.mp4", frames=5)
    (raw / "test_qa.json").write_text(json.dumps([
        {"video_id": "vidA", "question": "what is a man doing?", "id": 0, "answer": "dance"},
        {"video_id": "vid-B", "question": "who is cooking?", "id": 1, "answer": "woman"},
        {"video_id": "vidA", "question": "what is the man wearing?", "id": 2, "answer": "hat"},
    ]))
    return raw


def test_video_qa_groups_questions_per_video_and_stores_mp4(tmp_path):
    raw = _raw_video_qa(tmp_path)
    builder = VideoQA(config_name="msvd_qa", data_dir=str(raw), cache_dir=str(tmp_path / "c"))
    builder.download_and_prepare()
    test = builder.as_dataset(split="test")
    assert test.features == video_qa_features()
    test = test.cast_column("mp4", Video(decode=False))
    rows = {r["json"]["video_id"]: r for r in test}
    assert [q["answer"] for q in rows["vidA"]["json"]["qa"]] == ["dance", "hat"]
    assert [q["id"] for q in rows["vid-B"]["json"]["qa"]] == ["1"]
    assert len(decode_mp4(rows["vidA"]["mp4"]["bytes"])) == 4  # the .avi, re-encoded
    assert rows["vid-B"]["mp4"]["bytes"] == (raw / "videos" / "vid-B.mp4").read_bytes()


def test_activitynet_and_video_chatgpt_layouts(tmp_path):
    raw = tmp_path / "anet"
    raw.mkdir()
    write_video(raw / "v_abc.mp4")
    (raw / "test_q.json").write_text(json.dumps([{"video_name": "abc", "question_id": "abc_0", "question": "is it day?"}]))
    (raw / "test_a.json").write_text(json.dumps([{"answer": "yes", "type": 3}]))
    anet = VideoQA(config_name="activitynet_qa", data_dir=str(raw), cache_dir=str(tmp_path / "c1"))
    anet.download_and_prepare()
    qa = anet.as_dataset(split="test").select_columns(["json"])[0]["json"]["qa"][0]
    assert (qa["id"], qa["answer"], qa["category"]) == ("abc_0", "yes", "3")

    vcg = tmp_path / "vcg"
    vcg.mkdir()
    write_video(vcg / "clip1.mp4")
    (vcg / "generic_qa.json").write_text(json.dumps([{"video_name": "clip1", "Q": "describe", "A": "a clip"}]))
    (vcg / "temporal_qa.json").write_text(json.dumps([{"video_name": "clip1", "Q": "order?", "A": "first"}]))
    (vcg / "consistency_qa.json").write_text(json.dumps([{"video_name": "clip1", "Q1": "what?", "Q2": "which?", "A": "x"}]))
    builder = VideoQA(config_name="video_chatgpt", data_dir=str(vcg), cache_dir=str(tmp_path / "c2"))
    builder.download_and_prepare()
    consistency = builder.as_dataset(split="consistency").select_columns(["json"])[0]["json"]["qa"][0]
    assert (consistency["question"], consistency["question_2"]) == ("what?", "which?")
    assert builder.as_dataset(split="temporal").select_columns(["json"])[0]["json"]["qa"][0]["answer"] == "first"


def test_video_qa_bad_input_is_one_sentence(tmp_path):
    raw = _raw_video_qa(tmp_path)
    (raw / "videos" / "vidA.avi").unlink()
    with pytest.raises(ConfigError) as err:
        pack_video_qa("msvd_qa", raw, tmp_path / "out")
    assert "vidA" in str(err.value) and "\n" not in str(err.value)
    out = pack_video_qa("msvd_qa", raw, tmp_path / "out", skip_missing=True)
    assert [e["video_id"] for e in read_packed_video_qa(out)] == ["vid-B"]
    with pytest.raises(ConfigError, match="does not exist"):
        pack_video_qa("msvd_qa", tmp_path / "nowhere", tmp_path / "out2")


_LOAD_QA = """
import json
from datasets import Video, load_dataset
test = load_dataset("org/msvd-qa", split="test", streaming=True).cast_column("mp4", Video(decode=False))
bench = load_dataset("org/bench", split="test").cast_column("mp4", Video(decode=False))
print(json.dumps({"qa": {r["json"]["video_id"]: [q["answer"] for q in r["json"]["qa"]] for r in test},
                  "bench": sorted(r["json"]["movie_title"] for r in bench)}))
"""


def test_packed_benchmarks_are_published_and_read_back_from_the_hub(movies, hub, hf_env, tmp_path):
    qa_folder = pack_video_qa("msvd_qa", _raw_video_qa(tmp_path), tmp_path / "msvd-packed")
    bench_folder = pack_benchmark("from-movies", movies, tmp_path / "bench-packed")
    for folder, repo in ((qa_folder, "org/msvd-qa"), (bench_folder, "org/bench")):
        pushed = cli("push", str(folder), "--repo", repo, "--no-progress", env=hf_env)
        assert pushed.returncode == 0, pushed.stderr
        assert f'load_dataset("{repo}"'.encode() in hub.files("dataset", repo)["README.md"]
    loaded = python(_LOAD_QA, env=hf_env)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    report = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert report["qa"] == {"vidA": ["dance", "hat"], "vid-B": ["woman"]}
    assert report["bench"] == sorted(s.title for s, _ in read_movies(movies, decode=False))


_OLD_NAMES = """
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import builders, cards
    from builders.video_qa import pack_video_qa
    from builders.synthetic_movies import SyntheticMovies
import moviellm_data.builders.synthetic_movies, moviellm_data.builders.video_qa, moviellm_data.card
assert pack_video_qa is moviellm_data.builders.video_qa.pack_video_qa
assert SyntheticMovies is moviellm_data.builders.synthetic_movies.SyntheticMovies
assert cards.template("dataset_card.md") == moviellm_data.card.template("dataset_card.md")
print(sorted({(w.category.__name__, str(w.message).split(";")[0]) for w in caught}))
"""


def test_the_old_top_level_names_still_import_with_a_deprecation_warning():
    result = python(_OLD_NAMES)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str([
        ("DeprecationWarning", "the top-level `builders` package is deprecated and will be removed"),
        ("DeprecationWarning", "the top-level `cards` package is deprecated and will be removed"),
    ])
    refused = python("import builders", env={"PYTHONWARNINGS": "error::DeprecationWarning"})
    assert refused.returncode != 0 and "DeprecationWarning" in refused.stderr
