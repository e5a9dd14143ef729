"""Requests from the plugin to a configured upstream group (not in `init` or `on_log`)."""

from dataclasses import dataclass
from typing import Optional, Union

from wit_world.imports import outbound as _outbound
from wit_world.imports import types as _types

from ._errors import OutboundError, call


@dataclass
class OutboundResponse:
    status: int
    headers: list
    body: bytes

    def header(self, name: str) -> Optional[str]:
        name = name.lower()
        for header in self.headers:
            if header.name == name:
                return header.value.decode("utf-8", "replace")
        return None


def call_group(
    group: str,
    method: str = "GET",
    path: str = "/",
    headers: Optional[dict] = None,
    body: Union[str, bytes] = b"",
    timeout_ms: int = 0,
) -> OutboundResponse:
    """Sends a request to a backend of `group` and reads the whole answer. `timeout_ms` 0 is the
    host's default (1 s). Raises `OutboundError`."""
    wit_headers = [_types.Header(n, v.encode() if isinstance(v, str) else v) for n, v in (headers or {}).items()]
    body = body.encode() if isinstance(body, str) else bytes(body)
    request = _types.OutboundRequest(method, path, wit_headers, body, timeout_ms)
    answer = call(OutboundError, _outbound.call, group, request)
    return OutboundResponse(answer.status, answer.headers, answer.body)
