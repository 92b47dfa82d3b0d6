"""End of speech -> next prompt, through real SIP calls.

N sipp callers (dtmf_call.xml) stay silent for 3.5 s, then say "billing" (flite, G.711) at the demo
flow's main menu. For each call the service's record gives when the caller stopped speaking (the
endpointer's last voiced frame, `speech_end`) and when the next node's prompt started; the
difference is what a caller waits after their last syllable: the end-of-speech silence
([asr] complete_timeout_ms), recognition, and the flow step. Prints p50/p95/max.

    .venv/bin/python benchmarks/speech_step.py --calls 50 --rate 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.peers.pcap import RtpStreamBuilder  # noqa: E402
from tests.peers.service import running_service  # noqa: E402
from tests.peers.sipp import run_sipp  # noqa: E402
from voice.asr.testaudio import render_phrase  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-speech-"))
    pcm = render_phrase("billing", voice="slt", lead=0.2, tail=0.3)
    pcap = RtpStreamBuilder().silence(3500).audio(pcm).silence(6000).write(work / "call.pcap")
    with running_service(work / "svc", asr={"engine": "pocketsphinx"}) as svc:
        result = run_sipp("dtmf_call.xml", svc.sip_address, workdir=work / "sipp", calls=args.calls,
                          limit=args.calls, rate=args.rate, timeout=120, pcaps={"call.pcap": pcap},
                          replace={'request="BYE" timeout="30000"': 'request="BYE" timeout="9000"'})
        records = [json.loads(line.split(" voice.calls: ", 1)[1])
                   for line in svc.log.splitlines() if " voice.calls: {" in line]
    waits, missed = [], 0
    for record in records:
        speech = [i for i in record["inputs"] if i["kind"] == "speech" and i["status"] == "match"]
        if not speech:
            missed += 1
            continue
        after = [p["t"] for p in record["prompts"] if p["node"] != "main_menu" and p["t"] >= speech[0]["t"]]
        if after:
            waits.append((after[0] - speech[0]["speech_end"]) * 1000)
    print(f"calls: {args.calls} at {args.rate}/s, sipp successful {result.successful} failed {result.failed}")
    print(f"recognized: {len(waits)} of {len(records)} records ({missed} without a match)")
    if waits:
        print(f"end of speech -> next prompt: p50 {statistics.median(waits):.0f} ms, "
              f"p95 {pct(waits, 0.95):.0f} ms, max {max(waits):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
