"""Training data straight from the Hub: `MovieSource("ORG/NAME")` streams a pushed movie dataset through `datasets`."""

from __future__ import annotations

import json

from tests.hub.hub_server import HubServer
from tests.publish.publish_support import cli, make_movies, python

from moviellm_model.training import MovieSource

_READ = """
import hashlib, json
from moviellm_model.training import MovieSource
source = MovieSource(path="org/movies", conversation="qa")
records = list(source)
print(json.dumps({"len": len(source), "ids": [r.id for r in records],
                  "mp4": {r.id: hashlib.sha256(r.movie.visual.read_bytes()).hexdigest() for r in records},
                  "frames": {r.id: len(r.movie.subtitles) for r in records}}))
"""


def test_a_pushed_movie_dataset_streams_as_training_records(tmp_path):
    import hashlib

    folder = make_movies(tmp_path / "movies", movies=2)
    local = list(MovieSource(path=str(folder), conversation="qa"))
    with HubServer() as hub:
        env = hub.env(tmp_path / "hf-home")
        pushed = cli("push", str(folder), "--repo", "org/movies", "--no-progress", env=env)
        assert pushed.returncode == 0, pushed.stderr
        result = python(_READ, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["len"] == len(local) and sorted(remote["ids"]) == sorted(r.id for r in local)
    for record in local:
        assert remote["frames"][record.id] == len(record.movie.subtitles)
        assert remote["mp4"][record.id] == hashlib.sha256(record.movie.visual.read_bytes()).hexdigest()
