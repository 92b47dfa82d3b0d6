"""Kamailio (5.6) as registrar + record-routing proxy on loopback, from a generated config.

Routing: REGISTER is saved in usrloc (db_mode 0, memory only); requests to this proxy go to the
registered contact (lookup("location")), else to `next_hop` (e.g. the voice service), else 404.
So a service that registers as `ivr` and phones that register as themselves are both reachable.
OPTIONS to the proxy itself are answered 200 with Allow (siputils' options_reply sends none).

Quirks found: as root kamailio only warns (no -u/-g needed); `-DD -E` keeps it in the foreground
with logs on stderr; `-Y dir` moves its runtime dir (the default /run/kamailio may not exist);
kamcmd talks to the ctl module's unix socket, which we put in the run dir.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.peers import HOST, background, free_port, require, sip_options, wait_for

MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"

CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
tcp_children=2
auto_aliases=no
listen=udp:{host}:{port}
listen=tcp:{host}:{port}
alias="{host}:{port}"
mpath="{modules}"

loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "ctl.so"

modparam("ctl", "binrpc", "unix:{ctl}")
modparam("usrloc", "db_mode", 0)
modparam("rr", "enable_full_lr", 1)
modparam("registrar", "max_expires", 3600)
modparam("tm", "fr_timer", 10000)
modparam("tm", "fr_inv_timer", 60000)

request_route {{
    xlog("L_NOTICE", "REQ $rm $ru from $si:$sp ($ci)\\n");
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("OPTIONS") && uri == myself && $rU == $null) {{
        # options_reply() sends no Allow; RFC 3261 section 11.2 says it SHOULD be there
        append_to_reply("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER\r\n");
        sl_send_reply("200", "OK");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            route(RELAY);
            exit;
        }}
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
            exit;
        }}
        # in-dialog request without Route (pyVoIP sends its ACK/BYE like this): deliver by R-URI
        if (route(LOCAL) && !lookup("location")) {{
            route(NEXTHOP);
        }}
        route(RELAY);
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) route(RELAY);
        exit;
    }}
    t_check_trans();
    if (is_method("REGISTER")) {{
        if (!save("location")) sl_reply_error();
        exit;
    }}
    if (is_method("INVITE|SUBSCRIBE|REFER")) record_route();
    if (route(LOCAL)) {{
        if (!lookup("location")) route(NEXTHOP);
    }}
    route(RELAY);
}}

# for us: our address, or our IP without a port (pyVoIP 1.6.8 writes sip:user@<registrar ip>)
route[LOCAL] {{
    if (uri == myself || $ru =~ "^sips?:([^@]*@)?{host}(;.*)?$") return 1;
    return -1;
}}

route[NEXTHOP] {{
{next_hop_action}
}}

route[RELAY] {{
    if (!t_relay()) sl_reply_error();
    exit;
}}

onreply_route {{
    xlog("L_NOTICE", "REPLY $rs $rr to $rm ($ci)\\n");
}}
"""


@dataclass
class Kamailio:
    port: int
    config_path: Path
    log_path: Path
    ctl_socket: Path

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rpc(self, *command: str, timeout: float = 5.0) -> str:
        """Run a kamcmd RPC (e.g. `ul.dump`) against this instance."""
        out = subprocess.run(
            [require("kamcmd"), "-s", f"unix:{self.ctl_socket}", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return out.stdout + out.stderr

    def registered(self, user: str) -> list[str]:
        """Contacts registered for `user` (AoR), from `ul.lookup location user`."""
        text = self.rpc("ul.lookup", "location", user)
        return [line.split(":", 1)[1].strip() for line in text.splitlines() if "Address:" in line]

    def wait_registered(self, user: str, timeout: float = 10.0) -> list[str]:
        wait_for(lambda: self.registered(user), timeout, f"{user} registered at kamailio")
        return self.registered(user)


@contextlib.contextmanager
def running_kamailio(workdir: Path, *, next_hop: str = "", port: int | None = None) -> Iterator[Kamailio]:
    """Start kamailio in the foreground on 127.0.0.1:<free port> (UDP+TCP); always stopped on exit.

    `next_hop` (host:port) gets requests for users that are not registered."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    ctl = workdir / "kamailio_ctl"
    cfg = workdir / "kamailio.cfg"
    cfg.write_text(
        CONFIG.format(
            host=HOST,
            port=port,
            modules=MODULES,
            ctl=ctl,
            next_hop_action=f'    $du = "sip:{next_hop}";'
            if next_hop
            else '    sl_send_reply("404", "Not Found");\n    exit;',
        )
    )
    argv = [
        require("kamailio"),
        "-DD",
        "-E",
        "-f",
        str(cfg),
        "-Y",
        str(workdir),
        "-w",
        str(workdir),
        "-m",
        "64",
        "-M",
        "8",
        "-P",
        str(workdir / "kamailio.pid"),
    ]
    check = subprocess.run([*argv, "-c"], capture_output=True, text=True, timeout=20, check=False)
    if check.returncode != 0:
        raise RuntimeError(f"kamailio rejected {cfg}:\n{check.stdout}{check.stderr}")
    log = workdir / "kamailio.log"
    with background(argv, cwd=workdir, log=log) as proc:
        kam = Kamailio(port=port, config_path=cfg, log_path=log, ctl_socket=ctl)
        deadline = time.monotonic() + 15
        while sip_options(port, timeout=0.3) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kamailio did not answer OPTIONS on {port}:\n{kam.log[-3000:]}")
        yield kam
