"""Streaming kaldi fbank through kaldi-native-fbank.

Options mirror what sherpa-onnx uses for icefall models, so frames are
bit-identical to the reference for the same samples. The keyword options
cover sherpa-onnx's other fbank front ends (NeMo transducers: Hann window,
no DC removal, librosa-style mel banks).
"""

from __future__ import annotations

import kaldi_native_fbank as knf
import numpy as np
import numpy.typing as npt

from asrserve.config import FeatureConfig


class KaldiFbank:
    """Frames are addressed by absolute index since the stream began.

    Frames older than :meth:`discard_before` are dropped so long streams
    keep bounded memory. Ready frames are moved out of kaldi-native-fbank in
    bulk, once each, into a float32 buffer that :meth:`get_frames` slices.
    """

    def __init__(
        self,
        config: FeatureConfig | None = None,
        *,
        window_type: str = "povey",
        remove_dc_offset: bool = True,
        is_librosa: bool = False,
    ) -> None:
        self.config = (config or FeatureConfig()).validate()
        opts = knf.FbankOptions()
        opts.frame_opts.dither = self.config.dither
        opts.frame_opts.snip_edges = self.config.snip_edges
        opts.frame_opts.samp_freq = float(self.config.sample_rate)
        opts.frame_opts.frame_shift_ms = self.config.frame_shift_ms
        opts.frame_opts.frame_length_ms = self.config.frame_length_ms
        opts.mel_opts.num_bins = self.config.num_bins
        opts.mel_opts.low_freq = self.config.low_freq
        opts.mel_opts.high_freq = self.config.high_freq
        opts.frame_opts.window_type = window_type
        opts.frame_opts.remove_dc_offset = remove_dc_offset
        opts.mel_opts.is_librosa = is_librosa
        self._fbank = knf.OnlineFbank(opts)
        self._popped = 0  # frames below this index were discarded
        self._buf: npt.NDArray[np.float32] = np.empty((0, self.config.num_bins), np.float32)
        self._buf_first = 0  # absolute index of the buffer's first row
        self._knf_popped = 0  # frames handed over (popped from kaldi-native-fbank)
        self._finished = False

    @property
    def dim(self) -> int:
        return self.config.num_bins

    @property
    def frame_shift_s(self) -> float:
        return self.config.frame_shift_ms / 1000.0

    @property
    def finished(self) -> bool:
        return self._finished

    def accept_waveform(self, samples: npt.NDArray[np.float32]) -> None:
        """Samples are float32 in [-1, 1] at ``config.sample_rate``."""
        if samples.size:
            # the binding reads a sequence of floats item by item: a memoryview
            # yields Python floats several times faster than an array's numpy
            # scalars (and builds no list); the values are the same float32s
            view = np.ascontiguousarray(samples, dtype=np.float32).data
            self._fbank.accept_waveform(float(self.config.sample_rate), view)

    def input_finished(self) -> None:
        if not self._finished:
            self._fbank.input_finished()
            self._finished = True

    @property
    def num_frames_ready(self) -> int:
        return int(self._fbank.num_frames_ready)

    def get_frames(self, start: int, count: int) -> npt.NDArray[np.float32]:
        """Frames ``[start, start + count)`` as a ``(count, dim)`` float32 array."""
        end = self._buf_first + len(self._buf)
        if start < self._popped or (start + count > end and start + count > self.num_frames_ready):
            raise IndexError(
                f"frames [{start}, {start + count}) outside available "
                f"[{self._popped}, {self.num_frames_ready})"
            )
        if start + count > end:
            self._fetch(end)
        i = start - self._buf_first
        out: npt.NDArray[np.float32] = self._buf[i : i + count].copy()
        return out

    def _fetch(self, end: int) -> None:
        """Move the ready frames from ``end`` on out of kaldi-native-fbank into the buffer."""
        ready = self.num_frames_ready
        new = np.array([self._fbank.get_frame(i) for i in range(end, ready)], dtype=np.float32)
        self._fbank.pop(ready - self._knf_popped)
        self._knf_popped = ready
        self._buf = np.concatenate([self._buf, new.reshape(-1, self.dim)])

    def discard_before(self, frame: int) -> None:
        """Free frames with index < ``frame``."""
        self._popped = max(self._popped, frame)
        drop = frame - self._buf_first
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_first += drop
            base = self._buf.base
            if isinstance(base, np.ndarray) and base.shape[0] > 2 * len(self._buf) + 64:
                # a view would hold every frame of a big piece of audio until the
                # next fetch: keep only the rows still needed
                self._buf = self._buf.copy()
