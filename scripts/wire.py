#!/usr/bin/env python3
"""A slow, lossy wire between test hosts, in user space (this kernel has no `tc netem`).

    scripts/wire.py <set> <delay ms> <loss %> <n hosts>

Each host namespace sb<set>h<i> and this (the root) namespace get a TUN device `sbw<set>`:
host i holds 10.<set>.1.<10+i>/24, the root namespace 10.<set>.1.1. Every packet between them
passes through this process, which drops `loss` % of them at random and hands the others on
`delay` ms later: a path between two hosts has a round trip of twice the delay and loses about
`loss` % of its packets each way, as netem's `delay D loss L` would make it. Prints `ready` when
the devices are up; runs until killed (scripts/hosts.sh down), and the devices go with it.
"""
import ctypes
import fcntl
import heapq
import os
import random
import select
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)


def enter(ns_fd):
    if libc.setns(ns_fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def tun_in(ns, name, home):
    """A TUN device made inside namespace `ns` (None: this one); its fd works from anywhere."""
    if ns is not None:
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
        enter(fd)
        os.close(fd)
    try:
        tun = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
        return tun
    finally:
        enter(home)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    s, delay, loss, n = int(sys.argv[1]), float(sys.argv[2]) / 1000, float(sys.argv[3]) / 100, int(sys.argv[4])
    name = f"sbw{s}"
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    ends = [(None, f"10.{s}.1.1")] + [(f"sb{s}h{i}", f"10.{s}.1.{10 + i}") for i in range(1, n + 1)]
    by_addr = {}
    for ns, addr in ends:
        fd = tun_in(ns, name, home)
        ip = ["ip"] + (["-n", ns] if ns else [])
        subprocess.run(ip + ["addr", "add", f"{addr}/24", "dev", name], check=True)
        subprocess.run(ip + ["link", "set", name, "up"], check=True)
        by_addr[bytes(int(x) for x in addr.split("."))] = fd
    fds = list(by_addr.values())
    print("ready", flush=True)

    due = []  # (when, seq, fd, packet): a fixed delay keeps each path's order
    seq = 0
    while True:
        wait = max(0.0, due[0][0] - time.monotonic()) if due else 1.0
        readable, _, _ = select.select(fds, [], [], wait)
        now = time.monotonic()
        for fd in readable:
            while True:
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if len(packet) < 20 or packet[0] >> 4 != 4:
                    continue  # IPv4 only: nothing else is addressed here
                to = by_addr.get(packet[16:20])
                if to is None or random.random() < loss:
                    continue
                seq += 1
                heapq.heappush(due, (now + delay, seq, to, packet))
        while due and due[0][0] <= now:
            _, _, to, packet = heapq.heappop(due)
            try:
                os.write(to, packet)
            except OSError:
                pass  # a full device queue drops, as a congested link would


if __name__ == "__main__":
    main()
