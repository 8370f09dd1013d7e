"""Which queue a task is in (seed 003), as a pure function of its times and the clock.

- active: being read; a task idle (no event, no request) for ``stale_after_s`` becomes stale;
- stale: resumed (a page asked) within ``stale_resume_s`` it is active again, else draining;
- completed: every page is known (fetched or the end reached); stays ``completed_s`` after its
  last activity, then draining;
- draining: refused (410) and kept ``draining_s`` for the status endpoints, then gone.
A cancelled task goes straight to draining.
"""

from dataclasses import dataclass

ACTIVE, COMPLETED, DRAINING, STALE, GONE = "active", "completed", "draining", "stale", "gone"
QUEUES = (ACTIVE, COMPLETED, DRAINING, STALE)


@dataclass(frozen=True)
class Timings:
    """The seed's durations, in seconds."""

    completed_s: float = 300.0
    draining_s: float = 5.0
    stale_after_s: float = 240.0
    stale_resume_s: float = 300.0


@dataclass(frozen=True)
class TaskTimes:
    last_activity: float
    completed_at: float | None = None
    canceled_at: float | None = None


def _drained_after(times: TaskTimes, t: Timings) -> float:
    """When the task leaves its last live queue (and enters draining)."""
    if times.canceled_at is not None:
        return times.canceled_at
    if times.completed_at is not None:
        return max(times.completed_at, times.last_activity) + t.completed_s
    return times.last_activity + t.stale_after_s + t.stale_resume_s


def queue_of(times: TaskTimes, now: float, t: Timings) -> str:
    """``active``, ``completed``, ``stale``, ``draining`` or ``gone`` at ``now``."""
    drained = _drained_after(times, t)
    if now >= drained:
        return DRAINING if now < drained + t.draining_s else GONE
    if times.completed_at is not None:
        return COMPLETED
    return ACTIVE if now - times.last_activity <= t.stale_after_s else STALE


def gone_at(times: TaskTimes, t: Timings) -> float:
    """When nothing of the task needs keeping (the store's expiry)."""
    return _drained_after(times, t) + t.draining_s
