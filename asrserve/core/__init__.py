"""The synchronous, sans-I/O streaming core: audio in, results out."""

from asrserve.core.events import Result
from asrserve.core.recognizer import Recognizer
from asrserve.core.stream import Stream

__all__ = ["Recognizer", "Result", "Stream"]
