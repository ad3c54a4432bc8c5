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

    def render(self, name: str, help_text: str) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            cumulative += n
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            lines.append(f'{name}_bucket{{le="{le}"}} {cumulative}')
        lines += [f"{name}_sum {self.sum:.6f}", f"{name}_count {self.count}"]
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

    def render(self) -> str:
        with self._lock:
            rtf = self.decode_seconds / self.audio_seconds if self.audio_seconds else 0.0
            lines = [
                "# HELP asrserve_active_streams Open WebSocket sessions.",
                "# TYPE asrserve_active_streams gauge",
                f"asrserve_active_streams {self.active_streams}",
                "# HELP asrserve_connections_total Sessions accepted since start.",
                "# TYPE asrserve_connections_total counter",
                f"asrserve_connections_total {self.connections_total}",
                "# HELP asrserve_rejected_connections_total Handshakes refused (server full).",
                "# TYPE asrserve_rejected_connections_total counter",
                f"asrserve_rejected_connections_total {self.rejected_total}",
                "# HELP asrserve_audio_seconds_total Seconds of audio decoded.",
                "# TYPE asrserve_audio_seconds_total counter",
                f"asrserve_audio_seconds_total {self.audio_seconds:.3f}",
                "# HELP asrserve_decode_seconds_total Seconds spent in batched decode calls.",
                "# TYPE asrserve_decode_seconds_total counter",
                f"asrserve_decode_seconds_total {self.decode_seconds:.3f}",
                "# HELP asrserve_real_time_factor Decode seconds per audio second since start.",
                "# TYPE asrserve_real_time_factor gauge",
                f"asrserve_real_time_factor {rtf:.4f}",
                "# HELP asrserve_errors_total Errors sent to clients, by code.",
                "# TYPE asrserve_errors_total counter",
            ]
            lines += [
                f'asrserve_errors_total{{code="{c}"}} {n}' for c, n in sorted(self.errors.items())
            ]
            lines += [
                "# HELP asrserve_http_requests_total Plain HTTP requests answered, by route "
                "and status.",
                "# TYPE asrserve_http_requests_total counter",
            ]
            lines += [
                f'asrserve_http_requests_total{{route="{r}",status="{s}"}} {n}'
                for (r, s), n in sorted(self.http_requests.items())
            ]
            lines += [
                "# HELP asrserve_upload_audio_seconds_total Seconds of uploaded audio transcribed.",
                "# TYPE asrserve_upload_audio_seconds_total counter",
                f"asrserve_upload_audio_seconds_total {self.upload_audio_seconds:.3f}",
            ]
            lines += self.batch_size.render(
                "asrserve_batch_size", "Streams advanced by one encoder call."
            )
            lines += self.decode_latency.render(
                "asrserve_decode_latency_seconds", "Wall time of one batched decode call."
            )
        return "\n".join(lines) + "\n"
