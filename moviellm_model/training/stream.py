"""The training data stream: a weighted mixture of sources, ordered, grouped, sharded and resumable.

Host memory stays flat however large the data: sources stream their records (text and file references, no decoded
video), the stream holds one window of records at a time, and frames or features are read only for the batches of
this process.

Order of an epoch, deterministic given the seed (the same on every rank, so ranks agree without talking):

1. Mixture: source `i` with weight `w` contributes `w x len(source)` conversations per epoch (`w = 1`: all of it
   once; `0.5`: a random half; `2`: all of it twice); the positions of the sources' conversations in the epoch are
   a random interleaving, so every stretch of the stream draws from the sources in proportion to those counts.
2. Windows of `window` records: shuffled, then grouped like LLaMA-VID's modality- and length-grouped sampler
   (llamavid-spec.md 4.4): each modality (movies from features, movies from frames, text only) apart; within it,
   mega-batches of `world_size x batch_size` records sorted by length, so a batch holds records of similar length;
   the mega-batches' order shuffled. Records left over in a window (fewer than a mega-batch) wait for the next.
3. Global batch `g` goes to rank `g % world_size`; within a rank, DataLoader worker `k % num_workers` encodes the
   rank's `k`-th batch (workers' outputs are consumed round-robin, so the rank sees its batches in order). A last
   round that would leave ranks with unequal batch counts is dropped and counted.

Resuming at optimizer step `s` starts each rank at its `s x gradient_accumulation_steps`-th batch: the skipped
batches' records are read and ordered again (cheap: no video is decoded), never encoded or trained on again.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .encoding import IGNORE_INDEX, ConversationEncoder, EncodedSample, SampleSkipped
from .records import Record

logger = logging.getLogger(__name__)

__all__ = ["DataStats", "MixedStream", "TrainingBatches", "collate", "make_dataloader"]

STATS_KEY = "moviellm_stats"
IDS_KEY = "moviellm_sample_ids"
SKIP_REASONS = ("corrupt", "too_long", "tokenization_mismatch")


class DataStats(Counter):
    """Counters of what the data stream did: samples trained, adjusted and skipped (per reason)."""

    def summary(self) -> str:
        parts = [f"{self.get('samples', 0)} samples trained"]
        for key in ("frames_subsampled", "turns_dropped"):
            if self.get(key):
                parts.append(f"{self[key]} with {key.replace('_', ' ')}")
        for reason in SKIP_REASONS:
            if self.get(f"skipped_{reason}"):
                parts.append(f"{self[f'skipped_{reason}']} skipped ({reason.replace('_', ' ')})")
        if self.get("dropped_epoch_end"):
            parts.append(f"{self['dropped_epoch_end']} dropped at an epoch end (ranks need equal batch counts)")
        return ", ".join(parts)


# --------------------------------------------------------------------------------------------------- mixture


@dataclass
class WeightedSource:
    """A source (an iterable of records with a length) and its weight in the mixture."""

    source: object
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.weight > 0 or not math.isfinite(self.weight):
            raise ValueError(f"a source weight must be a positive number, not {self.weight!r}.")


class MixedStream:
    """The records of one epoch of a weighted mixture, in a deterministic order given `seed`."""

    def __init__(self, sources: Sequence[WeightedSource], seed: int = 42):
        if not sources:
            raise ValueError("the training data needs at least one source.")
        self.sources = list(sources)
        self.seed = int(seed)
        self.sizes = [len(item.source) for item in self.sources]
        self.counts = [int(round(item.weight * size)) for item, size in zip(self.sources, self.sizes)]
        if sum(self.counts) == 0:
            raise ValueError("the training sources hold no conversation (check the paths and qa_types).")

    def __len__(self) -> int:
        return sum(self.counts)

    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *keys])

    def source_order(self, epoch: int) -> np.ndarray:
        """Which source each position of the epoch draws from."""
        labels = np.repeat(np.arange(len(self.sources), dtype=np.int32), self.counts)
        self._rng(epoch, 0).shuffle(labels)
        return labels

    def _records_of(self, index: int, epoch: int) -> Iterator[Record]:
        """Source `index`'s records for this epoch: floor(w) whole passes, then a random fraction of one pass."""
        size, count = self.sizes[index], self.counts[index]
        whole, rest = divmod(count, size) if size else (0, 0)
        for _ in range(whole):
            yield from self.sources[index].source
        if rest:
            keep = np.zeros(size, dtype=bool)
            keep[self._rng(epoch, 1, index).choice(size, rest, replace=False)] = True
            for position, record in enumerate(self.sources[index].source):
                if position >= size:
                    break
                if keep[position]:
                    yield record

    def records(self, epoch: int) -> Iterator[Record]:
        streams = [self._records_of(index, epoch) for index in range(len(self.sources))]
        for label in self.source_order(epoch):
            record = next(streams[label], None)
            if record is None:  # a source yielded fewer records than it counted (changed on disk): stop cleanly
                logger.warning("source %s ended early; the epoch ends here", self.sources[label].source)
                return
            yield record


# -------------------------------------------------------------------------------------------------- batching


def _length_grouped_batches(records: list[Record], batch_size: int, world_size: int,
                            rng: np.random.Generator) -> tuple[list[list[Record]], list[Record]]:
    """Batches of one window (modality- and length-grouped, mega-batch order shuffled) and the records left over."""
    megabatch = batch_size * world_size
    by_modality: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_modality[record.modality].append(record)
    megabatches, leftover = [], []
    for modality in sorted(by_modality):
        group = by_modality[modality]
        full = len(group) - len(group) % megabatch
        leftover.extend(group[full:])
        for start in range(0, full, megabatch):
            chunk = sorted(group[start : start + megabatch], key=lambda r: r.approx_length, reverse=True)
            megabatches.append([chunk[i : i + batch_size] for i in range(0, megabatch, batch_size)])
    order = rng.permutation(len(megabatches))
    return [batch for index in order for batch in megabatches[index]], leftover


class TrainingBatches(IterableDataset):
    """Encoded, collated batches of this rank (a `torch.utils.data.IterableDataset` for a DataLoader of batch_size None).

    Args:
        stream: the mixture.
        encoder: turns records into tokens, labels and visual tensors.
        batch_size: conversations per batch (per device).
        window: records read ahead and ordered together (a multiple of `batch_size x world_size` is best).
        rank, world_size: this process and how many train together.
        pad_token_id: padding id of the language model.
        start_batch: batches of this rank to skip in the first epoch iterated (resume).
    """

    def __init__(self, stream: MixedStream, encoder: ConversationEncoder, batch_size: int = 1, window: int = 64,
                 rank: int = 0, world_size: int = 1, pad_token_id: int = 0, seed: int = 42):
        self.stream = stream
        self.encoder = encoder
        self.batch_size = int(batch_size)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.window = max(int(window), self.batch_size * self.world_size)
        self.pad_token_id = pad_token_id
        self.seed = int(seed)
        self.epoch = 0
        self.start_epoch = 0
        self.start_batch = 0

    def __len__(self) -> int:
        """Batches of this rank per epoch (exact when all visual inputs are of one kind)."""
        batches = math.ceil(len(self.stream) / self.batch_size)
        return batches // self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Start epoch `epoch` at this rank's batch `batches_done` (the batches before were trained on)."""
        self.start_epoch, self.start_batch = int(epoch), int(batches_done)

    def global_batches(self, epoch: int) -> Iterator[list[Record]]:
        """Every rank's batches of an epoch, in order (records only)."""
        rng_window = 0
        pending: list[Record] = []
        records = self.stream.records(epoch)
        while True:
            window = pending + [record for _, record in zip(range(self.window - len(pending)), records)]
            exhausted = len(window) < self.window
            rng = np.random.default_rng([self.seed, epoch, 2, rng_window])
            rng_window += 1
            shuffled = [window[i] for i in rng.permutation(len(window))]
            batches, pending = _length_grouped_batches(shuffled, self.batch_size, self.world_size, rng)
            yield from batches
            if exhausted:
                break
        by_modality: dict[str, list[Record]] = defaultdict(list)  # the last records: smaller batches
        for record in pending:
            by_modality[record.modality].append(record)
        for modality in sorted(by_modality):
            group = by_modality[modality]
            for start in range(0, len(group), self.batch_size):
                yield group[start : start + self.batch_size]

    def rank_batches(self, epoch: int) -> Iterator[tuple[list[Record], DataStats]]:
        """This rank's batches (records) in order, whole rounds only, so that every rank gets as many batches.

        The records of a last, incomplete round are dropped; rank 0 counts them with its last batch.
        """
        round_: list[list[Record]] = []
        held = None  # this rank's batch of the last complete round: yielded once we know whether more follow
        for batch in self.global_batches(epoch):
            round_.append(batch)
            if len(round_) == self.world_size:
                if held is not None:
                    yield held, DataStats()
                held, round_ = round_[self.rank], []
        dropped = sum(len(batch) for batch in round_)
        if dropped:
            logger.warning("%d samples at the end of epoch %d are dropped so that every rank trains on as many "
                           "batches", dropped, epoch)
        if held is not None:
            yield held, DataStats(dropped_epoch_end=dropped if self.rank == 0 and dropped else 0)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        epoch = self.epoch
        skip = self.start_batch if epoch == self.start_epoch else 0
        for index, (records, stats) in enumerate(self.rank_batches(epoch)):
            if index < skip or index % workers != worker:
                continue
            batch = self._encode_batch(records)
            batch[STATS_KEY].update({k: v for k, v in stats.items() if v})
            yield batch

    def _encode_batch(self, records: list[Record]) -> dict:
        stats = DataStats()
        samples: list[EncodedSample] = []
        for record in records:
            try:
                sample = self.encoder.encode(record)
            except SampleSkipped as skipped:
                stats[f"skipped_{skipped.reason}"] += 1
                logger.warning("skipped %s (%s): %s", record.id, skipped.reason.replace("_", " "), skipped)
                continue
            for adjustment in sample.adjustments:
                stats[adjustment] += 1
                logger.info("sample %s: %s", sample.id, adjustment.replace("_", " "))
            samples.append(sample)
        stats["samples"] += len(samples)
        batch = collate(samples, self.encoder.processor, self.pad_token_id)
        batch[STATS_KEY] = dict(stats)
        batch[IDS_KEY] = [sample.id for sample in samples]
        return batch


def collate(samples: list[EncodedSample], processor, pad_token_id: int = 0) -> dict:
    """Right-padded ids, labels (-100 on padding), attention masks (only when there is padding), the visual inputs.

    An empty list (every sample skipped) gives a one-token batch without labels: the step still runs (ranks stay in
    step with each other) and teaches nothing.
    """
    if not samples:
        bos = processor.tokenizer.bos_token_id
        return {"input_ids": torch.tensor([[bos if bos is not None else pad_token_id]]),
                "labels": torch.full((1, 1), IGNORE_INDEX)}
    length = max(len(s.input_ids) for s in samples)
    input_ids = torch.full((len(samples), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
    for row, sample in enumerate(samples):
        n = len(sample.input_ids)
        input_ids[row, :n] = torch.tensor(sample.input_ids)
        labels[row, :n] = torch.tensor(sample.labels)
        attention_mask[row, :n] = 1
    batch = {"input_ids": input_ids, "labels": labels}
    if not bool(attention_mask.all()):  # without padding, no mask: attention stays implicitly causal (flash/cuDNN)
        batch["attention_mask"] = attention_mask
    movies = [s for s in samples if s.visual is not None]
    kinds = {s.visual_kind for s in movies}
    if len(kinds) > 1:
        raise ValueError("a batch mixes movies given as features and as frames; the stream groups them apart.")
    if movies:
        key = "video_features" if kinds == {"features"} else "pixel_values_long_videos"
        batch[key] = torch.cat([s.visual for s in movies])
        batch["video_features_num_frames"] = torch.tensor([s.visual.shape[0] for s in movies])
        qformer = processor._encode_qformer([s.qformer_text for s in movies])
        batch["qformer_input_ids"] = torch.tensor(qformer["qformer_input_ids"])
        batch["qformer_attention_mask"] = torch.tensor(qformer["qformer_attention_mask"])
    return batch


class _EpochDataLoader(DataLoader):
    """A DataLoader that passes the Trainer's `set_epoch` on to its dataset."""

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


def make_dataloader(batches: TrainingBatches, num_workers: int = 1, pin_memory: bool = False) -> DataLoader:
    """The DataLoader of a rank: batches come collated from the dataset (batch_size None)."""
    return _EpochDataLoader(batches, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                            persistent_workers=False)
