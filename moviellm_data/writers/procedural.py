"""The offline writer: deterministic movie scripts from genre grammars, no model and no network.

Same theme + seed gives the same script. Questions are derived from the facts the writer chose (who
is in which shot, where each scene happens, what order things happen in), so every answer is true by
construction and points at the frames it rests on.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

from .. import __version__
from ..script import (
    QA,
    Act,
    Character,
    DialogueLine,
    FrameSpan,
    MovieScript,
    Provenance,
    Scene,
    Shot,
    Style,
    WriterProvenance,
)
from ..sizes import StorySize, parse_size
from . import grammar
from .base import MovieRequest, Writer

MIDDLE_BEATS = ("journey", "discovery", "conflict", "setback", "twist")


def infer_genre(theme: str) -> str | None:
    """The genre a theme names or hints at, or None when it says nothing about genre."""
    lowered = theme.lower()
    for genre, hints in grammar.GENRE_HINTS:
        if any(h in lowered for h in hints):
            return genre
    return None


@dataclass
class _Cast:
    hero: Character
    ally: Character
    rival: Character
    extras: list[Character]
    genders: dict[str, str]  # name -> "female" / "male"

    @property
    def everyone(self) -> list[Character]:
        return [self.hero, self.ally, self.rival, *self.extras]


class ProceduralWriter(Writer):
    """Writes movies from the genre grammars in :mod:`moviellm_data.writers.grammar`.

    Args:
        size: a preset name (``tiny``, ``small``, ``reference``), ``"AxSxF"`` or a :class:`StorySize`.
        dialogue_ratio: share of shots that carry a spoken line (the reference has about half).
    """

    name = "procedural"
    # 2: casts agree with themselves (name, gender, age, pronouns) and one central object runs through the script.
    version = "2"

    def __init__(self, size: StorySize | str = "tiny", dialogue_ratio: float = 0.5) -> None:
        self.size = parse_size(size)
        if not 0.0 <= dialogue_ratio <= 1.0:
            raise ValueError("dialogue_ratio must be between 0 and 1")
        self.dialogue_ratio = dialogue_ratio

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "size": str(self.size), "dialogue_ratio": self.dialogue_ratio}

    # ------------------------------------------------------------------------------------------ write

    def write(self, request: MovieRequest) -> MovieScript:
        rng = random.Random(f"{request.theme}\x00{request.seed}")
        genre = grammar.GENRES[infer_genre(request.theme) or _weighted_choice(rng, grammar.GENRE_WEIGHTS)]
        cast = self._make_cast(rng)
        # One central object for the whole script: the one the theme names ("a dragon's egg"), else one of the genre's;
        # goals and lines that would name another of the genre's objects are left out of this movie.
        central = object_named_by(request.theme) or rng.choice(genre.objects)
        genre = replace(genre, goals=_not_naming_others(genre.goals, central, genre),
                        lines=_not_naming_others(genre.lines, central, genre))
        slots = {
            "hero": cast.hero.name,
            "ally": cast.ally.name,
            "rival": cast.rival.name,
            "object": central,
            "goal": rng.choice(genre.goals),
            "threat": rng.choice(genre.threats),
        }
        for role in ("hero", "ally", "rival"):
            he, him, his = grammar.PRONOUNS[cast.genders[getattr(cast, role).name]]
            slots.update({f"{role}_he": he, f"{role}_him": him, f"{role}_his": his})
        slots["object_title"] = _title_case(_strip_article(slots["object"]))
        locations = self._pick_locations(rng, genre)
        style = self._make_style(rng, genre)
        beats = self._fit_arc(rng.choice(genre.arcs))
        acts = [self._make_act(rng, genre, cast, slots, beat, locations) for beat in beats]
        title = self._make_title(rng, genre, slots, locations)
        overview = self._make_overview(genre, request.theme, slots, acts)
        script = MovieScript(
            id=request.id,
            title=title,
            theme=request.theme,
            genre=genre.name,
            overview=overview,
            style=style,
            locations=locations,
            characters=cast.everyone,
            acts=acts,
            qa=[],
            provenance=Provenance(
                writer=WriterProvenance(name=self.name, model=f"procedural-grammar-v{self.version}", seed=request.seed),
                package_version=__version__,
            ),
        )
        script.qa = _QuestionWriter(rng, script, cast, slots).all_questions()
        # Re-validate so that QA evidence is checked against the timeline.
        return MovieScript.model_validate(script.model_dump())

    # ------------------------------------------------------------------------------------------ parts

    def _make_cast(self, rng: random.Random) -> _Cast:
        colours = rng.sample(grammar.OUTFIT_COLOURS, 4)
        used_names: set[str] = set()
        used_features: set[str] = set()
        genders: dict[str, str] = {}

        def person(i: int, role: str, description: str) -> Character:
            # One draw decides gender and age; the name, the lookalike noun, the feature and the pronouns follow it.
            gender = rng.choice(("female", "male"))
            age = rng.choice(grammar.LOOKALIKE_AGES)
            name = rng.choice([n for n in grammar.NAMES_BY_GENDER[gender] if n not in used_names])
            used_names.add(name)
            genders[name] = gender
            fitting = grammar.features_for(gender, age)
            feature = rng.choice([f for f in fitting if f not in used_features] or fitting)  # tell people apart
            used_features.add(feature)
            build = rng.choice(grammar.LOOKALIKE_BUILDS)
            noun = grammar.PERSON_NOUNS[gender, age]
            # Short on purpose: renderers put this in place of the name, and CLIP reads only 77 tokens.
            return Character(
                name=name,
                role=role,
                lookalike=f"{'an' if age[0] in 'aeiou' else 'a'} {age} {noun} with {feature}",
                description=f"{description}; {grammar.PRONOUNS[gender][0]} is {build}",
                outfit_colour=colours[i],
            )

        hero = person(0, "main", "the protagonist")
        ally_is_main = rng.random() < 0.5
        ally = person(1, "main" if ally_is_main else "supporting", "the protagonist's closest companion")
        rival = person(2, "supporting", "the antagonist")
        extras = [person(3, "supporting", "a minor character")] if rng.random() < 0.3 else []
        return _Cast(hero, ally, rival, extras, genders)

    def _pick_locations(self, rng: random.Random, genre: grammar.Genre) -> list[str]:
        count = rng.randint(12, 15)
        own = list(genre.places)
        common = [p for p in grammar.COMMON_PLACES if p not in own]
        picked = own + rng.sample(common, count - len(own))
        rng.shuffle(picked)
        return picked

    def _make_style(self, rng: random.Random, genre: grammar.Genre) -> Style:
        phrases = rng.sample(genre.style_phrases, min(len(genre.style_phrases), rng.randint(3, 4)))
        return Style(keyword=rng.choice(genre.style_keywords), phrases=phrases, emphasised=[rng.choice(phrases)])

    def _fit_arc(self, arc: tuple[str, ...]) -> list[str]:
        """Stretch or shrink a genre arc to the number of acts, keeping its opening and ending."""
        n = self.size.acts
        if n == 1:
            return [arc[len(arc) // 2]]
        if n <= len(arc):
            return [arc[round(i * (len(arc) - 1) / (n - 1))] for i in range(n)]
        extra = [MIDDLE_BEATS[i % len(MIDDLE_BEATS)] for i in range(n - len(arc))]
        return list(arc[:-2]) + extra + list(arc[-2:])

    def _make_act(
        self,
        rng: random.Random,
        genre: grammar.Genre,
        cast: _Cast,
        slots: dict[str, str],
        beat_name: str,
        locations: list[str],
    ) -> Act:
        beat = grammar.BEATS[beat_name]
        # Acts lean on the genre's own places (a horror movie spends its time in the cellar, not the diner).
        own = [p for p in locations if p in genre.places]
        first = rng.choice(own) if own and rng.random() < 0.7 else rng.choice(locations)
        others = [p for p in locations if p != first]
        act_places = [first, *rng.sample(others, rng.randint(1, min(3, self.size.scenes_per_act)) - 1)]
        fill = {**slots, "place": act_places[0], "place2": act_places[-1] if len(act_places) > 1 else rng.choice(locations)}
        events = list(beat["events"])
        rng.shuffle(events)
        scenes = []
        for s in range(self.size.scenes_per_act):
            place = act_places[s % len(act_places)]
            event = events[s % len(events)].format(**{**slots, "place": place})
            scenes.append(self._make_scene(rng, genre, cast, slots, beat["mood"], place, event))
        used_places = list(dict.fromkeys(scene.location for scene in scenes))
        return Act(
            title=rng.choice(beat["titles"]).format(**fill),
            locations=used_places,
            summary=rng.choice(beat["summaries"]).format(**fill),
            scenes=scenes,
        )

    def _make_scene(
        self,
        rng: random.Random,
        genre: grammar.Genre,
        cast: _Cast,
        slots: dict[str, str],
        mood: str,
        place: str,
        event: str,
    ) -> Scene:
        named = [c for c in cast.everyone if re.search(rf"\b{re.escape(c.name)}\b", event)]
        if not named:  # "everyone shares a meal" and the like
            named = list(cast.everyone)
        present = list(named)
        for c in cast.everyone:
            if c not in present and rng.random() < 0.3:
                present.append(c)
        shots = [
            self._make_shot(rng, genre, present, slots, mood, place, first=(k == 0))
            for k in range(self.size.shots_per_scene)
        ]
        return Scene(title=_sentence_case(event), location=place, summary=f"At the {place}, {event}.", shots=shots)

    def _make_shot(
        self,
        rng: random.Random,
        genre: grammar.Genre,
        present: list[Character],
        slots: dict[str, str],
        mood: str,
        place: str,
        first: bool,
    ) -> Shot:
        focus = rng.choice(present)
        others = [c for c in present if c is not focus]
        other = rng.choice(others) if others else None
        features = grammar.PLACE_FEATURES.get(place, grammar.PLACE_FEATURES["default"])
        options = [
            f"standing by {rng.choice(features)}",
            f"sitting at {rng.choice(features)}",
            f"squatting beside {rng.choice(features)}",
            f"looking at {slots['object']}",
            f"holding {slots['object']}",
        ]
        if first:
            options = [f"walking through the {place}", f"standing by {rng.choice(features)}"]
        elif other is not None:
            options += [f"talking to {other.name}", f"looking at {other.name}"]
            if mood in ("joyful", "sad"):
                options.append(f"hugging {other.name}")
        doing = rng.choice(options)
        in_frame = [focus]
        mentioned = other is not None and other.name in doing
        if mentioned:
            in_frame.append(other)
        elif other is not None and rng.random() < 0.3:
            in_frame.append(other)
        expression = rng.choice(grammar.EXPRESSIONS[mood])
        action = f"{focus.name} is {doing}"
        who = action if len(in_frame) == 1 or mentioned else f"{action} while {other.name} looks on"
        dialogue = None
        if rng.random() < self.dialogue_ratio:
            speaker = rng.choice(in_frame)
            # Address someone else in the scene; alone, a character only says lines that name nobody.
            addressee = next((c for c in in_frame if c is not speaker), None)
            addressee = addressee or next((c for c in present if c is not speaker), None)
            pool = genre.lines + grammar.LINES_BY_MOOD[mood] if rng.random() < 0.6 else grammar.LINES_BY_MOOD[mood]
            if addressee is None:
                pool = tuple(line for line in pool if "{other}" not in line)
            text = rng.choice(pool).format(other=addressee.name if addressee else "", object=slots["object"])
            dialogue = DialogueLine(speaker=speaker.name, text=_sentence_case(text))
        return Shot(
            prompt=f"at the {place}, {who}, {expression}",
            location=place,
            characters=[c.name for c in in_frame],
            action=action,
            expression=expression,
            dialogue=dialogue,
        )

    def _make_title(self, rng: random.Random, genre: grammar.Genre, slots: dict[str, str], locations: list[str]) -> str:
        obj = _title_case(_strip_article(slots["object"]))
        place = _title_case(rng.choice(locations))
        patterns = (
            f"The {obj}",
            f"{slots['hero']} and the {obj}",
            f"Beyond the {place}",
            f"Last Light at the {place}",
            f"{slots['hero']}'s {_title_case(genre.name.replace('-', ' '))} Story"
            if genre.name != "drama"
            else f"The Quiet {place}",
            f"Letters from the {place}",
            f"The {place} Affair",
        )
        return rng.choice(patterns)

    def _make_overview(self, genre: grammar.Genre, theme: str, slots: dict[str, str], acts: list[Act]) -> str:
        parts = [f"{_sentence_case(theme)}, told as a {genre.name} movie: {slots['hero']} dreams of {slots['goal']}, "
                 f"and everything turns on {slots['object']}."]
        parts.append(acts[0].summary)
        if len(acts) > 2:
            parts.append("Along the way, " + _lower_first(acts[len(acts) // 2].summary))
        if len(acts) > 1:
            parts.append("In the end, " + _lower_first(acts[-1].summary))
        return " ".join(parts)


class _QuestionWriter:
    """Writes every QA type from facts the script itself states."""

    def __init__(self, rng: random.Random, script: MovieScript, cast: _Cast, slots: dict[str, str]) -> None:
        self.rng = rng
        self.script = script
        self.cast = cast
        self.slots = slots

    def all_questions(self) -> list[QA]:
        return [
            *self.overview(),
            *self.plot(),
            *self.temporal(),
            *self.acts(),
            *self.scenes(),
            *self.shots(),
        ]

    def _frames_with(self, name: str) -> list[int]:
        return [i for i, shot in enumerate(self.script.shots()) if name in shot.characters]

    def overview(self) -> list[QA]:
        question = self.rng.choice(("What is this movie about?", "Describe the events of the movie."))
        return [QA(type="overview", question=question, answer=self.script.overview, evidence=self.script.full_span())]

    def plot(self) -> list[QA]:
        full = self.script.full_span()
        hero, rival = self.cast.hero, self.cast.rival
        out = [
            QA(
                type="plot",
                question=f"What is {hero.name} trying to achieve?",
                answer=f"{hero.name} is set on {self.slots['goal']}.",
                evidence=full,
            )
        ]
        frames = self._frames_with(rival.name)
        if frames:
            out.append(
                QA(
                    type="plot",
                    question=f"Who stands in {hero.name}'s way?",
                    answer=f"{rival.name}, {rival.visual_description()}.",
                    evidence=FrameSpan(start=frames[0], end=frames[-1]),
                )
            )
        out.append(
            QA(
                type="plot",
                question="Which object is at the centre of the story?",
                answer=f"{_sentence_case(self.slots['object'])}.",
                evidence=full,
            )
        )
        return out

    def temporal(self) -> list[QA]:
        acts = self.script.acts
        summaries = [_lower_first(a.summary).rstrip(".") for a in acts]
        if len(summaries) == 1:
            chronology = _sentence_case(summaries[0]) + "."
        else:
            middle = "".join(f" Then, {s}." for s in summaries[1:-1])
            chronology = f"First, {summaries[0]}.{middle} Finally, {summaries[-1]}."
        out = [
            QA(
                type="temporal",
                question="Outline the chronological sequence of events in the movie.",
                answer=chronology,
                evidence=self.script.full_span(),
            )
        ]
        scenes = [(a, s, sc) for a, act in enumerate(acts) for s, sc in enumerate(act.scenes)]
        if len(scenes) >= 2:
            first, second = sorted(self.rng.sample(range(len(scenes)), 2))
            (a1, s1, early), (a2, s2, late) = scenes[first], scenes[second]
            if early.title != late.title:
                pair = [early, late]
                self.rng.shuffle(pair)
                out.append(
                    QA(
                        type="temporal",
                        question=f"Which happens first: \"{pair[0].title}\" or \"{pair[1].title}\"?",
                        answer=f"\"{early.title}\" happens first, at the {early.location}; "
                        f"\"{late.title}\" comes later, at the {late.location}.",
                        evidence=FrameSpan(
                            start=self.script.scene_span(a1, s1).start, end=self.script.scene_span(a2, s2).end
                        ),
                    )
                )
        return out

    def acts(self) -> list[QA]:
        out = []
        for a, act in enumerate(self.script.acts):
            span = self.script.act_span(a)
            if self.rng.random() < 0.5:
                places = _join([f"the {p}" for p in act.locations])
                out.append(QA(type="act", question=f"Where does the part \"{act.title}\" take place?",
                              answer=f"At {places}.", evidence=span))
            else:
                out.append(QA(type="act", question=f"What happens in the part \"{act.title}\"?",
                              answer=act.summary, evidence=span))
        return out

    def scenes(self) -> list[QA]:
        out = []
        for a, act in enumerate(self.script.acts):
            for s, scene in enumerate(act.scenes):
                span = self.script.scene_span(a, s)
                if self.rng.random() < 0.5:
                    names = list(dict.fromkeys(n for shot in scene.shots for n in shot.characters))
                    out.append(QA(type="scene", question=f"Who appears at the {scene.location} when "
                                  f"{_lower_first(scene.title)}?", answer=f"{_join(names)}.", evidence=span))
                else:
                    out.append(QA(type="scene", question=f"Where does this happen: {_lower_first(scene.title)}?",
                                  answer=f"At the {scene.location}.", evidence=span))
        return out

    def shots(self) -> list[QA]:
        out = []
        frame = 0
        for act in self.script.acts:
            for scene in act.scenes:
                spoken = [(frame + k, shot) for k, shot in enumerate(scene.shots) if shot.dialogue]
                if spoken:
                    i, shot = self.rng.choice(spoken)
                    out.append(QA(
                        type="shot",
                        question=f"What is happening when {shot.dialogue.speaker} says \"{shot.dialogue.text}\"?",
                        answer=f"At the {shot.location}, {_lower_first(shot.action)}.",
                        evidence=FrameSpan(start=i, end=i),
                    ))
                else:
                    k = self.rng.randrange(len(scene.shots))
                    shot = scene.shots[k]
                    who = self.script.character(shot.characters[0])
                    out.append(QA(
                        type="shot",
                        question=f"What colour is {who.name} wearing at the {shot.location}?",
                        answer=f"{_sentence_case(who.outfit_colour)}.",
                        evidence=FrameSpan(start=frame + k, end=frame + k),
                    ))
                frame += len(scene.shots)
        return out


def _object_phrase(obj: str) -> str:
    """``a dragon's egg`` -> ``dragon's egg``: how an object is recognised in a text, article or not."""
    return _strip_article(obj).lower()


def object_named_by(theme: str) -> str | None:
    """The grammar's object a theme names (``"a dragon's egg"``), or None; the longest one when several match."""
    lowered = theme.lower()
    named = [obj for g in grammar.GENRES.values() for obj in g.objects
             if re.search(rf"\b{re.escape(_object_phrase(obj))}\b", lowered)]
    return max(named, key=len) if named else None


def _head_noun(obj: str) -> str:
    return obj.lower().split()[-1]


def _not_naming_others(texts: tuple[str, ...], central: str, genre: grammar.Genre) -> tuple[str, ...]:
    """The texts that name none of the genre's objects but the central one (by their head noun: "the egg")."""
    others = {_head_noun(o) for o in genre.objects} - {_head_noun(central)}
    kept = tuple(t for t in texts if not any(re.search(rf"\b{re.escape(n)}s?\b", t.lower()) for n in others))
    return kept or texts


def _weighted_choice(rng: random.Random, weights: dict[str, float]) -> str:
    names = sorted(weights)
    return rng.choices(names, weights=[weights[n] for n in names])[0]


def _strip_article(text: str) -> str:
    return re.sub(r"^(a|an|the)\s+", "", text, flags=re.IGNORECASE)


def _title_case(text: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in text.split())


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lower_first(text: str) -> str:
    # Keep capitals of names ("Mara finds...") but lower a leading article or pronoun.
    first = text.split(" ", 1)[0]
    if first in {"A", "An", "The", "At", "In", "With", "Everyone"}:
        return text[:1].lower() + text[1:]
    return text


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
