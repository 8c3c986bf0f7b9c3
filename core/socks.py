"""A SOCKS5 CONNECT client (RFC 1928, no authentication): the hop to the MSI via Tailscale.

Only what asyncssh needs: a connected socket to hand to ``asyncssh.connect(sock=...)``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct

from core.errors import Unreachable

_REPLIES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


async def open_socks5(proxy: str, host: str, port: int, timeout: float) -> socket.socket:
    """A blocking-mode-free socket connected to host:port through the SOCKS5 proxy 'HOST:PORT'."""
    proxy_host, _, proxy_port = proxy.rpartition(":")
    try:
        return await asyncio.wait_for(
            _connect(proxy_host, int(proxy_port), host, port), timeout=timeout
        )
    except TimeoutError:
        raise Unreachable(f"SOCKS5 proxy {proxy}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise Unreachable(f"SOCKS5 proxy {proxy}: {exc.strerror or exc}") from None


async def _connect(proxy_host: str, proxy_port: int, host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(proxy_host, proxy_port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, address)
        await loop.sock_sendall(sock, b"\x05\x01\x00")  # version 5, one method: no auth
        version, method = await _recv(loop, sock, 2)
        if version != 5 or method != 0:
            raise Unreachable(f"SOCKS5 proxy {proxy_host}:{proxy_port} wants authentication")
        await loop.sock_sendall(sock, b"\x05\x01\x00" + _address(host) + struct.pack("!H", port))
        _, reply, _, kind_byte = await _recv(loop, sock, 4)
        if reply != 0:
            reason = _REPLIES.get(reply, f"error {reply}")
            raise Unreachable(f"SOCKS5 proxy could not reach {host}:{port}: {reason}")
        skip = {1: 4, 4: 16}.get(kind_byte)
        if skip is None:
            (skip,) = await _recv(loop, sock, 1)
        await _recv(loop, sock, skip + 2)
    except BaseException:
        sock.close()
        raise
    return sock


def _address(host: str) -> bytes:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        encoded = host.encode("idna")
        return b"\x03" + bytes([len(encoded)]) + encoded
    return (b"\x01" if ip.version == 4 else b"\x04") + ip.packed


async def _recv(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise Unreachable("SOCKS5 proxy closed the connection")
        data += chunk
    return data
