"""Server counters in the Prometheus text exposition format (no dependency)."""

from __future__ import annotations

import bisect
import threading
from collections import Counter


class Histogram:
    """Cumulative-bucket histogram as Prometheus expects it."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # last: +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def samples(self, name: str, labels: str) -> list[str]:
        """Its sample lines; ``labels`` (``k="v",…``) go on each."""
        lines = []
        cumulative = 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            cumulative += n
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            lines.append(f'{name}_bucket{{le="{le}",{labels}}} {cumulative}')
        lines += [
            f"{name}_sum{{{labels}}} {self.sum:.6f}",
            f"{name}_count{{{labels}}} {self.count}",
        ]
        return lines


class Metrics:
    """Updated by the decode thread and the event loop; read by ``/metrics``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active_streams = 0
        self.connections_total = 0
        self.rejected_total = 0
        self.audio_seconds = 0.0
        self.decode_seconds = 0.0
        self.errors: Counter[str] = Counter()
        self.http_requests: Counter[tuple[str, int]] = Counter()  # (route, status)
        self.upload_audio_seconds = 0.0
        self.batch_size = Histogram((1, 2, 4, 8, 16, 32, 64, 128))
        self.decode_latency = Histogram((0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))

    def observe_batch(self, size: int, seconds: float, audio_seconds: float) -> None:
        with self._lock:
            self.batch_size.observe(size)
            self.decode_latency.observe(seconds)
            self.decode_seconds += seconds
            self.audio_seconds += audio_seconds

    def count_error(self, code: str) -> None:
        with self._lock:
            self.errors[code] += 1

    def count_request(self, route: str, status: int, audio_seconds: float = 0.0) -> None:
        """One plain HTTP request answered (``route``: one of a fixed set)."""
        with self._lock:
            self.http_requests[(route, status)] += 1
            self.upload_audio_seconds += audio_seconds

    def families(self, model: str) -> list[tuple[str, str, str, list[str]]]:
        """Every series as (name, type, help, sample lines), labelled ``model``."""
        m = f'model="{_escape(model)}"'
        with self._lock:
            rtf = self.decode_seconds / self.audio_seconds if self.audio_seconds else 0.0
            return [
                ("asrserve_active_streams", "gauge", "Open WebSocket sessions.",
                 [f"asrserve_active_streams{{{m}}} {self.active_streams}"]),
                ("asrserve_connections_total", "counter", "Sessions accepted since start.",
                 [f"asrserve_connections_total{{{m}}} {self.connections_total}"]),
                ("asrserve_rejected_connections_total", "counter",
                 "Handshakes refused (server full).",
                 [f"asrserve_rejected_connections_total{{{m}}} {self.rejected_total}"]),
                ("asrserve_audio_seconds_total", "counter", "Seconds of audio decoded.",
                 [f"asrserve_audio_seconds_total{{{m}}} {self.audio_seconds:.3f}"]),
                ("asrserve_decode_seconds_total", "counter",
                 "Seconds spent in batched decode calls.",
                 [f"asrserve_decode_seconds_total{{{m}}} {self.decode_seconds:.3f}"]),
                ("asrserve_real_time_factor", "gauge",
                 "Decode seconds per audio second since start.",
                 [f"asrserve_real_time_factor{{{m}}} {rtf:.4f}"]),
                ("asrserve_errors_total", "counter", "Errors sent to clients, by code.",
                 [f'asrserve_errors_total{{code="{c}",{m}}} {n}'
                  for c, n in sorted(self.errors.items())]),
                ("asrserve_http_requests_total", "counter",
                 "Plain HTTP requests answered, by route and status.",
                 [f'asrserve_http_requests_total{{route="{r}",status="{st}",{m}}} {n}'
                  for (r, st), n in sorted(self.http_requests.items())]),
                ("asrserve_upload_audio_seconds_total", "counter",
                 "Seconds of uploaded audio transcribed.",
                 [f"asrserve_upload_audio_seconds_total{{{m}}} {self.upload_audio_seconds:.3f}"]),
                ("asrserve_batch_size", "histogram", "Streams advanced by one encoder call.",
                 self.batch_size.samples("asrserve_batch_size", m)),
                ("asrserve_decode_latency_seconds", "histogram",
                 "Wall time of one batched decode call.",
                 self.decode_latency.samples("asrserve_decode_latency_seconds", m)),
            ]  # fmt: skip

    def render(self, model: str = "") -> str:
        """This model's series alone (``render_metrics`` gives all models')."""
        return render_metrics({model: self})


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(by_model: dict[str, Metrics]) -> str:
    """Every model's series in the Prometheus text format, each family's
    HELP and TYPE once, every sample labelled with its ``model``."""
    families: dict[str, tuple[str, str, list[str]]] = {}
    for model, metrics in by_model.items():
        for name, kind, help_text, samples in metrics.families(model):
            families.setdefault(name, (kind, help_text, []))[2].extend(samples)
    lines: list[str] = []
    for name, (kind, help_text, samples) in families.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
    return "\n".join(lines) + "\n"
