"""Training records: conversations read from movie datasets and LLaVA-style JSON, without decoding any video.

A :class:`Record` is what the data stream holds, orders and groups: the conversation's text, where its movie's
frames or features are, and a length estimate. Decoding (features, frames, tokens) happens later, only for the
records of this process's own batches (`moviellm_model.training.encoding`).

Sources (each streams; nothing reads a whole dataset into memory):

- :class:`MovieSource`: our movie datasets (`moviellm generate`): a dataset folder, tar paths, or a Hub repo id read
  through `datasets` streaming. Each movie becomes one conversation with its QA as turns (`conversation="movie"`) or
  one conversation per QA pair (`conversation="qa"`, the layout `moviellm export llamavid` writes). Frames come from
  the movie's mp4 (`frames="tower"`: the frozen vision tower encodes them during training) or from the features an
  export wrote (`frames="features"`, `features_dir` = the export folder).
- :class:`LlavaJsonSource`: the original LLaMA-VID / LLaVA JSON (LongVideoQA layout: `video` key relative to a video
  folder, `<image>` placeholders in the first human turn; features as our safetensors, or the original `.pkl` only
  with `allow_pickle`, read by a restricted unpickler). JSON arrays are parsed incrementally, JSON lines too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..input_format import IMAGE_TOKEN, MOVIE_PROMPT_END, MOVIE_PROMPT_START

__all__ = [
    "DataError",
    "LlavaJsonSource",
    "Movie",
    "MovieSource",
    "Record",
    "VisualRef",
    "iter_json_array",
    "split_movie_message",
]



class DataError(ValueError):
    """A training source is misconfigured (one sentence for the user); bad samples are skipped, not raised."""


@dataclass(frozen=True)
class VisualRef:
    """Where a movie's visual input is, not yet read.

    `kind` is "features" (EVA features: safetensors `feats` [T, 1 + P, C] or a legacy `.pkl`) or "frames" (an mp4
    decoded at 1 fps). The data is a file path, bytes, or a byte range of a tar file (`path`, `offset`, `size`).
    """

    kind: str
    path: str | None = None
    data: bytes | None = None
    offset: int | None = None
    size: int | None = None
    num_frames: int | None = None

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.path is None:
            raise FileNotFoundError("no file")
        with open(self.path, "rb") as handle:
            if self.offset is None:
                return handle.read()
            handle.seek(self.offset)
            data = handle.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.path} ends inside a member (truncated tar)")
        return data


@dataclass
class Movie:
    """The long video of a conversation's first user turn: `prefix + <image>subtitle per frame + suffix`."""

    subtitles: list[str]
    prefix: str
    suffix: str
    visual: VisualRef


@dataclass
class Record:
    """One training conversation before tokenisation (cheap: no decoded frames or features).

    `turns` alternate user / assistant text, starting with the user; when `movie` is set, the first user turn is the
    movie (`Movie.prefix` ... `Movie.suffix`) and `turns[0][0]` is ignored. `question` is the bare question that
    conditions the movie's context tokens (the Q-Former text).
    """

    id: str
    source: str
    turns: list[tuple[str, str]]
    question: str = ""
    movie: Movie | None = None
    error: str | None = None  # set when the record is corrupt: it is skipped and counted downstream

    @property
    def modality(self) -> str:
        """"text", or the movie's visual kind ("features" or "frames"): batches never mix the two visual kinds."""
        return "text" if self.movie is None else self.movie.visual.kind

    @property
    def approx_length(self) -> int:
        """Length estimate for grouping: words of every turn plus the movie's frames (as the original's word count)."""
        words = sum(len(user.split()) + len(answer.split()) for user, answer in self.turns)
        if self.movie is not None:
            words += sum(len(s.split()) for s in self.movie.subtitles) + 2 * len(self.movie.subtitles)
        return words


def split_movie_message(text: str, tokens_per_frame: int = 1) -> tuple[str, list[str], str] | None:
    """Split a user message holding a movie into `(prefix, subtitles, suffix)`; None when it has no placeholder.

    Each frame is `tokens_per_frame` consecutive placeholders followed by its subtitle (the LongVideoQA layout
    writes two per frame, LlamaVidProcessor prompts one). The last frame's subtitle ends where the movie wrapper's end
    sentence or the first line break starts. Raises ValueError when the placeholders do not group into frames.
    """
    pieces = text.split(IMAGE_TOKEN)
    count = len(pieces) - 1
    if count == 0:
        return None
    if count % tokens_per_frame:
        raise ValueError(f"{count} placeholders are not {tokens_per_frame} per frame")
    subtitles = []
    for frame in range(count // tokens_per_frame):
        first = frame * tokens_per_frame + 1
        if any(pieces[first:first + tokens_per_frame - 1]):
            raise ValueError(f"text between the placeholders of frame {frame} ({tokens_per_frame} per frame)")
        subtitles.append(pieces[first + tokens_per_frame - 1])
    tail = subtitles.pop()
    cut = tail.find(MOVIE_PROMPT_END)
    if cut < 0:
        cut = tail.find("\n")
    if cut < 0:
        cut = len(tail)
    subtitles.append(tail[:cut])
    return pieces[0], subtitles, tail[cut:]


def bare_question(suffix: str) -> str:
    """The question in a movie turn's suffix (the wrapper's end sentence and line breaks removed)."""
    return suffix.replace(MOVIE_PROMPT_END, "", 1).strip()


# ------------------------------------------------------------------------------------------------ movie datasets


def _qa_pairs(script: dict, qa_types: set[str] | None) -> list[dict]:
    return [qa for qa in script.get("qa", []) if qa_types is None or qa.get("type") in qa_types]


@dataclass
class MovieSource:
    """Our movie datasets as training conversations.

    Args:
        path: a dataset folder, a `.tar` shard, a list of shards, or a Hub repo id (`ORG/NAME`, streamed).
        conversation: "movie" (one conversation per movie, its QA as turns) or "qa" (one per QA pair).
        frames: "tower" (decode the mp4; the frozen vision tower encodes the frames during training) or "features"
            (read `features_dir/videos/<movie id>.safetensors`, written by `moviellm export llamavid --model`).
        features_dir: the export folder when `frames="features"`.
        qa_types: QA types to train on (default: all).
        wrapper: frame the movie with the MovieLLM movie prompt (what inference uses).
        name: a label for logs and counters.
    """

    path: str | list[str]
    conversation: str = "movie"
    frames: str = "tower"
    features_dir: str | None = None
    qa_types: list[str] | None = None
    wrapper: bool = True
    name: str = "movies"
    revision: str | None = None
    _shards: list[Path] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.conversation not in ("movie", "qa"):
            raise DataError(f"conversation must be 'movie' or 'qa', not {self.conversation!r}.")
        if self.frames not in ("tower", "features"):
            raise DataError(f"frames must be 'tower' or 'features', not {self.frames!r}.")
        if self.frames == "features":
            if not self.features_dir or not (Path(self.features_dir) / "videos").is_dir():
                raise DataError(f"source {self.name}: frames=features needs features_dir, the folder written by "
                                "`moviellm export llamavid --model` (it holds videos/<movie id>.safetensors).")
        if not self.is_hub:
            self._shards = _resolve_shards(self.path, self.name)

    @property
    def is_hub(self) -> bool:
        path = self.path
        return isinstance(path, str) and not Path(path).exists() and path.count("/") == 1 and not path.startswith(".")

    # -- size ---------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Conversations per pass, counted from the manifest (or the shards' scripts) without reading any video."""
        qa_types = set(self.qa_types) if self.qa_types else None
        counts = self._manifest_qa_counts()
        if counts is None:
            from moviellm_data.shards import count_qa_types

            counts = [count_qa_types(script.get("qa", [])) for script in self._iter_scripts_only()]
        total = 0
        for per_type in counts:
            pairs = sum(n for kind, n in per_type.items() if qa_types is None or kind in qa_types)
            total += (1 if pairs else 0) if self.conversation == "movie" else pairs
        return total

    def _manifest_qa_counts(self) -> list[dict[str, int]] | None:
        """QA counts per movie from the dataset's manifest, when it describes exactly these shards."""
        from moviellm_data.folder import MANIFEST_NAME
        from moviellm_data.shards import read_manifest

        if self.is_hub:
            try:
                from huggingface_hub import hf_hub_download

                manifest = Path(hf_hub_download(self.path, MANIFEST_NAME, repo_type="dataset", revision=self.revision))
            except Exception:  # noqa: BLE001 - no manifest: count from the stream
                return None
            shards = None
        else:
            folder = Path(self.path) if isinstance(self.path, str) and Path(self.path).is_dir() else None
            if folder is None or not (folder / MANIFEST_NAME).is_file():
                return None
            manifest, shards = folder / MANIFEST_NAME, {s.name for s in self._shards}
        entries = read_manifest(manifest)
        if any(entry.qa is None for entry in entries):
            return None
        if shards is not None and {entry.shard for entry in entries} != shards:
            return None  # the folder holds shards the manifest does not list (or the reverse): count them instead
        return [entry.qa for entry in entries]

    def _iter_scripts_only(self) -> Iterator[dict]:
        for _, script, _ in self._iter_samples(with_video=False):
            if script is not None:
                yield script

    # -- reading --------------------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Record]:
        qa_types = set(self.qa_types) if self.qa_types else None
        for key, script, video in self._iter_samples(with_video=self.frames == "tower"):
            if script is None:
                yield Record(id=key, source=self.name, turns=[], error=video)  # video holds the reason here
                continue
            pairs = _qa_pairs(script, qa_types)
            if not pairs:
                continue
            visual = video if self.frames == "tower" else self._features_ref(script["id"])
            subtitles = [frame.get("subtitle") or "" for frame in script.get("timeline", [])]
            groups = [pairs] if self.conversation == "movie" else [[pair] for pair in pairs]
            for index, group in enumerate(groups):
                question = group[0]["question"]
                prefix, suffix = (MOVIE_PROMPT_START, f"{MOVIE_PROMPT_END}\n{question}") if self.wrapper else ("", f"\n{question}")
                record_id = script["id"] if self.conversation == "movie" else f"{script['id']}_{_qa_index(script, group[0]):03d}"
                yield Record(
                    id=record_id,
                    source=self.name,
                    turns=[(qa["question"], qa["answer"]) for qa in group],
                    question=question,
                    movie=Movie(subtitles=subtitles, prefix=prefix, suffix=suffix, visual=visual),
                )

    def _features_ref(self, movie_id: str) -> VisualRef:
        return VisualRef(kind="features", path=str(Path(self.features_dir) / "videos" / f"{movie_id}.safetensors"))

    def _iter_samples(self, with_video: bool) -> Iterator[tuple[str, dict | None, VisualRef | str | None]]:
        """(key, script dict or None when corrupt, mp4 reference or the corruption reason)."""
        if self.is_hub:
            yield from self._iter_hub(with_video)
            return
        for shard in self._shards:
            yield from _iter_tar_movies(shard, with_video)

    def _iter_hub(self, with_video: bool) -> Iterator[tuple[str, dict | None, VisualRef | str | None]]:
        try:
            import datasets
        except ImportError as err:  # pragma: no cover - datasets is a core dependency
            raise DataError(f"reading {self.path} from the Hub needs `datasets` ({err}).") from None
        try:
            stream = datasets.load_dataset(self.path, split="train", streaming=True, revision=self.revision)
            if "mp4" in (stream.features or {}):
                stream = stream.cast_column("mp4", datasets.Video(decode=False))
            if not with_video:
                stream = stream.remove_columns([c for c in stream.column_names or [] if c not in ("__key__", "json")])
        except Exception as err:  # noqa: BLE001 - any failure to open the stream is the user's repo id or network
            raise DataError(f"cannot stream {self.path} from the Hub ({_first_line(err)}); check the repo id and "
                            "HF_ENDPOINT / your token.") from None
        for sample in stream:
            key = sample.get("__key__") or "?"
            script = sample.get("json")
            if not isinstance(script, dict) or "id" not in script:
                yield key, None, "its json member is missing or not a movie script"
                continue
            video = None
            if with_video:
                mp4 = sample.get("mp4") or {}
                data = mp4.get("bytes") if isinstance(mp4, dict) else None
                if not data:
                    yield key, None, "its mp4 member is missing"
                    continue
                video = VisualRef(kind="frames", data=data, num_frames=len(script.get("timeline", [])))
            yield key, script, video


def _qa_index(script: dict, pair: dict) -> int:
    return next(i for i, qa in enumerate(script.get("qa", [])) if qa is pair)


def _resolve_shards(path: str | list[str], name: str) -> list[Path]:
    if isinstance(path, (list, tuple)):
        shards = [Path(p) for p in path]
    else:
        root = Path(path)
        if root.is_dir():
            shards = sorted(root.glob("*.tar"))
            if not shards:
                raise DataError(f"source {name}: {root} holds no .tar shards; give a folder made by `moviellm generate`.")
        else:
            shards = [root]
    missing = [str(s) for s in shards if not s.is_file()]
    if missing:
        raise DataError(f"source {name}: {missing[0]} does not exist; give a dataset folder, .tar shards or ORG/NAME.")
    return shards


def _iter_tar_movies(shard: Path, with_video: bool) -> Iterator[tuple[str, dict | None, VisualRef | str | None]]:
    """Movies of one tar, grouped by full member key (folder included) as webdataset does; mp4s as byte ranges.

    The tar is read by the data side's shard reader (`moviellm_data.shards.iter_tar_members`): only the json members'
    bytes are read here, the videos are located and fetched per batch. A truncated or unreadable tar ends that shard's
    movies with one corrupt record; the run goes on.
    """
    from moviellm_data.errors import ShardError
    from moviellm_data.shards import iter_tar_members, key_id

    def finish(key: str, found: dict) -> tuple[str, dict | None, VisualRef | str | None]:
        if "json" not in found:
            return key, None, f"{shard}:{key} has no json member"
        try:
            script = json.loads(found["json"].data)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return key, None, f"{shard}:{key}.json is not valid JSON ({err})"
        if not isinstance(script, dict) or "id" not in script or "timeline" not in script:
            return key, None, f"{shard}:{key}.json is not a movie script"
        if script["id"] != key_id(key):
            return key, None, f"{shard}:{key}.json holds the script of movie {script['id']}, not of {key_id(key)}"
        video = None
        if with_video:
            if "mp4" not in found:
                return key, None, f"{shard}:{key} has no mp4 member"
            mp4 = found["mp4"]
            video = VisualRef(kind="frames", path=str(shard), offset=mp4.offset, size=mp4.size,
                              num_frames=len(script["timeline"]))
        return key, script, video

    last = None
    try:
        for key, members in iter_tar_members(shard, load=lambda ext: ext == "json"):
            last = key
            yield finish(key, members)
    except ShardError as err:
        yield f"{shard.name}:{last or '?'}", None, str(err)


# -------------------------------------------------------------------------------------------------- LLaVA JSON


def iter_json_array(path: str | Path, chunk_size: int = 1 << 20) -> Iterator[dict]:
    """Objects of a JSON array file (or of a JSON-lines file), parsed incrementally: memory holds one chunk."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as handle:
        buffer = handle.read(chunk_size)
        position = _skip_space(buffer, 0)
        in_array = position < len(buffer) and buffer[position] == "["
        if in_array:
            position += 1
        eof = False
        while True:
            position = _skip_space(buffer, position)
            if in_array and position < len(buffer) and buffer[position] in ",]":
                if buffer[position] == "]":
                    return
                position = _skip_space(buffer, position + 1)
            if position >= len(buffer) and eof:
                return
            try:
                item, end = decoder.raw_decode(buffer, position)
            except json.JSONDecodeError:
                if eof:
                    raise DataError(f"{path} is not valid JSON near character {position} of the remaining text.") from None
                more = handle.read(chunk_size)
                eof = not more
                buffer = buffer[position:] + more
                position = 0
                continue
            yield item
            position = end
            if len(buffer) - position < chunk_size // 2 and not eof:
                more = handle.read(chunk_size)
                eof = not more
                buffer = buffer[position:] + more
                position = 0


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


@dataclass
class LlavaJsonSource:
    """The original LLaMA-VID / LLaVA training JSON (LongVideoQA layout), streamed.

    Args:
        path: the JSON array (or JSON lines) file.
        video_folder: the folder `video` paths are relative to (the original's `--video_folder`). Default: the JSON's
            folder; our exports' paths are also found under its `videos/` subfolder.
        allow_pickle: read the original `.pkl` feature files (pickle can run code: only for files you trust; they are
            read by a restricted unpickler that admits numpy arrays only).
        name: a label for logs and counters.
    """

    path: str
    video_folder: str | None = None
    allow_pickle: bool = False
    name: str = "llava"

    def __post_init__(self) -> None:
        if not Path(self.path).is_file():
            raise DataError(f"source {self.name}: {self.path} is not a file; give the LLaVA-style training JSON.")
        if self.video_folder is None:
            self.video_folder = str(Path(self.path).parent)

    def __len__(self) -> int:
        return sum(1 for _ in iter_json_array(self.path))

    def __iter__(self) -> Iterator[Record]:
        for index, item in enumerate(iter_json_array(self.path)):
            yield self._record(index, item)

    def _record(self, index: int, item: object) -> Record:
        record_id = str(item.get("id", index)) if isinstance(item, dict) else str(index)
        try:
            turns = _llava_turns(item)
        except ValueError as err:
            return Record(id=record_id, source=self.name, turns=[], error=f"sample {record_id}: {err}")
        video = item.get("video")
        if item.get("image") is not None:
            return Record(id=record_id, source=self.name, turns=[], error=f"sample {record_id}: image samples are not "
                          "part of long-video tuning (stage 3); only videos and text")
        if not video:
            if any(IMAGE_TOKEN in user for user, _ in turns):
                return Record(id=record_id, source=self.name, turns=[],
                              error=f"sample {record_id} has <image> placeholders but no video")
            return Record(id=record_id, source=self.name, turns=turns)
        try:
            visual, inputs = self._visual(str(video))
        except (OSError, ValueError) as err:
            return Record(id=record_id, source=self.name, turns=[], error=f"sample {record_id}: {err}")
        first = turns[0][0]
        legacy = str(video).endswith(".pkl")
        if inputs is not None and first.count(IMAGE_TOKEN) == 1:
            # The original layout: one <image> that the trainer replaces by the .pkl's `inputs` (frames + subtitles).
            first = first.replace(IMAGE_TOKEN, inputs.replace("...", "") if legacy else inputs)
        if any(IMAGE_TOKEN in user for user, _ in turns[1:]):
            return Record(id=record_id, source=self.name, turns=[], error=f"sample {record_id}: placeholders after the "
                          "first human turn (a long video goes in the first turn only)")
        placeholders = first.count(IMAGE_TOKEN)
        frames = visual.num_frames or item.get("num_frames")
        if not placeholders:
            return Record(id=record_id, source=self.name, turns=[], error=f"sample {record_id}: its first human turn "
                          "has no <image> placeholder for its video")
        if not frames:
            return Record(id=record_id, source=self.name, turns=[], error=f"sample {record_id}: one <image> with a "
                          f"video file is a short video; long-video samples need one placeholder group per frame")
        try:
            prefix, subtitles, suffix = split_movie_message(first, max(1, placeholders // int(frames)))
        except ValueError as err:
            return Record(id=record_id, source=self.name, turns=[], error=f"sample {record_id}: {err}")
        if len(subtitles) != frames:
            return Record(id=record_id, source=self.name, turns=[], error=f"sample {record_id}: {len(subtitles)} frames "
                          f"in the text but {frames} in {video}")
        movie = Movie(subtitles=subtitles, prefix=prefix, suffix=suffix, visual=visual)
        return Record(id=record_id, source=self.name, turns=turns, question=bare_question(suffix), movie=movie)

    def _visual(self, video: str) -> tuple[VisualRef, str | None]:
        """The visual reference of a `video` path and, for feature files, their `inputs` string (if stored)."""
        path = _find_video(Path(self.video_folder), video)
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as handle:
                shape = handle.get_slice("feats").get_shape()
                metadata = handle.metadata() or {}
            return VisualRef(kind="features", path=str(path), num_frames=int(shape[0])), metadata.get("inputs")
        if suffix == ".pkl":
            if not self.allow_pickle:
                raise ValueError(f"{video} is a pickle; pickles can run code, so they are read only with "
                                 "allow_pickle: true (--allow-pickle) for files you trust")
            feats, inputs = load_legacy_pickle(path)
            return VisualRef(kind="features", path=str(path), num_frames=int(feats.shape[0])), inputs
        return VisualRef(kind="frames", path=str(path), num_frames=_mp4_frame_count(path)), None


def _mp4_frame_count(path: Path) -> int | None:
    """Frames of a video file from its header (no decoding); None when the container does not say."""
    import av

    try:
        with av.open(str(path)) as container:
            frames = container.streams.video[0].frames if container.streams.video else 0
    except (av.FFmpegError, IndexError) as err:
        raise ValueError(f"{path.name} is not a readable video ({err})") from None
    return frames or None


def _find_video(folder: Path, video: str) -> Path:
    for candidate in (folder / video, folder / "videos" / video):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"video file {video} is not in {folder} (nor in its videos/ folder)")


def _llava_turns(item: object) -> list[tuple[str, str]]:
    if not isinstance(item, dict) or not isinstance(item.get("conversations"), list):
        raise ValueError("it has no `conversations` list")
    messages = [m for m in item["conversations"] if isinstance(m, dict)]
    if messages and messages[0].get("from") == "gpt":
        messages = messages[1:]  # the original drops a leading gpt turn
    turns = []
    for user, answer in zip(messages[::2], messages[1::2]):
        if user.get("from") != "human" or answer.get("from") != "gpt":
            raise ValueError("its turns do not alternate human / gpt")
        turns.append((str(user.get("value", "")), str(answer.get("value", ""))))
    if not turns:
        raise ValueError("it has no human / gpt turn pair")
    return turns


class _NumpyOnlyUnpickler:
    """Unpickles the original extractor's {"feats": ndarray, "inputs": str} and nothing else (no arbitrary globals)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("builtins", "dict"), ("collections", "OrderedDict"),
    }

    @classmethod
    def load(cls, handle) -> object:
        import pickle

        allowed = cls._ALLOWED

        class Restricted(pickle.Unpickler):
            def find_class(self, module, name):
                if (module, name) not in allowed:
                    raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a feature file")
                return super().find_class(module, name)

        return Restricted(handle).load()


def load_legacy_pickle(path: str | Path):
    """`feats` [T, 257, C] and `inputs` of an original `.pkl` feature file (numpy arrays only, nothing executable)."""
    import pickle

    import numpy as np

    try:
        with open(path, "rb") as handle:
            data = _NumpyOnlyUnpickler.load(handle)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError) as err:
        raise ValueError(f"{path} is not an original LLaMA-VID feature pickle ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("feats"), np.ndarray) or data["feats"].ndim != 3:
        raise ValueError(f"{path} does not hold {{'feats': [T, 257, C] array, 'inputs': str}}")
    return data["feats"], data.get("inputs")


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__

