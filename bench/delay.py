"""The benchmark's RTT delay line: every packet through the given links of the namespace this
runs in is held for half the round-trip time, each way, so that those links have that RTT (the
server abroad, seen from any machine inside the country). `tc qdisc … netem` is the usual tool;
kernels built without sch_netem (this VM's, many CI runners') have none, so this is NFQUEUE and
a timer: thousands of packets a second, plenty for the TTFB probes, far too few for iperf3, so
run.py switches it on only around the TTFB-at-RTT rounds.

    python bench/delay.py 40 eb123sb eb123ub     # inside the server namespace; "delay ready"

The rules are one atomic `iptables-restore` of the mangle table (the lab's censor does the
same for its filter table; this kernel's nftables has no queue statement), emptied on SIGTERM;
the namespace they live in is the benchmark's own and is deleted with it whatever happens."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

QUEUE = 7  # queue numbers are per namespace
READY = "delay ready"
QUEUE_MAX_LEN = 65536  # packets held at once before the kernel drops (fails closed)


EMPTY = "*mangle\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"


def ruleset(devices: list[str]) -> str:
    lines = ["*mangle", ":PREROUTING ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]"]
    for device in devices:
        lines.append(f"-A PREROUTING -i {device} -j NFQUEUE --queue-num {QUEUE}")
        lines.append(f"-A POSTROUTING -o {device} -j NFQUEUE --queue-num {QUEUE}")
    return "\n".join([*lines, "COMMIT"]) + "\n"


def restore(rules: str) -> None:
    done = subprocess.run(["iptables-restore"], input=rules, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"iptables-restore failed: {done.stderr.strip()}")


async def hold(rtt_ms: float, devices: list[str]) -> None:
    from netfilterqueue import NetfilterQueue, Packet

    loop = asyncio.get_running_loop()
    half = rtt_ms / 2000
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def on_packet(packet: Packet) -> None:
        loop.call_later(half, packet.accept)

    queue = NetfilterQueue()
    queue.bind(QUEUE, on_packet, max_len=QUEUE_MAX_LEN)
    try:
        loop.add_reader(queue.get_fd(), queue.run, False)
        restore(ruleset(devices))
        print(READY, flush=True)
        await stop.wait()
    finally:
        subprocess.run(["iptables-restore"], input=EMPTY, capture_output=True, text=True)
        loop.remove_reader(queue.get_fd())
        queue.unbind()


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: delay.py RTT_MS DEVICE...", file=sys.stderr)
        return 2
    asyncio.run(hold(float(argv[0]), argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
