"""What an image model is told for each keyframe, and with which seed.

Prompts follow the reference's form, ``generate an image in <style> style: <shot>``, where ``<style>``
is the learned style token (or the plain keyword when no style embedding is used) and every character
name is replaced by the character's lookalike description and outfit colour, so that the same person
looks the same in every frame without the model ever seeing a name it cannot draw.
"""

from __future__ import annotations

import hashlib
import re

from ..script import Character, MovieScript, Shot, Style

FRAME_SEED_SCHEMES = ("movie", "dreamframe")
# The reference seeds frame i with 20 + i in every movie.
DREAMFRAME_SEED_OFFSET = 20


def replace_names(text: str, characters: list[Character]) -> str:
    """``text`` with each character's name (as a whole word) replaced by its visual description.

    Longer names are replaced first so that "Ann Lee" is not broken up by a character called "Ann".
    """
    for character in sorted(characters, key=lambda c: len(c.name), reverse=True):
        text = re.sub(rf"(?<![\w-]){re.escape(character.name)}(?![\w-])", character.visual_description(), text)
    return text


def frame_prompt(script: MovieScript, shot: Shot, style_word: str) -> str:
    """The prompt of one keyframe: the style word, then the shot with names replaced."""
    return f"generate an image in {style_word} style: {replace_names(shot.prompt, script.characters)}"


def style_image_prompts(style: Style, subjects: list[str], count: int) -> list[str]:
    """Prompts of the ``count`` images the style embedding is learned from.

    Each names the keyword and the style phrases (emphasised ones first) with one of ``subjects`` (the
    movie's locations: common places make good style carriers) as the scene.
    """
    phrases = [p for p in style.emphasised] + [p for p in style.phrases if p not in style.emphasised]
    tail = ", ".join(phrases)
    subjects = subjects or ["a street"]
    prompts = []
    for k in range(count):
        subject = subjects[k % len(subjects)]
        prompt = f"generate an image in {style.keyword} style: {subject}"
        prompts.append(f"{prompt}, {tail}" if tail else prompt)
    return prompts


def portrait_prompt(character: Character, style_word: str) -> str:
    """The prompt of a character's reference portrait (used by reference-image adapters)."""
    return (f"generate an image in {style_word} style: a portrait of {character.visual_description()}, "
            "upper body, facing the camera, plain background")


def stable_seed(*parts: object) -> int:
    """A 63-bit seed that depends only on ``parts`` (stable across processes, machines and ranks)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def frame_seed(movie_id: str, index: int, seed: int = 0, scheme: str = "movie") -> int:
    """The noise seed of keyframe ``index`` of movie ``movie_id``.

    ``movie`` (default) derives it from the renderer seed, the movie id and the frame index, so frames of
    different movies never share their starting noise; ``dreamframe`` reproduces the reference's
    ``20 + index`` (the same noise for frame i of every movie).
    """
    if scheme == "movie":
        return stable_seed("moviellm-frame", seed, movie_id, index)
    if scheme == "dreamframe":
        return DREAMFRAME_SEED_OFFSET + index + seed
    raise ValueError(f"unknown frame seed scheme {scheme!r}; use one of {', '.join(FRAME_SEED_SCHEMES)}")
