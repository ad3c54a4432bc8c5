"""Fixtures of the converter tests: the Whisper weights and clips (tests/whisper_models.py)."""

from tests.whisper_models import (
    jfk_clip,
    speech_clips,
    whisper_base,
    whisper_tiny_ct2,
    whisper_tiny_en,
)

__all__ = ["jfk_clip", "speech_clips", "whisper_base", "whisper_tiny_ct2", "whisper_tiny_en"]
