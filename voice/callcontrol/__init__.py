"""Call control: the one owner of every call on this node.

- `leg`: a SIP dialog + its RTP session + negotiated codec, the call's one end state;
- `inbound`: the answer path (INVITE -> flow -> hang-up);
- `dial`: the outbound path (ring an agent, bridge);
- `bridge`: media between two legs;
- `switch`: owns the calls by key, implements cti.ports.AgentConnector, drains;
- `call`: the Call a flow drives; `fake`: in-memory ports for tests;
- `lifecycle`: answered / identified / transferred / finished, and its subscribers
  (`records`: the history; `log_lifecycle`: the log lines; `CallMetrics`: /metrics).
"""

from voice.callcontrol.call import Call, CallEnded, CallInfo, TranscriptSegment
from voice.callcontrol.inbound import AnswerSettings, FlowRunner, InboundAnswer
from voice.callcontrol.leg import Leg, SipLink, local_address_for
from voice.callcontrol.lifecycle import (
    CallAnswered,
    CallFinished,
    CallIdentified,
    CallMetrics,
    CallRefused,
    CallTransferred,
    Lifecycle,
    log_lifecycle,
)
from voice.callcontrol.records import CallRecorder
from voice.callcontrol.switch import DeskCall, Switch

__all__ = [
    "AnswerSettings",
    "Call",
    "CallAnswered",
    "CallEnded",
    "CallFinished",
    "CallIdentified",
    "CallInfo",
    "CallMetrics",
    "CallRecorder",
    "CallRefused",
    "CallTransferred",
    "DeskCall",
    "FlowRunner",
    "InboundAnswer",
    "Leg",
    "Lifecycle",
    "SipLink",
    "Switch",
    "TranscriptSegment",
    "local_address_for",
    "log_lifecycle",
]
