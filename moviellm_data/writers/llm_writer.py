"""The LLM writer: a theme expanded into a movie script in three levels by any OpenAI-compatible model.

Per movie (after the MovieLLM reference, with our own prompts in :mod:`moviellm_data.prompts`):

1. **outline**: title, genre, overview, style keyword and phrases, locations, characters (lookalike,
   outfit colour) and the acts, each with a QA pair;
2. **scenes**, one request per act: the act's scenes (each at one of the act's locations) and a QA
   pair over them;
3. **shots**, one request per scene: keyframes as strict "at <place>, <who> is <doing what>,
   <expression>" prompts, dialogue lines placed on keyframes, and two QA pairs;
4. **movie questions**: overview, plot and temporal QA over the whole story.

Every level is validated against a schema built from the level above (known names and places, exact
counts) plus consistency checks, and repaired when it fails (see :mod:`moviellm_data.llm.client`).
Acts of a movie are expanded concurrently, and so are scenes and movies, under one request limit.
QA evidence is the span of frames the question was written from: an act's frames for act QA, a
scene's frames for scene and shot QA, the whole movie for overview, plot and temporal QA.

A movie is either returned complete and valid or reported as a :class:`WriteFailure` with its reason;
every validated answer is cached at once, so a rerun after a crash or a failure pays only for what is
missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .. import __version__
from ..errors import MovieLLMError, ScriptValidationError
from ..llm.cache import ResponseCache
from ..llm.client import ChatCall, ChatClient, ChatSettings, LLMFatalError, RequestFailed
from ..llm.cost import Usage
from .story_answers import (
    GENRES,
    PLOT_QUESTIONS,
    MovieQAAnswer,
    VERBS,
    movie_qa_problems,
    outline_model,
    outline_problems,
    parse_prompt,
    scenes_model,
    scenes_problems,
    shots_model,
    shots_problems,
)
from ..prompts import PromptTemplate, load_prompts
from ..script import (QA, Act, Character, DialogueLine, FrameSpan, MovieScript, Provenance, Scene, Shot, Style,
                      WriterProvenance, describe_validation_error)
from ..sizes import StorySize, parse_size
from .base import MovieRequest, WriteFailure, Writer

logger = logging.getLogger(__name__)

_DONE = object()
#: Movies in flight at once through the Batch API (each level of them goes out as one batch).
BATCH_MOVIES_IN_FLIGHT = 10_000


class LLMWriteError(MovieLLMError):
    """The LLM writer could not write a movie (raised by :meth:`LLMWriter.write`)."""


def default_locations(size: StorySize) -> int:
    """How many locations an outline asks for: 12 for the reference size, fewer for small movies."""
    return max(3, min(12, 2 * size.acts + 2))


def dialogue_lines(size: StorySize, ratio: float) -> int:
    """Dialogue lines per scene: ``ratio`` of its keyframes, rounded half up (reference: 6 of 11)."""
    return min(size.shots_per_scene, int(size.shots_per_scene * ratio + 0.5))


@dataclass
class _MovieState:
    request: MovieRequest
    usage: Usage
    model: str | None = None


class LLMWriter(Writer):
    """Writes movie scripts with a chat model behind any OpenAI-compatible endpoint.

    Args:
        settings: endpoint, model, key, sampling, retry, concurrency and cost settings.
        size: a preset (``tiny``, ``small``, ``reference``), ``"AxSxF"`` or a :class:`StorySize`.
        dialogue_ratio: share of keyframes that carry a spoken line.
        locations: locations the outline must name (default: from the size, 12 for the reference).
        cache_path: the SQLite answer cache; None disables caching (every run pays again).
        prompts_dir: a folder whose ``<name>.txt`` files replace the built-in templates.
        movies_in_flight: movies being written at once (default: twice the request concurrency, so
            that request slots stay busy while some movies wait on their previous level).
    """

    name = "openai"

    def __init__(
        self,
        settings: ChatSettings,
        size: StorySize | str = "tiny",
        dialogue_ratio: float = 0.5,
        locations: int | None = None,
        cache_path: str | Path | None = None,
        prompts_dir: str | Path | None = None,
        movies_in_flight: int | None = None,
    ) -> None:
        self.settings = settings
        self.size = parse_size(size)
        if not 0.0 <= dialogue_ratio <= 1.0:
            raise ValueError("dialogue_ratio must be between 0 and 1")
        self.dialogue_ratio = dialogue_ratio
        self.locations = locations or default_locations(self.size)
        if self.locations < 1:
            raise ValueError("locations must be at least 1")
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.prompts: dict[str, PromptTemplate] = load_prompts(prompts_dir)
        self.movies_in_flight = movies_in_flight or 2 * settings.concurrency
        self.usage = Usage(cost=0.0 if settings.price is not None else None)
        self.attempts = 0
        self.structured_mode: str | None = None

    def describe(self) -> dict:
        """What determines the scripts (for ``pipeline.yaml``): no endpoint, key, cache or limits."""
        s = self.settings
        return {
            "name": self.name,
            "model": s.model,
            "size": str(self.size),
            "locations": self.locations,
            "dialogue_ratio": self.dialogue_ratio,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "prompts": {t.name: f"v{t.version} sha256:{t.sha256}" for t in self.prompts.values()},
        }

    # ------------------------------------------------------------------------------------- public API

    def write(self, request: MovieRequest) -> MovieScript:
        """Write one movie; raises :class:`LLMWriteError` with the reason when it cannot."""
        for item in self.write_many([request]):
            if isinstance(item, WriteFailure):
                raise LLMWriteError(f"movie {request.id} could not be written: {item.reason}.")
            return item
        raise LLMWriteError(f"movie {request.id} could not be written.")

    def write_many(self, requests: Iterable[MovieRequest]) -> Iterator[MovieScript | WriteFailure]:
        """Write movies concurrently, yielding each script or failure as soon as it is done.

        The requests run on an asyncio loop in a background thread, so they keep going while the
        caller renders the movies already yielded. Closing the iterator early cancels what is in
        flight (answers already validated stay cached). Raises :class:`LLMFatalError` when the
        endpoint refuses every request.
        """
        results: queue.Queue = queue.Queue()
        runner = _Runner(self, iter(requests), results)  # consumed lazily, a window of movies at a time
        thread = threading.Thread(target=runner.run, name="moviellm-llm-writer", daemon=True)
        thread.start()
        try:
            while True:
                item = results.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
                runner.taken()  # only now may another movie start: finished scripts never pile up unrendered
        finally:
            runner.stop()
            thread.join()

    # ---------------------------------------------------------------------------------- one movie

    async def _write_movie(self, client: ChatClient, request: MovieRequest, state: _MovieState) -> MovieScript:
        seed = request.seed % (2**31)  # servers differ in seed width; 31 bits fit all of them
        size = self.size

        async def ask(call: ChatCall):
            try:
                result = await client.ask(call)
            except RequestFailed as failed:
                state.usage.add(failed.usage)  # a failed movie's spending is recorded with it, not lost
                raise
            state.usage.add(result.usage)
            state.model = state.model or result.model
            return result.value

        outline = await ask(self._outline_call(request, seed))
        async with asyncio.TaskGroup() as acts_group:
            act_tasks = [acts_group.create_task(ask(self._scenes_call(request, seed, outline, a)))
                         for a in range(size.acts)]
        acts = [t.result() for t in act_tasks]
        async with asyncio.TaskGroup() as group:
            qa_task = group.create_task(ask(self._movie_qa_call(request, seed, outline, acts)))
            shot_tasks = {
                (a, s): group.create_task(ask(self._shots_call(request, seed, outline, acts, a, s)))
                for a in range(size.acts)
                for s in range(size.scenes_per_act)
            }
        shots = {key: task.result() for key, task in shot_tasks.items()}
        return self._assemble(request, state, outline, acts, shots, qa_task.result())

    # -------------------------------------------------------------------------------------- calls

    def _call(self, request: MovieRequest, level: str, user: str, model, check, seed: int) -> ChatCall:
        return ChatCall(
            label=f"movie {request.id} {level}",
            system=self.prompts["system"].render(),
            user=user,
            response_model=model,
            schema_name=model.__name__,
            seed=seed,
            check=check,
        )

    def _outline_call(self, request: MovieRequest, seed: int) -> ChatCall:
        size = self.size
        constraints = {"level": "outline", "theme": request.theme, "acts": size.acts, "locations": self.locations,
                       "main_characters": [1, 2], "supporting_characters": [0, 1]}
        user = self.prompts["outline"].render(
            theme=request.theme, genres=", ".join(GENRES), locations=self.locations, acts=size.acts,
            scenes_per_act=size.scenes_per_act, shots_per_scene=size.shots_per_scene,
            constraints=_compact(constraints),
        )
        return self._call(request, "outline", user, outline_model(size.acts, self.locations), outline_problems, seed)

    def _scenes_call(self, request: MovieRequest, seed: int, outline, a: int) -> ChatCall:
        act = outline.acts[a]
        count = self.size.scenes_per_act
        constraints = {"level": "scenes", "theme": request.theme, "act": a + 1, "scenes": count,
                       "locations": list(act.locations)}
        user = self.prompts["scenes"].render(
            outline=_outline_text(outline), act_number=a + 1, acts=len(outline.acts), act_title=act.title,
            act_summary=act.summary, act_locations=", ".join(act.locations), scenes=count,
            constraints=_compact(constraints),
        )
        model = scenes_model(count, tuple(dict.fromkeys(act.locations)))
        return self._call(request, f"act {a + 1} scenes", user, model, scenes_problems, seed)

    def _shots_call(self, request: MovieRequest, seed: int, outline, acts, a: int, s: int) -> ChatCall:
        act, scene = outline.acts[a], acts[a].scenes[s]
        shots, lines = self.size.shots_per_scene, dialogue_lines(self.size, self.dialogue_ratio)
        names = tuple(c.name for c in outline.characters)
        if s > 0:
            previous = acts[a].scenes[s - 1].summary
        elif a > 0:
            previous = f"(end of the previous act) {outline.acts[a - 1].summary}"
        else:
            previous = "none, this scene opens the movie"
        constraints = {"level": "shots", "theme": request.theme, "act": a + 1, "scene": s + 1, "shots": shots,
                       "dialogue": lines, "location": scene.location, "locations": list(outline.locations),
                       "characters": list(names), "verbs": list(VERBS), "qa": 2}
        style = outline.style
        user = self.prompts["shots"].render(
            overview=outline.overview,
            style=f"{style.keyword}; " + ", ".join(style.phrases),
            characters="\n".join(f"- {c.name} ({c.role}): {c.lookalike}, wearing {c.outfit_colour}; {c.description}"
                                 for c in outline.characters),
            act_number=a + 1, act_title=act.title, act_summary=act.summary, previous=previous,
            scene_number=s + 1, scene_title=scene.title, scene_location=scene.location, scene_summary=scene.summary,
            shots=shots, dialogue=lines, verbs=", ".join(VERBS), locations=", ".join(outline.locations),
            names=", ".join(names), constraints=_compact(constraints),
        )
        model = shots_model(shots, lines, tuple(outline.locations), names)
        return self._call(request, f"act {a + 1} scene {s + 1} shots", user, model,
                          lambda answer: shots_problems(answer, names), seed)

    def _movie_qa_call(self, request: MovieRequest, seed: int, outline, acts) -> ChatCall:
        story = []
        for a, (plan, answer) in enumerate(zip(outline.acts, acts)):
            story.append(f"Act {a + 1}, {plan.title}: {plan.summary}")
            story += [f"  Scene {s + 1} at the {sc.location}, {sc.title}: {sc.summary}" for s, sc in enumerate(answer.scenes)]
        constraints = {"level": "movie_qa", "theme": request.theme, "plot": PLOT_QUESTIONS}
        user = self.prompts["movie_qa"].render(title=outline.title, overview=outline.overview, story="\n".join(story),
                                               plot=PLOT_QUESTIONS, constraints=_compact(constraints))
        return self._call(request, "movie questions", user, MovieQAAnswer, movie_qa_problems, seed)

    # ----------------------------------------------------------------------------------- assembly

    def _assemble(self, request: MovieRequest, state: _MovieState, outline, acts, shots, movie_qa) -> MovieScript:
        """The validated MovieScript with QA evidence spans computed from where each QA was written."""
        script_acts = []
        for a, (plan, answer) in enumerate(zip(outline.acts, acts)):
            scenes = []
            for s, scene in enumerate(answer.scenes):
                frames = shots[(a, s)]
                spoken = {line.shot - 1: DialogueLine(speaker=line.speaker, text=line.text.strip())
                          for line in frames.dialogue}
                scene_shots = []
                for k, frame in enumerate(frames.shots):
                    _, action, _ = parse_prompt(frame.prompt)  # checked by shots_problems
                    scene_shots.append(Shot(
                        prompt=frame.prompt.strip().rstrip("."),
                        location=frame.location,
                        characters=list(frame.characters),
                        action=action,
                        expression=frame.expression.strip(),
                        dialogue=spoken.get(k),
                    ))
                scenes.append(Scene(title=scene.title.strip(), location=scene.location, summary=scene.summary.strip(),
                                    shots=scene_shots))
            script_acts.append(Act(title=plan.title.strip(), locations=list(plan.locations),
                                   summary=plan.summary.strip(), scenes=scenes))
        style = outline.style
        draft = MovieScript(
            id=request.id,
            title=outline.title.strip(),
            theme=request.theme,
            genre=outline.genre,
            overview=outline.overview.strip(),
            style=Style(keyword=style.keyword.strip(), phrases=list(style.phrases), emphasised=list(style.emphasised)),
            locations=list(outline.locations),
            characters=[Character(name=c.name.strip(), role=c.role, lookalike=c.lookalike.strip(),
                                  outfit_colour=c.outfit_colour.strip(), description=c.description.strip())
                        for c in outline.characters],
            acts=script_acts,
            provenance=Provenance(
                writer=WriterProvenance(
                    name=self.name,
                    model=state.model or self.settings.model,
                    prompts=[t.record() for t in self.prompts.values()],
                    temperature=self.settings.temperature,
                    seed=request.seed,
                ),
                package_version=__version__,
            ),
        )
        full = draft.full_span()

        def qa(kind: str, pair, span: FrameSpan) -> QA:
            return QA(type=kind, question=pair.question.strip(), answer=pair.answer.strip(), evidence=span)

        items = [qa("overview", movie_qa.overview, full), *(qa("plot", p, full) for p in movie_qa.plot),
                 qa("temporal", movie_qa.temporal, full)]
        for a, (plan, answer) in enumerate(zip(outline.acts, acts)):
            items += [qa("act", plan.qa, draft.act_span(a)), qa("act", answer.qa, draft.act_span(a))]
        for a in range(len(acts)):
            for s in range(len(acts[a].scenes)):
                span = draft.scene_span(a, s)
                first, second = shots[(a, s)].qa
                items += [qa("scene", first, span), qa("shot", second, span)]
        draft.qa = items
        return MovieScript.model_validate(draft.model_dump())


class _Runner:
    """Runs one ``write_many`` on its own event loop thread and hands results to a queue."""

    def __init__(self, writer: LLMWriter, requests: Iterator[MovieRequest], results: queue.Queue) -> None:
        self.writer = writer
        self.requests = requests
        self.results = results
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._main: asyncio.Task | None = None
        self._stopping = threading.Event()

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as err:  # noqa: BLE001 - handed to the consumer thread, which raises it
            self.results.put(err)
        finally:
            self.results.put(_DONE)

    def taken(self) -> None:
        """The consumer took a finished movie (called from its thread): its slot goes to the next movie."""
        slots = self._slots
        if slots is not None:
            self._in_loop(slots.release)

    def stop(self) -> None:
        """Cancel everything in flight (called from the consumer thread)."""
        self._stopping.set()
        main = self._main
        if main is not None:
            self._in_loop(main.cancel)

    def _in_loop(self, callback) -> None:
        """Run `callback` on the runner's event loop (from another thread); nothing once the loop has finished."""
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(callback)
            except RuntimeError:
                pass  # the loop already finished

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        if self._stopping.is_set():
            return
        writer = self.writer
        cache = ResponseCache(writer.cache_path)
        # Movies are taken from the (possibly huge, lazily planned) requests only when a slot frees up. Through the
        # Batch API a large window of movies is in flight at once, so each level of those movies is one batch.
        window = max(writer.movies_in_flight, BATCH_MOVIES_IN_FLIGHT) if writer.settings.batch else writer.movies_in_flight
        # A slot is held from a movie's start until the consumer takes the finished movie (see `taken`).
        slots = self._slots = asyncio.Semaphore(window)
        try:
            async with ChatClient(
                writer.settings, cache,
                repair_template=writer.prompts["repair"].body,
                json_template=writer.prompts["json_mode"].body,
            ) as client:
                try:
                    async with asyncio.TaskGroup() as group:
                        for request in self.requests:
                            await slots.acquire()
                            group.create_task(self._movie(client, cache, slots, request))
                finally:
                    writer.usage.add(client.usage)
                    writer.attempts += client.attempts
                    writer.structured_mode = client.structured_mode
                    logger.info("LLM writer: %s", client.usage.summary())
        except* LLMFatalError as group:
            raise _first(group) from None
        finally:
            cache.close()

    async def _movie(self, client: ChatClient, cache: ResponseCache, slots: asyncio.Semaphore,
                     request: MovieRequest) -> None:
        delivered = False
        try:
            delivered = await self._write_one(client, cache, request)
        finally:
            if not delivered:
                slots.release()  # nothing reaches the consumer, who would otherwise release it

    async def _write_one(self, client: ChatClient, cache: ResponseCache, request: MovieRequest) -> bool:
        """Write one movie and hand the script or failure to the consumer; True once handed over."""
        state = _MovieState(request, Usage(cost=0.0 if self.writer.settings.price is not None else None))
        try:
            item: MovieScript | WriteFailure = await self.writer._write_movie(client, request, state)
        except* LLMFatalError:
            raise
        except* RequestFailed as group:
            item = WriteFailure(request, str(_first(group)))
        except* (ValidationError, ScriptValidationError) as group:  # the assembled script broke the contract
            err = _first(group)
            reason = describe_validation_error(err) if isinstance(err, ValidationError) else str(err)
            item = WriteFailure(request, f"the assembled script is not valid: {reason}")
        if state.usage.requests:
            cache.record_movie_usage(request.id, state.usage.to_dict())
        logger.info("movie %s %s: %s", request.id, "failed" if isinstance(item, WriteFailure) else "written",
                    state.usage.summary())
        self.results.put(item)
        return True


def _first(group: BaseException) -> BaseException:
    """The first leaf exception of a (nested) exception group."""
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _outline_text(outline) -> str:
    lines = [f"Title: {outline.title}", f"Overview: {outline.overview}",
             "Characters: " + "; ".join(f"{c.name} ({c.role}, {c.lookalike}, wearing {c.outfit_colour})"
                                        for c in outline.characters),
             "Locations: " + ", ".join(outline.locations), "Acts:"]
    lines += [f"{a + 1}. {act.title} (at {', '.join(act.locations)}): {act.summary}" for a, act in enumerate(outline.acts)]
    return "\n".join(lines)
