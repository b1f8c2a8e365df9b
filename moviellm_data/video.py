"""MP4 (H.264) encoding and decoding in-process through PyAV, at 1 frame per second."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .errors import ShardError
from .limits import check_crf


def encode_mp4(
    frames: Iterable[np.ndarray],
    fps: int = 1,
    crf: int = 18,
    preset: str = "veryfast",
    output: str | Path | None = None,
) -> bytes | None:
    """Encode uint8 RGB frames [H, W, 3] (all the same size, even dimensions) as an H.264 mp4.

    Frame ``i`` gets presentation time ``i / fps`` seconds. ``crf`` trades size for fidelity (18 is
    visually lossless for drawn frames; lower is larger and closer). Frames are consumed one at a time;
    with ``output`` the video streams to that file (and None is returned) instead of into memory.
    """
    check_crf(crf)
    buffer = io.BytesIO() if output is None else str(output)
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = None
        count = 0
        for i, frame in enumerate(frames):
            frame = np.ascontiguousarray(frame, dtype=np.uint8)
            if stream is None:
                height, width = frame.shape[:2]
                stream = container.add_stream("libx264", rate=fps)
                stream.width, stream.height = width, height
                stream.pix_fmt = "yuv420p"
                stream.time_base = Fraction(1, fps)
                stream.codec_context.options = {"crf": str(crf), "preset": preset}
            elif frame.shape[:2] != (stream.height, stream.width):
                raise ValueError(f"frame {i} is {frame.shape[1]}x{frame.shape[0]}, expected {stream.width}x{stream.height}")
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = i
            video_frame.time_base = Fraction(1, fps)
            for packet in stream.encode(video_frame):
                container.mux(packet)
            count += 1
        if stream is None:
            raise ValueError("cannot encode a video with no frames")
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue() if output is None else None


def decode_mp4(data: bytes, source: str = "mp4") -> np.ndarray:
    """Decode every frame of an mp4 to a uint8 array [T, H, W, 3] in presentation order."""
    return np.stack(list(iter_mp4_frames(data, source)))


def iter_mp4_frames(data: bytes, source: str = "mp4", threads: bool = False) -> Iterator[np.ndarray]:
    """The frames of an mp4 one at a time (uint8 [H, W, 3], presentation order), for movies too long to hold whole.

    ``threads`` lets FFmpeg decode on several cores (the frames are the same).
    """
    count = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if threads:
                container.streams.video[0].thread_type = "AUTO"
            for frame in container.decode(video=0):
                count += 1
                yield frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, IndexError) as err:
        raise ShardError(f"{source} is not a decodable mp4 video ({err}); regenerate the movie.") from None
    if not count:
        raise ShardError(f"{source} holds no video frames; regenerate the movie.")


def probe_mp4(data: bytes) -> dict:
    """Frame count, size and rate of an mp4 without decoding every frame."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        return {
            "frames": stream.frames,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "fps": float(stream.average_rate) if stream.average_rate else None,
        }


def count_mp4_frames(data: bytes, source: str = "mp4") -> int:
    """Decode every frame of an mp4 (so a broken one is caught), keeping none; return how many there are."""
    return sum(1 for _ in iter_mp4_frames(data, source))  # an mp4 without frames is refused by the iterator
