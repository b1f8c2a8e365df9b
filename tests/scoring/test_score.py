"""``moviellm score``: numbers checked against an independent computation with a tiny CLIP saved and loaded back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from moviellm_data.cli import main
from moviellm_data.pipeline import GenerateOptions, generate
from moviellm_data.renderers import Renderer, StoryboardRenderer
from moviellm_data.renderers.frame_prompts import replace_names
from moviellm_data.renderers.portraits import portraits_bytes
from moviellm_data.scoring.from_configs import save_clip, save_dinov2
from moviellm_data.script import RendererProvenance
from moviellm_data.shards import read_movies
from moviellm_data.writers import ProceduralWriter

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_tiny_clip(folder: Path, seed: int = 0, text_projection: torch.Tensor | None = None) -> Path:
    """A tiny CLIP (random weights, byte-level tokenizer, 64 x 64 image processor) saved as a transformers folder."""
    return save_clip(folder, seed=seed, image_size=64, text_projection=text_projection)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def movies(tmp_path_factory) -> Path:
    """Two storyboard movies of 6 keyframes at 64 x 64 (characters recur across shots)."""
    out = tmp_path_factory.mktemp("score") / "movies"
    generate(GenerateOptions(out=out, movies=2, seed=3), ProceduralWriter("1x2x3"), StoryboardRenderer(64, 64),
             progress=False)
    return out


def _reference_embeddings(clip: Path, frames: np.ndarray, texts: list[str]):
    """CLIP image / text embeddings and style descriptors computed here with transformers alone."""
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(str(clip)).eval()
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    pixels = ((torch.from_numpy(frames).float() / 255 - mean) / std).permute(0, 3, 1, 2)  # frames are 64x64 already
    with torch.no_grad():
        vision = model.vision_model(pixel_values=pixels, output_hidden_states=True)
        image = model.visual_projection(vision.pooler_output)
        tokens = vision.hidden_states[len(vision.hidden_states) // 2][:, 1:]
        style = torch.cat([tokens.mean(1), tokens.std(1)], -1)
        batch = CLIPTokenizer.from_pretrained(str(clip))(texts, padding=True, truncation=True, max_length=77,
                                                          return_tensors="pt")
        text = model.text_projection(model.text_model(**batch).pooler_output)
    unit = lambda x: (x / x.norm(dim=-1, keepdim=True)).double().numpy()  # noqa: E731
    return unit(image), unit(text), unit(style)


def _pairwise(e: np.ndarray) -> float:
    n = len(e)
    return float(np.mean([e[i] @ e[j] for i in range(n) for j in range(n) if i != j]))


def test_scores_match_an_independent_computation_and_reach_the_card(movies, tiny_clip, capsys):
    from moviellm_data.card import card_features, load_card
    from moviellm_data.features import movie_features

    assert main(["score", str(movies), "--clip-model", str(tiny_clip), "--batch-size", "4", "--no-progress"]) == 0
    assert "scored 2 movies, 12 keyframes" in capsys.readouterr().out
    lines = {line["id"]: line for line in map(json.loads, (movies / "scores.jsonl").read_text().splitlines())}
    all_clip_t = []
    for script, frames in read_movies(movies):
        shots = script.shots()
        image, text, style = _reference_embeddings(tiny_clip, frames, [replace_names(s.prompt, script.characters)
                                                                       for s in shots])
        line = lines[script.id]
        clip_t = (image * text).sum(-1)
        all_clip_t += list(clip_t)
        assert np.allclose(line["clip_t_per_keyframe"], clip_t, atol=1e-5)
        assert line["clip_t"] == pytest.approx(clip_t.mean(), abs=1e-5)
        per_character = []
        for name in {n for s in shots for n in s.characters}:
            shown = [i for i, s in enumerate(shots) if name in s.characters]
            if len(shown) > 1:
                per_character.append(_pairwise(image[shown]))
                assert line["characters"][name]["self"] == pytest.approx(per_character[-1], abs=1e-5)
        assert per_character and line["character_consistency"] == pytest.approx(np.mean(per_character), abs=1e-5)
        assert line["style_consistency"] == pytest.approx(_pairwise(style), abs=1e-5)
        assert line["character_portrait_similarity"] is None  # storyboards have no portraits
    summary = json.loads((movies / "scores.json").read_text())
    assert summary["metrics"]["clip_t"]["mean"] == pytest.approx(np.mean(all_clip_t), abs=1e-5)
    assert summary["metrics"]["clip_t"]["count"] == 12 and summary["models"]["clip"] == str(tiny_clip)

    # The card shows the summary and is still a card `datasets` reads with the same features.
    card = (movies / "README.md").read_text()
    assert "## Quality scores" in card and f"{summary['metrics']['clip_t']['mean']:.4f}" in card
    assert card_features(load_card(movies / "README.md")) == movie_features()


def test_rerun_resumes_and_other_models_are_refused(movies, tiny_clip, tmp_path, capsys):
    assert main(["score", str(movies), "--clip-model", str(tiny_clip), "--no-progress"]) == 0
    path = movies / "scores.jsonl"
    before = path.read_text()
    # A run killed in the middle of a line: the same command scores that movie again, nothing else.
    lines = before.splitlines()
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    assert main(["score", str(movies), "--clip-model", str(tiny_clip), "--no-progress"]) == 0
    after = path.read_text().splitlines()
    assert after[0] == lines[0] and len(after) == 2
    redone, earlier = json.loads(after[1]), json.loads(lines[1])
    assert redone["id"] == earlier["id"]
    assert np.allclose(redone["clip_t_per_keyframe"], earlier["clip_t_per_keyframe"], atol=1e-5)
    before = path.read_text()
    capsys.readouterr()

    other = save_tiny_clip(tmp_path / "other-clip", seed=1)
    capsys.readouterr()
    assert main(["score", str(movies), "--clip-model", str(other), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "other models" in err and "--rescore" in err and err.count("\n") == 1
    assert path.read_text() == before
    assert main(["score", str(movies), "--clip-model", str(other), "--rescore", "--no-progress"]) == 0
    assert path.read_text() != before
    assert main(["score", str(movies), "--clip-model", str(tiny_clip), "--rescore", "--no-progress"]) == 0
    capsys.readouterr()


class SameFrameRenderer(Renderer):
    """Every keyframe the same flat picture, and every character's portrait that picture too."""

    name = "same-frame"
    width = height = 64
    frame = np.full((64, 64, 3), (180, 90, 40), dtype=np.uint8)

    def render_frames(self, script):
        for _ in range(script.num_frames):
            yield self.frame

    def portraits(self, script):
        return portraits_bytes({c.name: self.frame for c in script.characters})

    def provenance(self, script):
        return RendererProvenance(name=self.name, width=64, height=64)


def test_identical_frames_are_fully_consistent_and_match_their_portraits(tiny_clip, tmp_path, capsys):
    out = tmp_path / "same"
    generate(GenerateOptions(out=out, movies=1, seed=1), ProceduralWriter("1x2x3"), SameFrameRenderer(), progress=False)
    assert main(["score", str(out), "--clip-model", str(tiny_clip), "--no-progress"]) == 0
    [line] = map(json.loads, (out / "scores.jsonl").read_text().splitlines())
    assert line["character_consistency"] == pytest.approx(1.0, abs=1e-5)
    assert line["style_consistency"] == pytest.approx(1.0, abs=1e-5)
    # The portrait is the raw picture, the keyframes went through H.264: the same up to the codec's rounding.
    [(script, frames)] = list(read_movies(out))
    image, _, _ = _reference_embeddings(tiny_clip, np.concatenate([frames[:1], SameFrameRenderer.frame[None]]), ["x"])
    assert line["character_portrait_similarity"] == pytest.approx(float(image[0] @ image[1]), abs=1e-5)
    assert line["character_portrait_similarity"] > 0.99
    capsys.readouterr()


def test_a_matching_prompt_scores_above_an_unrelated_one(movies, tiny_clip, tmp_path):
    """A CLIP whose text projection the test sets: the matching prompt lands on the frame, the other opposite it."""
    from transformers import CLIPModel, CLIPTokenizer

    from moviellm_data.scoring.embedders import TextImageModel
    from moviellm_data.scoring.metrics import prompt_alignment

    [(script, frames)] = list(read_movies(movies))[:1]
    matching, unrelated = "a red car in the rain", "an empty page"
    model = CLIPModel.from_pretrained(str(tiny_clip)).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(tiny_clip))
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    with torch.no_grad():
        pixels = ((torch.from_numpy(frames[:1]).float() / 255 - mean) / std).permute(0, 3, 1, 2)
        target = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)[0]
        pooled = model.text_model(**tokenizer([matching, unrelated], padding=True, return_tensors="pt")).pooler_output
    # u with <u, t_matching> = 1 and <u, t_unrelated> = -1; the projection sends t to <u, t> * target.
    u = torch.linalg.pinv(pooled.double()) @ torch.tensor([1.0, -1.0], dtype=torch.float64)
    constructed = save_tiny_clip(tmp_path / "constructed", text_projection=(target[:, None].double() @ u[None]).float())

    clip = TextImageModel(str(constructed), device="cpu")
    image, _ = clip.embed_frames([frames[0], frames[0]])
    alignment = prompt_alignment(image, clip.embed_texts([matching, unrelated]))
    assert alignment[0] == pytest.approx(1.0, abs=1e-4) and alignment[1] == pytest.approx(-1.0, abs=1e-4)
    assert alignment[0] > alignment[1]


def test_against_the_same_folder_reports_no_difference(movies, tiny_clip, capsys):
    assert main(["score", str(movies), "--clip-model", str(tiny_clip), "--against", str(movies), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| metric |" in out and "+0.0000" in out
    report = json.loads((movies / f"comparison-{movies.name}.json").read_text())
    for name, row in report["metrics"].items():
        if name == "character_portrait_similarity":
            assert row["movies"] == 0 and row["difference"] is None
        else:
            assert row["movies"] == 2 and row["difference"] == 0.0 and row["ours"] == row["theirs"]
    assert (movies / f"comparison-{movies.name}.md").read_text().count("+0.0000") == 3
    assert (movies / f"comparison-{movies.name}.png").read_bytes().startswith(b"\x89PNG")


def test_two_renderings_of_the_same_scripts_are_compared(movies, tiny_clip, tmp_path, capsys):
    from moviellm_data.pipeline import render

    redrawn = tmp_path / "redrawn"
    render([movies], redrawn, SameFrameRenderer(), progress=False)
    assert main(["score", str(redrawn), "--clip-model", str(tiny_clip), "--against", str(movies), "--no-progress"]) == 0
    capsys.readouterr()
    report = json.loads((redrawn / f"comparison-{movies.name}.json").read_text())
    ours = {json.loads(x)["id"]: json.loads(x) for x in (redrawn / "scores.jsonl").read_text().splitlines()}
    theirs = {json.loads(x)["id"]: json.loads(x) for x in (movies / "scores.jsonl").read_text().splitlines()}
    row = report["metrics"]["style_consistency"]
    expected = np.mean([ours[i]["style_consistency"] - theirs[i]["style_consistency"] for i in ours])
    assert row["movies"] == 2 and row["difference"] == pytest.approx(expected) and row["difference"] > 0
    assert "comparison" not in (movies / "README.md").read_text()


def test_bad_inputs_are_one_sentence(movies, tiny_clip, tmp_path, capsys):
    cases = [
        (["score", str(tmp_path / "nowhere"), "--clip-model", str(tiny_clip)], "is not a dataset folder"),
        (["score", str(movies), "--clip-model", str(tmp_path / "no-model"), "--rescore"], "does not exist"),
        (["score", str(movies), "--clip-model", str(tiny_clip), "--rescore",
          "--image-model-for-consistency", str(tmp_path)], "cannot load the model"),
    ]
    shutil.copy(movies / "scores.jsonl", tmp_path / "kept.jsonl")
    for args, message in cases:
        assert main([*args, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert (movies / "scores.jsonl").read_text() == (tmp_path / "kept.jsonl").read_text()  # nothing lost
    # A consistency model that is not a text-image model is fine; a CLIP model that is not one is refused.
    save_dinov2(tmp_path / "dino")
    capsys.readouterr()
    assert main(["score", str(movies), "--clip-model", str(tmp_path / "dino"), "--rescore", "--no-progress"]) == 2
    assert "not a text-image model" in capsys.readouterr().err
    assert main(["score", str(movies), "--clip-model", str(tiny_clip), "--image-model-for-consistency",
                 str(tmp_path / "dino"), "--rescore", "--no-progress"]) == 0
    line = json.loads((movies / "scores.jsonl").read_text().splitlines()[0])
    assert line["models"]["consistency"] == str(tmp_path / "dino") and 0 < line["style_consistency"] <= 1
    capsys.readouterr()
    assert main(["score", str(movies), "--clip-model", str(tiny_clip), "--rescore", "--no-progress"]) == 0
    capsys.readouterr()


def test_score_help_works_without_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None; "
            "from moviellm_data.cli import main; sys.exit(main(['score', '--help']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0 and "--image-model-for-consistency" in result.stdout and "--against" in result.stdout
