"""The Ray runner (``jobs.runner = "ray"``): a job's work runs on a Ray cluster, its record stays here.

What runs where:

* The worker claims a job and starts its process exactly as the local runner does (``labelloop
  run-job``, niced, in a session of its own, its output in ``<data>/jobs/<id>/job.log``). That
  process joins the cluster at ``ray.address`` as a Ray driver (``ray_engine.RayEngine``) and is the
  only one that touches the database: the job row (progress, log lines, final status), labels,
  scores and model versions, all under the job's claim as with the local runner; the worker
  heartbeats for it as for any job. What Ray tasks and workers print reaches the driver, so it lands
  in the same job log.
* Training: the app's training function (``TrainTask.train``) runs under Ray Train's
  ``TorchTrainer`` on ``ray.train_workers`` workers (one GPU each where the cluster has GPUs);
  checkpoints and weights go to the job's folder, where the local runner writes them, and the
  driver evaluates, promotes and publishes as the local runner does.
* Batch inference and scoring: one Ray task per image; the driver saves each result as its task
  finishes and moves the job's progress on.

Stopping is the local runner's: the worker sends the job's process SIGTERM (a stop request, which
the driver passes on to the Ray Train workers and its pending image tasks), then SIGKILL to its
process group after ``jobs.cancel_grace_s``; Ray ends every task and actor of a driver that is gone.

This module stays light (the worker imports it at start): ``ray`` is imported by ``ray_engine``
only, inside the job's process.
"""

from __future__ import annotations

import socket
from pathlib import Path

from labelloop.errors import LabelloopError
from labelloop.jobs.records import Job
from labelloop.jobs.runner import RunHandle, SubprocessRunner

__all__ = ["RayClusterUnreachableError", "RayRunner", "gcs_reachable"]


class RayClusterUnreachableError(LabelloopError):
    """The Ray cluster a job should run on does not answer."""


def gcs_reachable(address: str, timeout_s: float = 5.0) -> bool:
    """Whether something listens at ``address`` (``host:port``, a Ray head's GCS), within ``timeout_s``."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return False
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


class RayRunner(SubprocessRunner):
    """Starts each job's process as ``SubprocessRunner`` does; with ``jobs.runner = "ray"`` that
    process runs the job's work on the Ray cluster at ``address`` (``host:port``, or ``auto``).

    A cluster whose head does not answer fails the start (the job ends in ERROR, saying so) instead
    of leaving a process to wait for it.
    """

    def __init__(self, settings_file: Path, jobs_dir: Path, nice: int, address: str) -> None:
        super().__init__(settings_file, jobs_dir, nice)
        self.address = address

    def start(self, job: Job) -> RunHandle:
        if self.address != "auto" and not gcs_reachable(self.address):
            raise RayClusterUnreachableError(
                f"the Ray cluster at {self.address} does not answer (ray.address; is `ray start` running?)"
            )
        return super().start(job)
