"""Window samplers: random (task, stream, offset) windows of a learning history, for training.

Reading a window straight from Zarr costs ~2 ms (NOTES.md), far too slow to feed a trainer, and a
big dataset (Dark Key-to-Door: thousands of tasks) must never be loaded whole. So each sampler
holds a small *pool* of whole task rows in memory ([pool_size, stream, step] per array, a few MB at
most) and draws every batch from the pool with one vectorised gather; every `refresh_every`
batches one pool slot is replaced by another random train task (the XLand-100B recipe).

Every batch is a pure function of (seed, step): slot j's task changes at fixed steps and is
drawn from an RNG seeded by (seed, j, generation); the windows of step s come from an RNG seeded
by (seed, s). Hence resuming at step s reproduces the exact batches of an uninterrupted run,
and DataLoader workers can split the steps among themselves (worker w makes the steps
s = w, w + n_workers, ...; the loader hands them back in order).

Only train-split tasks are ever sampled, less any in `exclude_tasks` (validation goals held out
of training). The last `holdout_streams` streams of every train task are kept out of training:
`validation_batches` cuts fixed windows from them.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from icrl_bench.data.dataset import LearningHistoryDataset, load_dataset
from icrl_bench.errors import IcrlBenchError

DEFAULT_ARRAYS = ("obs", "action", "reward", "next_obs")

# A per-task transform of whole rows ({name: [stream, step, ...]} -> same), e.g. IDT's episode sort.
ChunkTransform = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class SamplerConfig:
    """How windows are drawn.

    window: consecutive steps per sample (an agent's `window`).
    batch_size: windows per batch.
    seed: the whole batch sequence follows from it.
    pool_size: task rows held in memory per worker (bounds memory).
    refresh_every: batches between replacing one pooled task (each task stays pool_size * refresh_every batches).
    holdout_streams: last streams of each train task kept for validation.
    exclude_tasks: canonical task indices never sampled, nor validated on (held-out goals).
    start_every: windows start only at multiples of this step (1: anywhere), the validation windows
        too. IDT cuts a window into blocks from its first step, and acts with blocks that start at
        each episode's first step: its `low_per_high` makes every window's blocks line up as
        acting's do.
    """

    window: int
    batch_size: int
    seed: int = 0
    pool_size: int = 16
    refresh_every: int = 4
    holdout_streams: int = 1
    exclude_tasks: tuple[int, ...] = ()
    start_every: int = 1

    def __post_init__(self) -> None:
        self.exclude_tasks = tuple(int(task) for task in self.exclude_tasks)
        for name in ("window", "batch_size", "pool_size", "refresh_every", "start_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.holdout_streams < 0:
            raise ValueError(f"holdout_streams must be >= 0, got {self.holdout_streams}")


def check_fits(ds: LearningHistoryDataset, config: SamplerConfig, arrays: tuple[str, ...]) -> None:
    """Refuse a dataset that cannot provide these windows, naming what is missing."""
    missing = [name for name in arrays if name not in ds.manifest.arrays]
    if missing:
        raise IcrlBenchError(f"dataset {ds.dataset_id} has no {', '.join(missing)} array (this agent needs it); rebuild it with the current recipe.")
    if ds.n_steps < config.window:
        raise IcrlBenchError(
            f"dataset {ds.dataset_id} has {ds.n_steps} steps per stream, fewer than the window of {config.window} "
            f"(n_transit); use a smaller n_transit or a bigger dataset preset."
        )
    if len(ds.train_rows) == 0:
        raise IcrlBenchError(f"dataset {ds.dataset_id} has no train-split task to train on.")
    if len(sampled_rows(ds, config)) == 0:
        raise IcrlBenchError(f"dataset {ds.dataset_id}: every train task is held out ({len(config.exclude_tasks)} excluded); "
                             "train without hold_out_validation_goals or on a bigger dataset.")
    if ds.n_streams - config.holdout_streams < 1:
        raise IcrlBenchError(
            f"dataset {ds.dataset_id} has {ds.n_streams} stream(s) per task; holding out {config.holdout_streams} "
            "for validation leaves none to train on (set holdout_streams: 0)."
        )


def sampled_rows(ds: LearningHistoryDataset, config: SamplerConfig) -> np.ndarray:
    """The train-split rows windows are drawn from: every train task not in `config.exclude_tasks`."""
    rows = ds.train_rows
    return rows[~np.isin(ds.task_index[rows], config.exclude_tasks)] if config.exclude_tasks else rows


class WindowSampler(IterableDataset):
    """Endless batches {array: [B, window, ...], 'row': [B]} of train-split windows, as torch tensors.

    A PyTorch `IterableDataset`, the trainer's own and meant for users' training loops too:
    already batched (give DataLoader `batch_size=None`, or use `make_loader`). Picklable (holds
    only the dataset's id and root), so it works in DataLoader workers; each worker opens the
    dataset itself and the batches stay a pure function of (seed, step).

    Example:
        >>> from icrl_bench import SamplerConfig, WindowSampler, make_loader
        >>> sampler = WindowSampler("darkroom-small-v3", root=None, config=SamplerConfig(window=80, batch_size=64))
        >>> for step, batch in zip(range(1_000), make_loader(sampler, num_workers=2)):
        ...     batch["obs"], batch["action"], batch["reward"]   # [64, 80, 2], [64, 80], [64, 80] uint8
    """

    def __init__(
        self,
        dataset_id: str,
        root: str | os.PathLike | None,
        config: SamplerConfig,
        arrays: tuple[str, ...] = DEFAULT_ARRAYS,
        transform: ChunkTransform | None = None,
        start_step: int = 0,
    ):
        super().__init__()
        self.dataset_id = dataset_id
        self.root = root
        self.config = config
        self.arrays = tuple(arrays)
        self.transform = transform
        self.start_step = start_step
        ds = load_dataset(dataset_id, root)
        check_fits(ds, config, self.arrays)
        self.train_rows = sampled_rows(ds, config).copy()
        self.n_train_streams = ds.n_streams - config.holdout_streams
        self.n_steps = ds.n_steps
        self._ds: LearningHistoryDataset | None = None
        self._pool: dict[str, np.ndarray] = {}
        self._pool_rows = np.full(config.pool_size, -1, dtype=np.int64)  # task row loaded in each slot
        self._rows_epoch: tuple[int, np.ndarray] = (-1, self._pool_rows)  # slot_rows of the last epoch asked

    def state_dict(self) -> dict:
        return {"sampler": asdict(self.config), "dataset_id": self.dataset_id}

    # -- what is in the pool at a step (pure functions of seed and step) -----------------------------

    def slot_rows(self, step: int) -> np.ndarray:
        """Task row held by each pool slot at `step` [pool_size]."""
        c = self.config
        epoch = step // c.refresh_every
        if self._rows_epoch[0] == epoch:
            return self._rows_epoch[1]
        slots = np.arange(c.pool_size)
        generation = (epoch - slots) // c.pool_size + 1  # times slot j was refreshed by this epoch
        picks = [np.random.default_rng([c.seed, 1, j, int(g)]).integers(len(self.train_rows)) for j, g in zip(slots, generation)]
        self._rows_epoch = (epoch, self.train_rows[np.array(picks)])
        return self._rows_epoch[1]

    def _load_row(self, row: int) -> dict[str, np.ndarray]:
        if self._ds is None:
            self._ds = load_dataset(self.dataset_id, self.root)
        chunk = {name: np.asarray(self._ds[name][row, : self.n_train_streams]) for name in self.arrays}  # [S, T, ...]
        return self.transform(chunk) if self.transform else chunk

    def _fill_pool(self, rows: np.ndarray) -> None:
        for slot, row in enumerate(rows):
            if self._pool_rows[slot] == row:
                continue
            chunk = self._load_row(int(row))
            if not self._pool:
                self._pool = {name: np.empty((len(rows),) + a.shape, dtype=a.dtype) for name, a in chunk.items()}
            for name, values in chunk.items():
                self._pool[name][slot] = values
            self._pool_rows[slot] = row

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of `step`."""
        c = self.config
        rows = self.slot_rows(step)
        self._fill_pool(rows)
        rng = np.random.default_rng([c.seed, 2, step])
        slot = rng.integers(c.pool_size, size=c.batch_size)  # [B]
        stream = rng.integers(self.n_train_streams, size=c.batch_size)  # [B]
        offset = c.start_every * rng.integers((self.n_steps - c.window) // c.start_every + 1, size=c.batch_size)  # [B] (1: any start)
        steps = offset[:, None] + np.arange(c.window)[None, :]  # [B, window]
        out = {name: torch.from_numpy(a[slot[:, None], stream[:, None], steps]) for name, a in self._pool.items()}  # [B, window, ...]
        out["row"] = torch.from_numpy(rows[slot])  # [B]
        return out

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        step = self.start_step + worker
        while True:
            yield self.batch(step)
            step += n_workers


def make_loader(sampler: WindowSampler, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over the sampler's batches (already batched: batch_size=None)."""
    extra = {"persistent_workers": True, "prefetch_factor": 4, "worker_init_fn": _stop_on_sigterm} if num_workers > 0 else {}
    return DataLoader(sampler, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, **extra)


def _stop_on_sigterm(worker_id: int) -> None:
    """A loader worker leaves on SIGTERM as on Ctrl-C, exiting cleanly.

    A SIGTERM to the whole process group (a cluster scheduler's preemption, `timeout`) otherwise
    kills the workers by the signal, and the trainer's DataLoader raises mid-step instead of
    stopping at the step boundary with a checkpoint. PyTorch's worker loop treats
    KeyboardInterrupt as the main process stopping.
    """
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def validation_batches(
    dataset_id: str,
    root: str | os.PathLike | None,
    config: SamplerConfig,
    arrays: tuple[str, ...] = DEFAULT_ARRAYS,
    transform: ChunkTransform | None = None,
    max_tasks: int = 64,
    windows_per_task: int = 16,
) -> list[dict[str, torch.Tensor]]:
    """Fixed windows from the held-out streams of (up to `max_tasks`, evenly spread) train tasks.

    The same windows every time, so validation curves are comparable across steps and runs.
    Empty when no stream is held out.
    """
    if config.holdout_streams == 0:
        return []
    ds = load_dataset(dataset_id, root)
    check_fits(ds, config, arrays)
    train_rows = sampled_rows(ds, config)
    rows = train_rows[np.unique(np.linspace(0, len(train_rows) - 1, min(max_tasks, len(train_rows))).round().astype(int))]
    held = slice(ds.n_streams - config.holdout_streams, ds.n_streams)
    data = {name: np.asarray(ds[name].oindex[rows, held]) for name in arrays}  # [R, H, T, ...]
    if transform is not None:
        per_row = [transform({name: a[i] for name, a in data.items()}) for i in range(len(rows))]
        data = {name: np.stack([chunk[name] for chunk in per_row]) for name in per_row[0]}
    n_held = ds.n_streams - held.start
    last = (ds.n_steps - config.window) // config.start_every  # in units of start_every, as training draws them
    offsets = config.start_every * np.unique(np.linspace(0, last, windows_per_task).round().astype(int))  # [W_t]
    r, h, o = np.meshgrid(np.arange(len(rows)), np.arange(n_held), offsets, indexing="ij")
    r, h, o = r.ravel(), h.ravel(), o.ravel()  # one entry per validation window [N]
    steps = o[:, None] + np.arange(config.window)[None, :]  # [N, window]
    batches = []
    for start in range(0, len(r), config.batch_size):
        sl = slice(start, start + config.batch_size)
        batch = {name: torch.from_numpy(a[r[sl, None], h[sl, None], steps[sl]]) for name, a in data.items()}  # [b, window, ...]
        batch["row"] = torch.from_numpy(rows[r[sl]])
        batches.append(batch)
    return batches
