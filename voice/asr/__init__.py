"""On-device speech recognition: engines (Whisper, Vosk, PocketSphinx), a worker pool, endpointing.

Entry point for the service: `recognizer = await SpeechRecognizer.start(config.asr)`,
then `await recognizer.listen(call, options=[...])`, and `await recognizer.aclose()`.
"""

from voice.asr.base import SpeechListener, SpeechResult
from voice.asr.engine import EngineError, EngineSpec, create_engine, resolve_engine
from voice.asr.listener import SpeechRecognizer
from voice.asr.pool import RecognizerPool

__all__ = [
    "EngineError",
    "EngineSpec",
    "RecognizerPool",
    "SpeechListener",
    "SpeechRecognizer",
    "SpeechResult",
    "create_engine",
    "resolve_engine",
]
