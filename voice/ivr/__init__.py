"""IVR flows: the YAML language (model, validation), the library that loads it, the interpreter."""

from voice.ivr.interpreter import FlowInterpreter
from voice.ivr.library import FlowLibrary
from voice.ivr.model import Flow, FlowError
from voice.ivr.record import CallRecord
from voice.tts import Tts

__all__ = ["CallRecord", "Flow", "FlowError", "FlowInterpreter", "FlowLibrary", "Tts"]
