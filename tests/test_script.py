"""The movie contract: validation with readable errors, JSON round trip, exports."""

from __future__ import annotations

import json

import pytest

from moviellm_data.errors import ScriptValidationError
from moviellm_data.script import MovieScript, load_script
from moviellm_data.writers import MovieRequest, ProceduralWriter


@pytest.fixture(scope="module")
def script() -> MovieScript:
    return ProceduralWriter("tiny").write(MovieRequest(id="m000001_test", index=1, theme="a love story", seed=3))


def mutated(script: MovieScript, change) -> dict:
    data = json.loads(script.to_json())
    change(data)
    return data


def test_json_round_trip_is_lossless(script):
    again = MovieScript.from_json(script.to_json())
    assert again == script
    assert again.schema_version == "1.0"


def test_timeline_is_one_frame_per_shot_at_one_fps(script):
    shots = script.shots()
    assert script.num_frames == len(shots) == 12
    for i, (frame, shot) in enumerate(zip(script.timeline, shots)):
        assert frame.index == i and frame.time == float(i)
        assert frame.subtitle == (shot.dialogue.subtitle() if shot.dialogue else None)
    assert [(f.act, f.scene, f.shot) for f in script.timeline[:4]] == [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0)]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(id="movie.1"), "no dots"),
        (lambda d: d["acts"][0]["scenes"][0]["shots"][0].update(location="Atlantis"), "'Atlantis' is not one of the script's locations"),
        (lambda d: d["acts"][0]["scenes"][0]["shots"][0].update(characters=["Nobody"]), "['Nobody'] are not in the cast"),
        (lambda d: d["qa"][0]["evidence"].update(end=999), "past the last frame 11"),
        (lambda d: d["qa"][0]["evidence"].update(start=5, end=2), "ends (2) before it starts (5)"),
        (lambda d: d.update(schema_version="2.0"), "not readable by this package"),
        (lambda d: d["style"].update(keyword="two words"), "single word"),
        (lambda d: d["timeline"][0].update(subtitle="edited"), "timeline does not match the shots"),
        (lambda d: d.update(locations=d["locations"] + [d["locations"][0]]), "appears twice"),
        (lambda d: d.pop("title"), "title: Field required"),
        (lambda d: d["qa"][0].update(type="trivia"), "qa.0.type"),
    ],
)
def test_invalid_scripts_get_one_readable_sentence(script, change, expected):
    with pytest.raises(ScriptValidationError) as info:
        MovieScript.from_dict(mutated(script, change), source="x.json")
    message = str(info.value)
    assert expected in message
    assert message.startswith("x.json is not a valid movie script: ")
    assert "\n" not in message


def test_timeline_is_derived_when_left_empty(script):
    data = mutated(script, lambda d: d.update(timeline=[]))
    assert MovieScript.from_dict(data).timeline == script.timeline


def test_load_script_reports_missing_and_malformed_files(tmp_path, script):
    with pytest.raises(ScriptValidationError, match="cannot read movie script"):
        load_script(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ScriptValidationError, match="is not JSON"):
        load_script(str(bad))
    good = tmp_path / "good.json"
    good.write_text(script.to_json())
    assert load_script(str(good)) == script


def test_benchmark_export_has_the_movielm_layout(script):
    bench = script.to_benchmark_json()
    assert bench["movie_title"] == script.title
    assert {k: len(v) for k, v in bench["QA"].items()} == {"overview_qa": 1, "plot_qa": 2, "temporal_qa": 1}
    for pairs in bench["QA"].values():
        for pair in pairs:
            assert set(pair) == {"Question", "Answer"} and pair["Question"] and pair["Answer"]
    assert bench["QA"]["overview_qa"][0]["Answer"] == script.overview


def test_dreamframe_story_export_interleaves_frames_and_dialogue(script):
    story = script.to_dreamframe_story()
    frames = [item for item in story["img_diag"] if item[0] == "frame"]
    lines = [item for item in story["img_diag"] if item[0] == "dialogue"]
    assert len(frames) == script.num_frames
    assert len(lines) == sum(1 for s in script.shots() if s.dialogue)
    # A dialogue entry follows the frame of the shot that speaks it.
    for i, item in enumerate(story["img_diag"]):
        if item[0] == "dialogue":
            assert story["img_diag"][i - 1][0] == "frame"
    assert set(story["character"]) == {c.name for c in script.characters}
    assert all(" in " in d for d in story["character"].values())
    assert len(story["QA"]) == len(script.qa)
