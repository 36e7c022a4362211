#!/usr/bin/env python3
"""A TCP proxy that adds a fixed one-way delay, to emulate a slow link to PostgreSQL.

    delay_proxy.py LISTEN_PORT UPSTREAM [--delay-ms 1.0] [--ready-file PATH]

UPSTREAM is ``HOST:PORT`` or the path of a Unix socket (such as the embedded
server's ``.s.PGSQL.5432``). Listens on 127.0.0.1 only.

Why a userspace proxy and not ``tc netem``: netem changes the kernel's
loopback for every process on the machine (other engineers' tests share it),
and where the bench runs (containers) the ``sch_netem`` module is often not
there at all. Here every byte is held back DELAY ms in each direction, so a
request/response round trip costs 2 x DELAY, like netem on both ends; order is
kept and bandwidth is not limited. Each direction has a reader thread that
stamps chunks on arrival and a writer thread that sleeps until the stamp plus
the delay, because an event loop's timers are only millisecond-accurate.

Standard library only.
"""

import argparse
import queue
import socket
import sys
import threading
import time


def pump(src, dst, delay):
    q = queue.SimpleQueue()

    def reader():
        try:
            while True:
                data = src.recv(1 << 16)
                q.put((time.monotonic(), data))
                if not data:
                    return
        except OSError:
            q.put((time.monotonic(), b""))

    def writer():
        try:
            while True:
                stamp, data = q.get()
                wait = stamp + delay - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                src.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    threads = [threading.Thread(target=reader, daemon=True),
               threading.Thread(target=writer, daemon=True)]
    for t in threads:
        t.start()
    return threads


def connect(upstream):
    if upstream.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(upstream)
        return s
    host, _, port = upstream.rpartition(":")
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def serve(client, upstream, delay):
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        server = connect(upstream)
    except OSError as e:
        print(f"delay_proxy: cannot reach {upstream}: {e}", file=sys.stderr)
        client.close()
        return
    threads = pump(client, server, delay) + pump(server, client, delay)
    for t in threads:
        t.join()
    client.close()
    server.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("listen_port", type=int)
    p.add_argument("upstream")
    p.add_argument("--delay-ms", type=float, default=1.0, help="one-way delay (default 1.0)")
    p.add_argument("--ready-file", help="touch this file once listening")
    a = p.parse_args()
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", a.listen_port))
    ls.listen(64)
    if a.ready_file:
        open(a.ready_file, "w").close()
    delay = a.delay_ms / 1000.0
    while True:
        client, _ = ls.accept()
        threading.Thread(target=serve, args=(client, a.upstream, delay), daemon=True).start()


if __name__ == "__main__":
    main()
