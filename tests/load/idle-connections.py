#!/usr/bin/env python3
"""What idle keep-alive client connections cost a server, for docs/performance.md:

    tests/load/idle-connections.py PORT PID [COUNT]

Opens COUNT (10000) connections to 127.0.0.1:PORT, sends one `GET /hello` on each and reads
its response, then holds them all open and idle; prints the server's RSS (VmRSS of PID) before,
with all of them open, and after they close. Raise the open-file limit first (`ulimit -n
30000`): the gateway's own limit must allow COUNT connections too (`[server] max_connections`).
"""

import asyncio
import resource
import sys


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for {pid}")


async def one(port, request):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.split(b"\r\n")[0].decode())
    return writer


async def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1000), hard))
    request = f"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    before = rss_kib(pid)
    writers = []
    for start in range(0, count, 500):
        batch = [one(port, request) for _ in range(start, min(count, start + 500))]
        writers += await asyncio.gather(*batch)
    await asyncio.sleep(2)
    held = rss_kib(pid)
    for writer in writers:
        writer.close()
    await asyncio.sleep(2)
    after = rss_kib(pid)
    per = (held - before) / len(writers)
    print(
        f"{len(writers)} idle connections: RSS {before / 1024:.1f} MiB before, {held / 1024:.1f} MiB held "
        f"(+{(held - before) / 1024:.1f} MiB, {per:.1f} KiB each), {after / 1024:.1f} MiB after closing"
    )


asyncio.run(main())
