"""Workloads: a guest's memory demand over time, as seeded, reproducible per-second series.

Each model computes its whole series at once with numpy from a seed, so a scenario gives the same
demand on every run and every machine. Values are the guest's own committed memory in MiB
(Windows "Committed Bytes", Linux ``Committed_AS``), before the balloon driver's additions.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = ["Workload", "WORKLOAD_ADAPTER", "series", "Steady", "Idle", "Diurnal", "Bursty", "Leak",
           "BootStorm", "Batch", "Trace", "Steps"]

Mib = Annotated[int, Field(ge=0)]


class _Workload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    noise_percent: Annotated[float, Field(ge=0, le=100)] = 2.0
    """Standard deviation of per-second jitter, as a percentage of the value."""

    def shape(self, t_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


class Steady(_Workload):
    """A constant demand: a database buffer pool, a JVM with a fixed heap."""

    kind: Literal["steady"] = "steady"
    mib: Mib

    def shape(self, t_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.full(len(t_s), float(self.mib))


class Idle(_Workload):
    """An idle guest: the OS's own working set and little else."""

    kind: Literal["idle"] = "idle"
    mib: Mib = 400
    noise_percent: Annotated[float, Field(ge=0, le=100)] = 1.0

    def shape(self, t_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.full(len(t_s), float(self.mib))


class Diurnal(_Workload):
    """A day/night cycle: base + amplitude·sin, with a period (a day by default)."""

    kind: Literal["diurnal"] = "diurnal"
    base_mib: Mib
    amplitude_mib: Mib
    period_s: Annotated[int, Field(gt=0)] = 86_400
    phase_s: int = 0

    def shape(self, t_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.base_mib + self.amplitude_mib * np.sin(2 * np.pi * (t_s + self.phase_s) / self.period_s)


class Bursty(_Workload):
    """A base load with random bursts (requests, caches filling) that start and end abruptly."""

    kind: Literal["bursty"] = "bursty"
    base_mib: Mib
    burst_mib: Mib
    bursts_per_hour: Annotated[float, Field(ge=0)] = 6.0
    burst_s: Annotated[int, Field(gt=0)] = 120

    def shape(self, t_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        starts = rng.random(len(t_s)) < self.bursts_per_hour / 3600.0
        active = np.convolve(starts.astype(np.int64), np.ones(self.burst_s, dtype=np.int64))[: len(t_s)] > 0
        return self.base_mib + self.burst_mib * active


class Leak(_Workload):
    """A slow leak: demand grows linearly until the process is restarted."""

    kind: Literal["leak"] = "leak"
    start_mib: Mib
    mib_per_hour: Annotated[float, Field(ge=0)]
    reset_every_s: Annotated[int, Field(gt=0)] | None = None

    def shape(self, t_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        age = t_s % self.reset_every_s if self.reset_every_s else t_s
        return self.start_mib + self.mib_per_hour * age / 3600.0


class BootStorm(_Workload):
    """Boot: demand peaks while services start, then decays to a steady level."""

    kind: Literal["boot_storm"] = "boot_storm"
    peak_mib: Mib
    steady_mib: Mib
    decay_s: Annotated[float, Field(gt=0)] = 120.0

    def shape(self, t_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.steady_mib + (self.peak_mib - self.steady_mib) * np.exp(-t_s / self.decay_s)


class Batch(_Workload):
    """A periodic batch job: idle, then a job holding a lot of memory for a while."""

    kind: Literal["batch"] = "batch"
    idle_mib: Mib
    job_mib: Mib
    every_s: Annotated[int, Field(gt=0)] = 3600
    job_s: Annotated[int, Field(gt=0)] = 600
    first_at_s: Annotated[int, Field(ge=0)] = 0

    def shape(self, t_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        running = ((t_s - self.first_at_s) % self.every_s < self.job_s) & (t_s >= self.first_at_s)
        return np.where(running, float(self.job_mib), float(self.idle_mib))


class Trace(_Workload):
    """A recorded demand curve: (second, MiB) points, linear in between, held after the last."""

    kind: Literal["trace"] = "trace"
    points: list[tuple[float, float]] = Field(min_length=1)
    noise_percent: Annotated[float, Field(ge=0, le=100)] = 0.0

    def shape(self, t_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        at, mib = np.array(self.points, dtype=np.float64).T
        return np.interp(t_s, at, mib)


class Steps(_Workload):
    """Exact steps: (second, MiB) points, each held until the next one; no interpolation, no noise."""

    kind: Literal["steps"] = "steps"
    points: list[tuple[float, float]] = Field(min_length=1)
    noise_percent: Annotated[float, Field(ge=0, le=0)] = 0.0

    def shape(self, t_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        at, mib = np.array(sorted(self.points), dtype=np.float64).T
        where = np.searchsorted(at, t_s, side="right") - 1
        return np.where(where >= 0, mib[np.maximum(where, 0)], 0.0)


Workload = Annotated[
    Union[Steady, Idle, Diurnal, Bursty, Leak, BootStorm, Batch, Trace, Steps], Field(discriminator="kind")
]

WORKLOAD_ADAPTER: TypeAdapter[Workload] = TypeAdapter(Workload)


def series(workload: _Workload, seconds: int, seed: int) -> np.ndarray:
    """The workload's demand for each of ``seconds`` seconds, in whole MiB (int64, ≥ 0)."""
    rng = np.random.default_rng(seed)
    t_s = np.arange(seconds, dtype=np.float64)
    values = workload.shape(t_s, rng)
    if workload.noise_percent:
        values = values * (1 + rng.normal(0.0, workload.noise_percent / 100.0, seconds))
    return np.maximum(np.rint(values), 0).astype(np.int64)
