"""How many jobs there are of each kind and status, and how long the finished ones ran.

What ``GET /metrics`` reports of the jobs: it is read from the jobs table at each scrape, so every
server of one database reports the same numbers, whichever ran the jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import case, func, select

from labelloop.db import Database
from labelloop.jobs.models import jobs

__all__ = ["DURATION_BUCKETS_S", "DurationHistogram", "JobCensus", "job_census"]

#: Upper bounds, seconds, of the run-time histogram: a scoring pass takes seconds, a training hours.
DURATION_BUCKETS_S: tuple[float, ...] = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 43200)


@dataclass(frozen=True)
class DurationHistogram:
    """Run times (``finished_at - started_at``, seconds) of the finished jobs of one kind and status.

    ``cumulative[i]`` counts those that ran at most ``bounds[i]`` seconds; ``count`` all of them.
    """

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    count: int
    sum_s: float


@dataclass(frozen=True)
class JobCensus:
    #: (kind, status) -> number of jobs, every status (SUBMITTED: queued, RUNNING, and the final ones).
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (kind, final status) -> run times of the jobs that started and finished.
    durations: dict[tuple[str, str], DurationHistogram] = field(default_factory=dict)


def job_census(db: Database, bounds: Sequence[float] = DURATION_BUCKETS_S) -> JobCensus:
    """Two grouped queries over the jobs table (no row is read one by one)."""
    bounds = tuple(float(b) for b in bounds)
    with db.read() as conn:
        counted = conn.execute(
            select(jobs.c.kind, jobs.c.status, func.count()).group_by(jobs.c.kind, jobs.c.status)
        ).all()
        ran = jobs.c.finished_at - jobs.c.started_at
        columns = [func.sum(case((ran <= bound, 1), else_=0)) for bound in bounds]
        timed = conn.execute(
            select(jobs.c.kind, jobs.c.status, func.count(), func.sum(ran), *columns)
            .where(jobs.c.started_at.is_not(None), jobs.c.finished_at.is_not(None))
            .group_by(jobs.c.kind, jobs.c.status)
        ).all()
    counts = {(str(kind), str(status)): int(n) for kind, status, n in counted}
    durations = {
        (str(row[0]), str(row[1])): DurationHistogram(
            bounds=bounds,
            cumulative=tuple(int(v or 0) for v in row[4:]),
            count=int(row[2]),
            sum_s=float(row[3] or 0.0),
        )
        for row in timed
    }
    return JobCensus(counts=counts, durations=durations)
