"""Prometheus metrics of one server (one registry per app, so two apps in a process never share counters).

Counters and histograms are the services' own: requests by route and status, queue depth, active decode slots and
streams, batch sizes, time to first audio, request latency, chunk latency, and the routing decisions (routed per
dialect, degraded to the faster model, refused per limit). Gauges of live state are read from the services when
``/metrics`` is scraped (:meth:`ServerMetrics.render`), never polled in the background.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    """The server's metrics; ``gauges`` maps a ``(name, labels)`` source to a function read at scrape time."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("speechtrt_requests", "Requests answered, by route and HTTP status (WebSocket: "
                                "close code).", ["route", "status"], registry=r)
        self.request_latency = Histogram("speechtrt_request_latency_seconds", "Request received -> last byte "
                                         "sent.", ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.time_to_first_audio = Histogram("speechtrt_time_to_first_audio_seconds", "Speech request received -> "
                                             "first audio bytes sent.", ["model"], buckets=_LATENCY_BUCKETS,
                                             registry=r)
        self.chunk_latency = Histogram("speechtrt_chunk_latency_seconds", "Streaming: audio chunk received -> "
                                       "partial sent; speech: gap between audio chunks sent.", ["service"],
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("speechtrt_batch_size", "Requests (TTS decode slots, uploads, streams) per "
                                    "model call.", ["service"], buckets=_BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("speechtrt_queue_depth", "Work waiting for a slot.", ["service"], registry=r)
        self.active_slots = Gauge("speechtrt_active_slots", "Decode slots / upload batches / streams in use.",
                                  ["service"], registry=r)
        self.active_streams = Gauge("speechtrt_active_streams", "Open WebSocket streams.", registry=r)
        self.in_flight = Gauge("speechtrt_in_flight_requests", "Admitted requests not yet answered.", ["service"],
                               registry=r)
        self.routed = Counter("speechtrt_routed", "Transcriptions and streams routed, by declared dialect and the "
                              "model chosen.", ["service", "dialect", "model"], registry=r)
        self.degraded = Counter("speechtrt_degraded", "Auto-routed requests handed to the faster model under "
                                "sustained overload.", ["service", "from_model", "to_model"], registry=r)
        self.refused = Counter("speechtrt_refused", "Requests refused by admission, by service and the limit "
                               "that refused them.", ["service", "limit"], registry=r)
        self.draining = Gauge("speechtrt_draining", "1 while the server drains for shutdown.", registry=r)
        self._sources: list[Callable[[], None]] = []

    def on_scrape(self, update: Callable[[], None]) -> None:
        """Run ``update`` (which sets gauges from live state) before every scrape."""
        self._sources.append(update)

    def render(self) -> bytes:
        for update in self._sources:
            update()
        return generate_latest(self.registry)
