"""The flow language's vocabulary: node actions and their keys, as data.

One table feeds the validator, the JSON Schema and the docs, so they cannot drift apart.
Field types: prompt, prompts (one prompt per attempt), files, node, expr, template, var,
int, number, fraction (0 to 1), bool, str, regex, key (one DTMF key), words, options, branches, assignments,
headers, json, flow, enum:a|b|c.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Field:
    type: str
    required: bool = False
    help: str = ""


@dataclass(frozen=True)
class ActionSpec:
    name: str
    help: str
    fields: dict[str, Field] = field(default_factory=dict)
    value: str | None = None  # the value is this field type instead of a mapping of fields
    shorthand: str | None = None  # a scalar value fills this field
    input: bool = False  # waits for the caller: needs a no-input path


INPUT_FIELDS: dict[str, Field] = {
    "prompt": Field("prompt", help="what to say before listening"),
    "no_input": Field("prompts", help="said after silence; one entry per attempt, the last repeats"),
    "no_match": Field("prompts", help="said after an invalid answer; one entry per attempt"),
    "attempts": Field("int", help="tries before giving up (default: settings.attempts)"),
    "timeout": Field("number", help="seconds of silence that count as no input"),
    "on_no_input": Field("node", help="where to go when attempts run out on silence"),
    "on_no_match": Field("node", help="where to go when attempts run out on invalid answers"),
    "on_failure": Field("node", help="where to go when attempts run out (either reason)"),
    "dtmf_barge_in": Field("bool", help="a key press stops the prompt"),
    "speech_barge_in": Field("bool", help="the caller speaking stops the prompt"),
    "reprompt": Field("bool", help="replay the prompt after a no-input/no-match message (default true)"),
}

ACTIONS: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in [
        ActionSpec("say", "speak text (TTS) or play recorded files, then go to next", value="prompt"),
        ActionSpec("play", "play recorded prompt file(s) from the prompts directory", value="files"),
        ActionSpec("menu", "choose by DTMF key or spoken keyword", input=True, fields={
            **INPUT_FIELDS,
            "options": Field("options", required=True, help="list of {dtmf, words, goto, when, value}"),
            "into": Field("var", help="variable that receives the chosen option's value"),
            "speech": Field("bool", help="listen for the words too (default: true if any option has words)"),
            "confirm_below": Field("fraction", help="a spoken choice heard with less confidence than this "
                                                    "is confirmed (yes/no) before the flow acts on it"),
            "confirm": Field("prompt", help="the confirmation question (default: I heard <word>, is that "
                                            "right?); may use the `into` variable"),
        }),
        ActionSpec("collect", "collect DTMF digits (account numbers, PINs)", input=True, fields={
            **INPUT_FIELDS,
            "into": Field("var", required=True),
            "min": Field("int", help="fewest digits (default 1)"),
            "max": Field("int", help="most digits; collection ends when reached (default 20)"),
            "terminator": Field("key", help="key that ends entry (default #)"),
            "first_digit_timeout": Field("number", help="seconds to wait for the first digit"),
            "inter_digit_timeout": Field("number", help="seconds to wait between digits"),
            "pattern": Field("regex", help="the digits must fully match this regular expression"),
            "sensitive": Field("bool", help="mask the digits in every log and transcript"),
            "confirm": Field("prompt", help="read back and ask 1=yes 2=no before accepting"),
            "confirm_below": Field("fraction", help="confirm spoken digits only when heard with less "
                                                    "confidence than this (needs speech: true)"),
            "speech": Field("bool", help="also accept spoken digits (default false)"),
        }),
        ActionSpec("ask", "free-form (or grammar) speech input into a variable", input=True, fields={
            **INPUT_FIELDS,
            "into": Field("var", required=True),
            "options": Field("words", help="phrases to recognise; free form when absent"),
            "sensitive": Field("bool"),
        }),
        # on_yes/on_no rather than yes/no: YAML 1.1 tools read a bare `yes:` key as a boolean
        ActionSpec("confirm", "yes/no: 1 or 'yes' -> on_yes, 2 or 'no' -> on_no", input=True, fields={
            **INPUT_FIELDS,
            "on_yes": Field("node", required=True),
            "on_no": Field("node", required=True),
        }),
        ActionSpec("set", "assign variables from expressions", value="assignments"),
        ActionSpec("branch", "go to the first branch whose `when` is true", value="branches"),
        ActionSpec("lookup", "look the caller up in the customer store", shorthand="by", fields={
            "by": Field("enum:caller|account|phone", help="caller ID (default), account number or phone"),
            "value": Field("expr", help="the account number / phone expression (for by: account|phone)"),
            "into": Field("var", help="variable for the result (default: customer)"),
            "found": Field("node"),
            "not_found": Field("node"),
            "on_error": Field("node"),
        }),
        ActionSpec("http", "call an HTTP API", fields={
            "url": Field("template", required=True),
            "method": Field("enum:GET|POST|PUT|PATCH|DELETE"),
            "headers": Field("headers"),
            "json": Field("json", help="request body as JSON (strings are templates)"),
            "timeout": Field("number", help="seconds (default 5)"),
            "into": Field("var", help="variable for {status, ok, json, text} (default: http)"),
            "on_error": Field("node", help="timeout, connection error or non-2xx status"),
        }),
        ActionSpec("transfer", "transfer to a SIP URI or queue:NAME", shorthand="to", fields={
            "to": Field("template", required=True),
            "on_failure": Field("node"),
            "after_call": Field("node", help="queue transfers: where the caller goes when the agent "
                                             "hangs up first (default: the call ends)"),
            "prefer_agent": Field("template", help="queue transfers: agent affinity, the agent (id or name) "
                                                   "offered the call first when available, e.g. "
                                                   "{customer.last.agent}; empty: anyone"),
            "prefer_for": Field("number", help="seconds of waiting the caller waits for prefer_agent "
                                               "before anyone with the skill takes them (default 30)"),
            "continues": Field("template", help="queue transfers: the id of the earlier interaction this "
                                                "call continues, e.g. {customer.last.id}; the agent's "
                                                "screen pop shows it"),
            "sensitive": Field("bool", help="queue transfers: mask every digit the caller says in the "
                                            "conversation's transcript (payments; keys are always masked)"),
        }),
        ActionSpec("callback", "offer a callback: the caller confirms their number (or keys another), is "
                               "told when to expect it and the call ends; an agent of the queue calls back",
                   shorthand="queue", fields={
            "queue": Field("template", required=True,
                           help="the queue whose agent calls back (NAME or queue:NAME)"),
            "hours": Field("template", help="[hours NAME] the callback waits for: placed from their next "
                                            "opening (default: as soon as an agent is free)"),
            "on_failure": Field("node", help="no callback taken: none configured, no number, star pressed"),
        }),
        ActionSpec("record", "record a message into the recordings directory", fields={
            "prompt": Field("prompt"),
            "into": Field("var", help="variable for the file path (default: recording)"),
            "max_seconds": Field("number", help="default 60"),
            "terminator": Field("key", help="key that ends the message (default #)"),
            "beep": Field("bool", help="play a beep before recording (default true)"),
        }),
        ActionSpec("hangup", "say goodbye (optional) and hang up", shorthand="prompt", fields={
            "prompt": Field("prompt"),
        }),
        ActionSpec("call", "run a sub-flow, then come back to next", shorthand="flow", fields={
            "flow": Field("flow", required=True),
            "with": Field("assignments", help="variables set before the sub-flow starts"),
        }),
        ActionSpec("return", "leave the current sub-flow (back to the caller's next)", value="none"),
        ActionSpec("pause", "wait in silence for some seconds", value="number"),
    ]
}

NODE_KEYS: dict[str, Field] = {
    "next": Field("node", help="node to go to afterwards"),
    "goto": Field("node", help="same as next"),
    "when": Field("expr", help="run this node only if true; otherwise go to else (or next)"),
    "else": Field("node", help="where to go when `when` is false"),
    "description": Field("str"),
}

SETTINGS_KEYS: dict[str, Field] = {
    "timeout": Field("number", help="default no-input timeout, seconds (5)"),
    "attempts": Field("int", help="default attempts for inputs (3)"),
    "inter_digit_timeout": Field("number", help="default seconds between digits (3)"),
    "dtmf_barge_in": Field("bool", help="default: true"),
    "speech_barge_in": Field("bool", help="default: true"),
    "sorry": Field("prompt", help="said when something goes wrong before hanging up"),
}

FLOW_KEYS: dict[str, Field] = {
    "description": Field("str"),
    "start": Field("node", required=True),
    "vars": Field("json", help="variables and their initial values"),
    "settings": Field("settings"),
    "nodes": Field("nodes", required=True),
}
