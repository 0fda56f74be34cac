"""``GET /metrics``: Prometheus metrics (text exposition format), admin-only when auth is on.

Two kinds, both in one registry per app (never prometheus-client's global one: several apps may
share a process, as the tests' servers do):

- measured in this server process, as requests pass: ``labelloop_http_request_duration_seconds``
  (method, route template, status; a path that matches no route is ``route="unmatched"``, so
  the label's values stay bounded) and ``labelloop_inference_stage_seconds`` (model, stage:
  ``pre``, ``infer``, ``invert``, ``post``, ``total`` (the model's, up to its result) and
  ``write`` (the result's file), as ``/infer`` reports them in ``latencies``);
- read at each scrape: the inference caches' hits and misses and bytes held (this process's),
  and from the database, the same on every server of one database: ``labelloop_jobs`` (kind,
  status: SUBMITTED is the queue depth), ``labelloop_job_duration_seconds`` (a histogram of
  finished jobs' run times, kind and final status) and ``labelloop_leases_open`` (strategy).

Sum the per-process metrics over replicas; take any one replica's database-wide figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labelloop.api import schemas
from labelloop.api.deps import STRICT_QUERY, Services

__all__ = ["Metrics", "MetricsMiddleware", "router"]

#: Seconds: a small request takes about a millisecond, an inference on CPU a few seconds.
_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _StateCollector(Collector):
    """What is read at scrape time from the running services (none before the lifespan built them)."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        services: Services | None = getattr(self._app.state, "services", None)
        if services is None:
            return
        lookups = CounterMetricFamily(
            "labelloop_inference_cache_lookups",
            "Lookups in this process's inference caches (image: volumes; prepared: preprocessed tensors)",
            labels=["cache", "result"],
        )
        held = GaugeMetricFamily(
            "labelloop_inference_cache_bytes",
            "Bytes held by this process's inference caches",
            labels=["cache"],
        )
        budget = GaugeMetricFamily(
            "labelloop_inference_cache_budget_bytes", "The inference caches' budgets", labels=["cache"]
        )
        for name, cache in (("image", services.inference.images), ("prepared", services.inference.prepared)):
            lookups.add_metric([name, "hit"], cache.hits)
            lookups.add_metric([name, "miss"], cache.misses)
            held.add_metric([name], cache.used)
            budget.add_metric([name], cache.budget)
        yield from (lookups, held, budget)

        census = services.jobs.queue.census()
        counts = GaugeMetricFamily(
            "labelloop_jobs",
            "Jobs by kind and status (SUBMITTED: queued; RUNNING; DONE, ERROR, STOPPED), database-wide",
            labels=["kind", "status"],
        )
        for (kind, status), n in sorted(census.counts.items()):
            counts.add_metric([kind, status], n)
        yield counts
        durations = HistogramMetricFamily(
            "labelloop_job_duration_seconds",
            "Run time of finished jobs (start to finish), by kind and final status, database-wide",
            labels=["kind", "status"],
        )
        for (kind, status), histogram in sorted(census.durations.items()):
            buckets = [
                (_bound(b), float(n)) for b, n in zip(histogram.bounds, histogram.cumulative, strict=True)
            ]
            buckets.append(("+Inf", float(histogram.count)))
            durations.add_metric([kind, status], buckets, sum_value=histogram.sum_s)
        yield durations

        leases = GaugeMetricFamily(
            "labelloop_leases_open",
            "Cases handed out and not yet saved or expired, by strategy",
            labels=["strategy"],
        )
        for strategy, n in sorted(services.activelearning.open_lease_counts().items()):
            leases.add_metric([strategy], n)
        yield leases


def _bound(value: float) -> str:
    """A bucket's ``le`` as prometheus-client writes its own (``300.0``)."""
    return str(float(value))


class Metrics:
    """One app's registry: the instruments requests feed, and the scrape-time collector."""

    def __init__(self, app: FastAPI) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "labelloop_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template",
            ["method", "route", "status"],
            buckets=_REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.stages = Histogram(
            "labelloop_inference_stage_seconds",
            "Time of each stage of an inference request, as /infer reports it in 'latencies'",
            ["model", "stage"],
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(app))

    def observe_inference(self, model: str, latencies: Mapping[str, Any]) -> None:
        """The stage times of one ``/infer`` answer (``None`` or non-numbers are skipped)."""
        for stage, seconds in latencies.items():
            if isinstance(seconds, int | float) and not isinstance(seconds, bool):
                self.stages.labels(model, stage).observe(float(seconds))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def metrics_of(app: Any) -> Metrics | None:
    """The app's ``Metrics`` (``create_app`` puts them in ``app.state.metrics``)."""
    found = getattr(getattr(app, "state", None), "metrics", None)
    return found if isinstance(found, Metrics) else None


class MetricsMiddleware:
    """Times every HTTP request into ``labelloop_http_request_duration_seconds``.

    The route template is known once routing ran (``scope["route"]``), which is after the answer;
    the status is the one the answer started with (500 when none was sent).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = metrics_of(scope.get("app"))
        if scope["type"] != "http" or metrics is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.requests.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )


router = APIRouter(tags=["metrics"], responses=schemas.AUTH_ERRORS)


@router.get(
    "/metrics",
    summary="Prometheus metrics: request and inference times, jobs, caches, open leases",
    response_class=Response,
    dependencies=[STRICT_QUERY],
    responses={200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request) -> Response:
    found = metrics_of(request.app)
    body = found.exposition() if found is not None else b""
    return Response(body, media_type=CONTENT_TYPE_LATEST)
