"""The data stream: weighted mixtures, determinism, grouping, rank sharding, resume and flat host memory."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from moviellm_model.training.records import Movie, Record, VisualRef
from moviellm_model.training.stream import MixedStream, TrainingBatches, WeightedSource


class ListSource:
    def __init__(self, name: str, count: int, modality: str = "text"):
        self.name, self.count, self.modality = name, count, modality

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        for i in range(self.count):
            movie = None
            if self.modality != "text":
                movie = Movie(subtitles=["x"] * (1 + i % 7), prefix="", suffix="\nq",
                              visual=VisualRef(kind=self.modality, path="unused"))
            yield Record(id=f"{self.name}{i}", source=self.name, turns=[("q " * (i % 13), "a")], movie=movie)


def _ids(stream: MixedStream, epoch: int = 0) -> list[str]:
    return [record.id for record in stream.records(epoch)]


def test_weighted_mixture_draws_in_proportion_and_is_deterministic():
    stream = MixedStream([WeightedSource(ListSource("a", 400), 1.0), WeightedSource(ListSource("b", 400), 0.5)],
                         seed=3)
    ids = _ids(stream)
    assert len(ids) == len(stream) == 600
    counts = Counter(i[0] for i in ids)
    assert counts == {"a": 400, "b": 200}  # weight 0.5: a random half of b
    assert len(set(ids)) == 600  # no record twice within its pass
    first = Counter(i[0] for i in ids[:150])  # every stretch draws in proportion (2:1), not a then b
    assert 80 <= first["a"] <= 120
    assert ids == _ids(stream)  # deterministic given the seed
    assert ids != _ids(MixedStream(stream.sources, seed=4))
    assert ids != _ids(stream, epoch=1)  # each epoch has its own order and subset
    twice = MixedStream([WeightedSource(ListSource("a", 10), 2.0)], seed=0)
    assert sorted(Counter(_ids(twice)).values()) == [2] * 10
    with pytest.raises(ValueError):
        WeightedSource(ListSource("a", 1), 0.0)


def _all_batches(batches: TrainingBatches, epoch: int = 0) -> list[list[str]]:
    return [[r.id for r in batch] for batch, _ in batches.rank_batches(epoch)]


def test_batches_group_modalities_and_lengths_and_shard_by_rank():
    sources = [WeightedSource(ListSource("f", 64, "features")), WeightedSource(ListSource("p", 32, "frames")),
               WeightedSource(ListSource("t", 32))]
    stream = MixedStream(sources, seed=1)
    ranks = [TrainingBatches(stream, encoder=None, batch_size=4, window=32, rank=r, world_size=2) for r in (0, 1)]
    per_rank = [_all_batches(b) for b in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0])  # ranks in step, the length is exact
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert sorted(seen) == sorted(_ids(stream))  # every record once across ranks
    for batches in per_rank:
        for batch in batches:
            assert len({i[0] for i in batch}) == 1  # one modality per batch
    # rank r's k-th batch is global batch k * world + r
    global_ = [[r.id for r in b] for b in ranks[0].global_batches(0)]
    assert per_rank[0] == global_[0::2] and per_rank[1] == global_[1::2]


def test_resume_starts_at_the_next_batch_without_encoding_the_skipped_ones():
    class CountingEncoder:
        processor = None

        def __init__(self):
            self.seen = []

        def encode(self, record):
            self.seen.append(record.id)
            raise RuntimeError("stop")  # never reached for skipped batches

    stream = MixedStream([WeightedSource(ListSource("a", 40))], seed=0)
    encoder = CountingEncoder()
    batches = TrainingBatches(stream, encoder=encoder, batch_size=2, window=8)
    expected = _all_batches(batches)
    batches.resume_at(0, 7)
    with pytest.raises(RuntimeError):
        next(iter(batches))
    assert encoder.seen == [expected[7][0]]  # the first record encoded is the first of batch 7


_RSS_SCRIPT = r"""
import json, resource, sys
from moviellm_model.training import ConversationEncoder, LlavaJsonSource, MixedStream, TrainingBatches, WeightedSource
from transformers import AutoProcessor
processor = AutoProcessor.from_pretrained(sys.argv[1])
stream = MixedStream([WeightedSource(LlavaJsonSource(path=sys.argv[2]))], seed=0)
batches = TrainingBatches(stream, ConversationEncoder(processor, max_length=4096), batch_size=2, window=64)
n = sum(len(b["input_ids"]) for b in batches)
print(json.dumps({"samples": n, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


@pytest.mark.slow
def test_host_memory_stays_flat_when_the_data_grows_tenfold(tiny_checkpoint, tmp_path):
    """Streaming: peak RSS of a whole pass over 10x more conversations stays within 10%."""
    def write(count: int):
        path = tmp_path / f"data{count}.json"
        with open(path, "w") as fh:
            fh.write("[")
            for i in range(count):
                item = {"id": str(i), "conversations": [
                    {"from": "human", "value": f"Question {i}: what happens to the detective at night? " * 3},
                    {"from": "gpt", "value": "The detective finds the letter and runs to the station. " * 3}]}
                fh.write(("," if i else "") + json.dumps(item))
            fh.write("]")
        return path

    results = []
    for count in (300, 3000):
        out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(tiny_checkpoint), str(write(count))],
                             capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert [r["samples"] for r in results] == [300, 3000]
    small, large = (r["maxrss_kb"] for r in results)
    assert large <= small * 1.10, results


def test_adjusted_and_skipped_samples_are_counted_in_the_batches(tiny_checkpoint):
    from transformers import AutoProcessor

    from moviellm_model.training import ConversationEncoder
    from moviellm_model.training.stream import IDS_KEY, STATS_KEY

    class Fixed(ListSource):
        def __iter__(self):
            yield Record(id="ok", source="t", turns=[("Who?", "Anna.")])
            yield Record(id="broken", source="t", turns=[], error="sample broken: its tar member is cut short")
            yield Record(id="long", source="t", turns=[("Why? " * 10, "Because. " * 200)])
            yield Record(id="turns", source="t", turns=[("Who?", "Anna."), ("And then? " * 5, "She left. " * 60)])

    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    stream = MixedStream([WeightedSource(Fixed("t", 4))], seed=0)
    batches = TrainingBatches(stream, ConversationEncoder(processor, max_length=300), batch_size=1, window=4)
    totals, trained = Counter(), []
    for batch in batches:
        totals.update(batch[STATS_KEY])
        trained += batch[IDS_KEY]
    assert sorted(trained) == ["ok", "turns"]
    assert totals["samples"] == 2 and totals["skipped_corrupt"] == 1 and totals["skipped_too_long"] == 1
    assert totals["turns_dropped"] == 1
