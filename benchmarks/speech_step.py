"""End of speech -> next prompt, through real SIP calls, at 5, 20 and 50 concurrent speaking callers.

For each stage N, sipp places N calls at once (dtmf_call.xml, all within about a second); each
caller is silent for 1.5 s, then says a digit (a human recording, Allison's "five", 8 kHz
G.711 µ-law) at the spoken-digit menu of tests/flows_human, and hangs up if the service has not
within 20 s. The service's record gives when the
caller stopped speaking (the endpointer's last voiced frame, `speech_end`) and when the next
node's prompt started; the difference is what a caller waits after their last syllable: the
end-of-speech silence ([asr] complete_timeout_ms, 500 ms), the decode in the worker pool and the
flow step. Prints p50/p95/max per stage with the load average (the machine is shared).

    .venv/bin/python benchmarks/speech_step.py [--callers 5,20,50] [--engine whisper]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.peers import human_speech  # noqa: E402
from tests.peers.pcap import RtpStreamBuilder  # noqa: E402
from tests.peers.service import running_service  # noqa: E402
from tests.peers.sipp import run_sipp  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", default="5,20,50")
    parser.add_argument("--engine", default="whisper")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--digit", type=int, default=5)
    args = parser.parse_args()
    stages = [int(n) for n in args.callers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-speech-"))
    word, path = human_speech.DIGITS[args.digit]
    pcap = RtpStreamBuilder().silence(1500).audio(human_speech.load_8k(path)).silence(6000).write(
        work / "call.pcap")
    asr = {"engine": args.engine, "workers": args.workers}
    ivr = {"flows": str(REPO / "tests" / "flows_human")}
    print(f"engine {args.engine}, {args.workers} workers, {os.cpu_count()} cores; caller says {word!r}")
    with running_service(work / "svc", asr=asr, ivr=ivr, rtp_pairs=max(stages) + 10,
                         start_timeout=60) as svc:
        seen = 0
        for n in stages:
            result = run_sipp("dtmf_call.xml", svc.sip_address, workdir=work / f"sipp-{n}", calls=n, limit=n,
                              rate=float(n), timeout=120, pcaps={"call.pcap": pcap},
                              replace={'request="BYE" timeout="30000"': 'request="BYE" timeout="20000"'})
            load = os.getloadavg()[0]

            def logged(skip: int = seen) -> list[dict]:
                return [json.loads(line.split(" voice.calls: ", 1)[1])
                        for line in svc.log.splitlines() if " voice.calls: {" in line][skip:]

            deadline = time.monotonic() + 15  # a record is written when its call has ended
            while len(logged()) < n and time.monotonic() < deadline:
                time.sleep(0.2)
            records = logged()
            seen += len(records)
            waits, missed, right = [], 0, 0
            for record in records:
                speech = [i for i in record["inputs"] if i["kind"] == "speech" and i["status"] == "match"]
                if not speech:
                    missed += 1
                    continue
                right += [p["node"] for p in record["path"]][1:2] == [f"said_{word}"]
                after = [p["t"] for p in record["prompts"]
                         if p["node"] != "menu" and p["t"] >= speech[0]["t"]]
                if after:
                    waits.append((after[0] - speech[0]["speech_end"]) * 1000)
            print(f"\n{n} concurrent callers: sipp successful {result.successful} failed {result.failed}; "
                  f"{len(records)} records, {right} routed to said_{word}, {missed} without a match")
            if waits:
                print(f"  end of speech -> next prompt: p50 {statistics.median(waits):.0f} ms, "
                      f"p95 {pct(waits, 0.95):.0f} ms, max {max(waits):.0f} ms  (load {load:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
