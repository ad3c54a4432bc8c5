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
    keep bounded memory.
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
        self._popped = 0
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
            self._fbank.accept_waveform(float(self.config.sample_rate), samples)

    def input_finished(self) -> None:
        if not self._finished:
            self._fbank.input_finished()
            self._finished = True

    @property
    def num_frames_ready(self) -> int:
        return int(self._fbank.num_frames_ready)

    def get_frames(self, start: int, count: int) -> npt.NDArray[np.float32]:
        """Frames ``[start, start + count)`` as a ``(count, dim)`` float32 array."""
        if start < self._popped or start + count > self.num_frames_ready:
            raise IndexError(
                f"frames [{start}, {start + count}) outside available "
                f"[{self._popped}, {self.num_frames_ready})"
            )
        out = np.empty((count, self.dim), dtype=np.float32)
        for i in range(count):
            out[i] = self._fbank.get_frame(start + i)
        return out

    def discard_before(self, frame: int) -> None:
        """Free frames with index < ``frame``."""
        n = frame - self._popped
        if n > 0:
            self._fbank.pop(n)
            self._popped = frame
