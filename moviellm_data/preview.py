"""Looking at movies before trusting them: contact sheets and a static HTML preview of a dataset folder.

``moviellm preview DIR --out HTMLDIR`` writes ``HTMLDIR/index.html`` (every movie with its first frames,
and the dataset's contact sheet) and one page per movie: its keyframes in order with the subtitle shown
on each, the QA pairs with their evidence frames outlined, the script outline (acts, scenes, shots),
and a contact-sheet PNG. Pages are plain files with no external resources, so they open from disk.

Frames are streamed from the mp4 one at a time (a reference movie has 1,331 keyframes); contact sheets
seek to the few frames they show. Drawing is deterministic: the same dataset gives the same PNG bytes,
which keeps ``moviellm push`` (which uploads the dataset's contact sheet) idempotent.
"""

from __future__ import annotations

import html
import io
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from string import Template

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from . import __version__
from .errors import ConfigError, ShardError, stage
from .fileio import atomic_write_text, make_writable_folder, replacing
from .folder import CONTACT_SHEET_NAME, MANIFEST_NAME
from .renderers.storyboard import colour_of
from .script import MovieScript
from .shards import count_samples, iter_movie_samples, read_manifest
from .video import iter_mp4_frames

TEMPLATES = Path(__file__).parent / "templates" / "preview"
PREVIEW_MARKER = ".moviellm-preview"
SHEET_BACKGROUND = (24, 24, 28)
SHEET_TEXT = (235, 235, 235)


# ------------------------------------------------------------------------------------------ frames


def iter_frames(mp4: bytes, source: str = "mp4") -> Iterator[np.ndarray]:
    """Yield the frames of an mp4 as uint8 [H, W, 3] arrays one at a time, in presentation order."""
    return iter_mp4_frames(mp4, source)


# Decoding on is cheaper than seeking when the next wanted frame is this close.
_SEQUENTIAL_LIMIT = 24


def frames_at(mp4: bytes, indices: Sequence[int], source: str = "mp4") -> dict[int, np.ndarray]:
    """The frames at ``indices`` (frame ``i`` is shown at ``i / fps`` s); indices past the end are left out.

    Seeks to the keyframe before a wanted frame rather than decoding the whole movie.
    """
    wanted = sorted({int(i) for i in indices if int(i) >= 0})
    found: dict[int, np.ndarray] = {}
    if not wanted:
        return found
    try:
        with av.open(io.BytesIO(mp4), mode="r") as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 1)
            per_frame = 1.0 / (rate * float(stream.time_base))  # pts units per frame
            decoder, position = None, -1
            for target in wanted:
                if decoder is None or target <= position or target - position > _SEQUENTIAL_LIMIT:
                    container.seek(int(target * per_frame), stream=stream, backward=True, any_frame=False)
                    decoder = container.decode(stream)
                frame = None
                for frame in decoder:
                    position = round(frame.pts / per_frame) if frame.pts is not None else position + 1
                    if position >= target:
                        break
                else:
                    break  # the stream ended: no later index exists either
                if frame is not None and position == target:
                    found[target] = frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, IndexError) as err:
        raise ShardError(f"{source} is not a decodable mp4 video ({err}); regenerate the movie.") from None
    return found


def evenly_spaced(count: int, wanted: int) -> list[int]:
    """Up to ``wanted`` indices spread over ``range(count)``, first and last included."""
    if count <= 0 or wanted <= 0:
        return []
    if wanted >= count:
        return list(range(count))
    if wanted == 1:
        return [0]
    return sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)})


# ---------------------------------------------------------------------------------- contact sheets


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def thumbnail(frame: np.ndarray | Image.Image, width: int) -> Image.Image:
    """A frame scaled to ``width`` pixels wide (never enlarged), aspect ratio kept."""
    image = frame if isinstance(frame, Image.Image) else Image.fromarray(frame)
    if image.width <= width:
        return image.copy()
    return image.resize((width, max(1, round(image.height * width / image.width))), Image.Resampling.LANCZOS)


def contact_sheet(rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]], thumb_width: int = 160,
                  columns: int | None = None, gap: int = 6) -> Image.Image:
    """Frames laid out in labelled rows, each frame captioned.

    Args:
        rows: ``(row label, [(caption, frame), ...])``; a row longer than ``columns`` wraps.
        thumb_width: width of one frame in the sheet (frames are never enlarged beyond their size).
        columns: frames per line; default: the longest row.
    """
    rows = [(label, list(cells)) for label, cells in rows if cells]
    if not rows:
        raise ValueError("a contact sheet needs at least one frame")
    columns = columns or max(len(cells) for _, cells in rows)
    first = rows[0][1][0][1]
    cell_w = min(thumb_width, first.shape[1])
    cell_h = max(1, round(first.shape[0] * cell_w / first.shape[1]))
    text = max(10, min(14, cell_w // 10))
    label_h, caption_h = text + 8, text + 6
    lines: list[tuple[str | None, list]] = []
    for label, cells in rows:
        for start in range(0, len(cells), columns):
            lines.append((label if start == 0 else None, cells[start:start + columns]))
    width = gap + columns * (cell_w + gap)
    height = gap + sum((label_h if label is not None else 0) + cell_h + caption_h + gap for label, _ in lines)
    sheet = Image.new("RGB", (width, height), SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    y = gap
    for label, cells in lines:
        if label is not None:
            draw.text((gap, y + 2), _fit(label, width - 2 * gap, text), fill=SHEET_TEXT, font=_font(text))
            y += label_h
        for j, (caption, frame) in enumerate(cells):
            x = gap + j * (cell_w + gap)
            tile = Image.fromarray(frame).resize((cell_w, cell_h), Image.Resampling.LANCZOS)
            sheet.paste(tile, (x, y))
            draw.text((x, y + cell_h + 2), _fit(caption, cell_w, text), fill=SHEET_TEXT, font=_font(text))
        y += cell_h + caption_h + gap
    return sheet


def _fit(text: str, width: int, size: int) -> str:
    """``text`` shortened with an ellipsis until it fits ``width`` pixels."""
    font = _font(size)
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def clock(seconds: float) -> str:
    """Seconds as 0:05 or 1:02:03."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def movie_sheet_rows(script: MovieScript, frames: dict[int, np.ndarray]) -> list[tuple[str, list]]:
    """One row per act, each frame captioned with its time."""
    rows: dict[int, list] = {}
    for index in sorted(frames):
        act = script.timeline[index].act if index < len(script.timeline) else 0
        rows.setdefault(act, []).append((clock(script.timeline[index].time), frames[index]))
    return [(f"{script.title} - act {act + 1}" if len(rows) > 1 else script.title, cells) for act, cells in rows.items()]


def movie_contact_sheet(script: MovieScript, mp4: bytes, max_frames: int = 48, thumb_width: int = 160) -> Image.Image:
    """A movie's keyframes (all of them, or ``max_frames`` spread over the movie), one row per act."""
    frames = frames_at(mp4, evenly_spaced(script.num_frames, max_frames), source=f"{script.id}.mp4")
    return contact_sheet(movie_sheet_rows(script, frames), thumb_width=thumb_width, columns=min(12, max(len(frames), 1)))


def dataset_contact_sheet(source: str | Path, max_movies: int = 8, frames_per_movie: int = 6,
                          thumb_width: int = 160) -> Image.Image:
    """The first ``max_movies`` movies of a dataset, ``frames_per_movie`` frames each spread over the movie."""
    rows = []
    for script, mp4 in _iter_movies(source, max_movies):
        indices = evenly_spaced(script.num_frames, frames_per_movie)
        frames = frames_at(mp4, indices, source=f"{script.id}.mp4")
        rows.append((f"{script.title} ({script.genre}, {clock(script.num_frames)})",
                     [(clock(script.timeline[i].time), frames[i]) for i in sorted(frames)]))
    if not rows:
        raise ShardError(f"{source} holds no movies to draw a contact sheet from.")
    return contact_sheet(rows, thumb_width=thumb_width, columns=frames_per_movie)


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write a PNG atomically. Pillow writes no timestamp, so equal pixels give equal bytes."""
    path = Path(path)
    with stage(f"writing {path}"):
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp:
            image.save(tmp, format="PNG")
    return path


def write_dataset_contact_sheet(root: str | Path) -> Path:
    """Draw ``contact_sheet.png`` in a dataset folder (done at push time, not on every generate)."""
    root = Path(root)
    return save_png(dataset_contact_sheet(root), root / CONTACT_SHEET_NAME)


def _iter_movies(source: str | Path, limit: int | None = None) -> Iterator[tuple[MovieScript, bytes]]:
    for count, sample in enumerate(iter_movie_samples(source)):
        if limit is not None and count >= limit:
            return
        yield sample.script, sample.mp4


def _movie_count(source: Path, limit: int | None) -> int:
    """How many movies a preview will show (for the progress bar): the manifest's count, else the tars' headers."""
    entries = read_manifest(source / MANIFEST_NAME) if source.is_dir() else []
    listed = {e.shard for e in entries}
    total = len(entries) if entries and listed == {p.name for p in source.glob("*.tar")} else count_samples(source)
    return total if limit is None else min(total, limit)


# ------------------------------------------------------------------------------------------- pages


@dataclass
class PreviewResult:
    """What :func:`build_preview` wrote."""

    out: Path
    index: Path
    movies: list[Path] = field(default_factory=list)
    contact_sheet: Path | None = None


def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def _check_source(source: Path) -> None:
    if not source.exists():
        raise ConfigError(f"dataset folder {source} does not exist; give a folder made by `moviellm generate` or `moviellm pull`.")
    if source.is_dir() and not any(source.glob("*.tar")):
        raise ConfigError(f"{source} holds no .tar shards; give a folder made by `moviellm generate` or `moviellm pull`.")


def _prepare_out(out: Path) -> None:
    """Use an empty or earlier preview folder; never write into a folder holding something else."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"preview output {out} is a file; choose a folder path for --out.")
    if out.is_dir() and any(out.iterdir()) and not (out / PREVIEW_MARKER).exists():
        raise ConfigError(f"{out} is not empty and holds no moviellm preview; choose a new or empty folder for --out.")
    make_writable_folder(out, "preview folder")
    atomic_write_text(out / PREVIEW_MARKER, "written by moviellm preview; the folder is safe to delete\n")


def build_preview(source: str | Path, out: str | Path, max_movies: int | None = None, thumb_width: int = 320,
                  progress: bool = True) -> PreviewResult:
    """Write a browsable static preview of a dataset folder (or shard) into ``out``.

    Args:
        source: a dataset folder (its ``*.tar``) or a single shard.
        out: the preview folder; created, or an earlier preview that is brought up to date.
        max_movies: preview only the first movies (all by default).
        thumb_width: width in pixels of the keyframe images (frames are never enlarged).
    """
    source, out = Path(source), Path(out)
    _check_source(source)
    _prepare_out(out)
    _write_text(out / "style.css", _template("style.css").substitute(thumb_min=max(120, min(thumb_width, 360) * 3 // 4)))
    result = PreviewResult(out=out, index=out / "index.html")
    cards, sheet_rows = [], []
    movies = frames_total = qa_total = 0
    # One movie in memory at a time: a reference movie's mp4 alone can be a hundred megabytes.
    for script, mp4 in tqdm(_iter_movies(source, max_movies), desc="preview", unit="movie", disable=not progress,
                            total=_movie_count(source, max_movies) if progress else None):
        page, first_frames = _write_movie(script, mp4, out, thumb_width)
        result.movies.append(page)
        cards.append(_movie_card(script, page.relative_to(out).as_posix()))
        if len(sheet_rows) < 8:
            sheet_rows.append((f"{script.title} ({script.genre}, {clock(script.num_frames)})", first_frames))
        movies, frames_total, qa_total = movies + 1, frames_total + script.num_frames, qa_total + len(script.qa)
    if not movies:
        raise ShardError(f"{source} holds no movies to preview.")
    result.contact_sheet = save_png(contact_sheet(sheet_rows, thumb_width=160, columns=6), out / CONTACT_SHEET_NAME)
    facts = [f"{movies} movies", f"{frames_total} keyframes ({clock(frames_total)} at 1 fps)", f"{qa_total} QA pairs"]
    _write_text(result.index, _template("index.html").substitute(
        title=html.escape(f"Preview of {source.name or source}"),
        facts=" ".join(f"<span>{html.escape(f)}</span>" for f in facts),
        movies="\n".join(cards),
        version=html.escape(__version__),
        source=html.escape(str(source)),
    ))
    return result


def _movie_card(script: MovieScript, href: str) -> str:
    thumb = f"{Path(href).with_suffix('').as_posix()}/f{0:05d}.jpg"
    return (f'    <a class="card" href="{html.escape(href)}"><img src="{html.escape(thumb)}" alt="">'
            f"<div><strong>{html.escape(script.title)}</strong><br>"
            f'<span class="muted">{html.escape(script.genre)} &middot; {script.num_frames} frames &middot; '
            f"{len(script.qa)} QA</span></div></a>")


def _write_movie(script: MovieScript, mp4: bytes, out: Path, thumb_width: int) -> tuple[Path, list]:
    """Write one movie's frames, contact sheet and page; return the page and six frames for the index."""
    folder = out / "movies" / script.id
    # Frames go into a hidden folder renamed into place at the end: a failure (a full disk) leaves no half movie.
    with stage(f"writing the preview of movie {script.id} into {folder}"), replacing(folder) as building:
        building.mkdir(parents=True)
        sheet_frames = _write_frames(script, mp4, building, thumb_width)
        if folder.exists():
            shutil.rmtree(folder)  # an earlier preview of this movie: frames are rewritten whole
    page = out / "movies" / f"{script.id}.html"
    _write_text(page, _movie_page(script, folder.name))
    return page, [(clock(i), sheet_frames[i]) for i in evenly_spaced(script.num_frames, 6)]


def _write_frames(script: MovieScript, mp4: bytes, folder: Path, thumb_width: int) -> dict[int, np.ndarray]:
    """A movie's frames as JPEGs and its contact sheet into ``folder``; return the small frames the index shows."""
    sheet_indices = set(evenly_spaced(script.num_frames, 48))
    index_indices = evenly_spaced(script.num_frames, 6)
    sheet_frames: dict[int, np.ndarray] = {}
    count = 0
    for i, frame in enumerate(iter_frames(mp4, source=f"{script.id}.mp4")):
        thumbnail(frame, thumb_width).save(folder / f"f{i:05d}.jpg", format="JPEG", quality=85)
        if i in sheet_indices or i in index_indices:
            sheet_frames[i] = np.asarray(thumbnail(frame, 160))
        count = i + 1
    if count != script.num_frames:
        raise ShardError(f"{script.id}.mp4 has {count} frames but its script has {script.num_frames}; regenerate the movie.")
    sheet = contact_sheet(movie_sheet_rows(script, {i: f for i, f in sheet_frames.items() if i in sheet_indices}),
                          thumb_width=160, columns=min(12, len(sheet_indices)))
    save_png(sheet, folder / CONTACT_SHEET_NAME)
    return sheet_frames


def _movie_page(script: MovieScript, folder: str) -> str:
    esc = html.escape
    cited: dict[int, list[int]] = {}
    for q, qa in enumerate(script.qa, start=1):
        for i in range(qa.evidence.start, qa.evidence.end + 1):
            cited.setdefault(i, []).append(q)
    shots = script.shots()
    frames = []
    for frame in script.timeline:
        i = frame.index
        badges = "".join(f'<a href="#qa{q}">Q{q}</a>' for q in cited.get(i, [])[:4])
        more = f'<a href="#qa{cited[i][4]}">+{len(cited[i]) - 4}</a>' if len(cited.get(i, [])) > 4 else ""
        subtitle = f'<span class="sub">{esc(frame.subtitle)}</span>' if frame.subtitle else ""
        lazy = ' loading="lazy"' if i >= 24 else ""
        frames.append(
            f'      <figure class="frame{" cited" if i in cited else ""}" id="f{i}" data-index="{i}">'
            f'<img src="{esc(folder)}/f{i:05d}.jpg" alt="frame {i}: {esc(shots[i].action, quote=True)}"{lazy}>'
            f'<figcaption><span class="badges">{badges}{more}</span><span class="time">{clock(frame.time)} &middot; act {frame.act + 1}, scene {frame.scene + 1}, '
            f"shot {frame.shot + 1}</span><br>{esc(shots[i].action)}{subtitle}</figcaption></figure>"
        )
    rows = []
    for q, qa in enumerate(script.qa, start=1):
        span = qa.evidence
        shown = [span.start + k for k in evenly_spaced(span.end - span.start + 1, 6)]
        strip = "".join(f'<a href="#f{i}"><img src="{esc(folder)}/f{i:05d}.jpg" alt="evidence frame {i}"></a>'
                        for i in shown)
        rows.append(
            f'      <tr id="qa{q}"><td>Q{q}<br><span class="type">{esc(qa.type)}</span></td>'
            f"<td><strong>{esc(qa.question)}</strong><br>{esc(qa.answer)}</td>"
            f'<td>frames {span.start}-{span.end} ({clock(span.start)}-{clock(span.end)}) '
            f'<button class="show" data-span="{span.start}-{span.end}">show</button>'
            f'<div class="strip">{strip}</div></td></tr>'
        )
    outline = []
    index = 0
    for a, act in enumerate(script.acts):
        outline.append(f"    <details{' open' if a == 0 else ''}><summary><strong>Act {a + 1}: {esc(act.title)}</strong>"
                       f" &middot; {esc(act.summary)}</summary>")
        for s, scene in enumerate(act.scenes):
            outline.append(f"      <details><summary>Scene {s + 1}: {esc(scene.title)} ({esc(scene.location)})"
                           f" &middot; {esc(scene.summary)}</summary><ol class=\"shots\">")
            for shot in scene.shots:
                line = f" &mdash; <em>{esc(shot.dialogue.subtitle())}</em>" if shot.dialogue else ""
                outline.append(f'        <li value="{index + 1}"><a href="#f{index}">{clock(index)}</a> {esc(shot.prompt)}{line}</li>')
                index += 1
            outline.append("      </ol></details>")
        outline.append("    </details>")
    characters = " ".join(
        f'<span><span class="swatch" style="background: rgb{colour_of(c.outfit_colour)}"></span>'
        f"<strong>{esc(c.name)}</strong> ({esc(c.role)}): {esc(c.visual_description())}</span>"
        for c in script.characters
    )
    facts = [script.genre, f"theme: {script.theme}", f"{script.num_frames} keyframes ({clock(script.num_frames)})",
             f"{len(script.qa)} QA", f"style: {script.style.keyword}", f"id {script.id}"]
    return _template("movie.html").substitute(
        title=esc(script.title),
        title_attr=esc(script.title, quote=True),
        facts=" ".join(f"<span>{esc(f)}</span>" for f in facts),
        overview=esc(script.overview),
        characters=characters,
        frames="\n".join(frames),
        qa="\n".join(rows),
        outline="\n".join(outline),
        sheet=f"{esc(folder)}/{CONTACT_SHEET_NAME}",
    )
