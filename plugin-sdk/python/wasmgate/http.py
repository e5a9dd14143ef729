"""The request and response heads, and the local responses a phase answers with."""

from dataclasses import dataclass, field
from typing import Optional, Union

from wit_world.imports import request as _request
from wit_world.imports import response as _response
from wit_world.imports import types as _types

from ._errors import EditError, call

Value = Union[str, bytes]


def _bytes(value: Value) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _text(value: Optional[bytes]) -> Optional[str]:
    return None if value is None else value.decode("utf-8", "replace")


@dataclass
class LocalResponse:
    """A response the plugin writes itself, instead of going (on) upstream. Return it from a
    header phase, `select_upstream`, `on_request_body` or `on_upstream_error`."""

    status: int
    headers: list = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str, value: Value) -> "LocalResponse":
        """Adds a header; returns the response, so calls chain."""
        self.headers.append((name, _bytes(value)))
        return self

    def _wit(self) -> _types.LocalResponse:
        headers = [_types.Header(name, _bytes(value)) for name, value in self.headers]
        return _types.LocalResponse(self.status, headers, _bytes(self.body))


def respond(status: int, body: Value = b"", **headers: str) -> LocalResponse:
    """`respond(403, "no\\n", content_type="text/plain")`: underscores in header names become
    dashes."""
    response = LocalResponse(status, body=_bytes(body))
    for name, value in headers.items():
        response.header(name.replace("_", "-"), value)
    return response


class _Head:
    """Header reads and edits over one of the host's head interfaces."""

    _host = _request

    def header(self, name: str) -> Optional[str]:
        """The first value of `name` as text (invalid UTF-8 replaced), if present."""
        return _text(self._host.header(name))

    def header_bytes(self, name: str) -> Optional[bytes]:
        return self._host.header(name)

    def header_all(self, name: str) -> list:
        """Every value of `name`, as bytes, in order."""
        return self._host.header_all(name)

    def header_names(self) -> list:
        return self._host.header_names()

    def set_header(self, name: str, value: Value) -> None:
        """Replaces every value of `name`. Raises `EditError`."""
        call(EditError, self._host.set_header, name, _bytes(value))

    def add_header(self, name: str, value: Value) -> None:
        call(EditError, self._host.add_header, name, _bytes(value))

    def remove_header(self, name: str) -> bool:
        return call(EditError, self._host.remove_header, name)


class Request(_Head):
    """The downstream request, and the head that goes upstream."""

    _host = _request

    def method(self) -> str:
        return _request.method()

    def path(self) -> str:
        """The path without the query, as forwarded."""
        return _request.path()

    def query(self) -> Optional[str]:
        return _request.query()

    def host(self) -> Optional[str]:
        return _request.host()

    def scheme(self) -> str:
        return _request.scheme()

    def client_addr(self) -> str:
        """The client's `ip:port`."""
        return _request.client_addr()

    def client_ip(self) -> str:
        """The client's address without the port."""
        addr = _request.client_addr()
        return addr.rsplit(":", 1)[0].strip("[]")

    def client_identity(self) -> Optional[str]:
        return _request.client_identity()

    def route(self) -> str:
        return _request.route()

    def set_path(self, path_and_query: str) -> None:
        call(EditError, _request.set_path, path_and_query)


class Response(_Head):
    """The response head (or, in `on_response_trailers`, the trailers)."""

    _host = _response

    def status(self) -> int:
        return _response.status()

    def set_status(self, status: int) -> None:
        call(EditError, _response.set_status, status)
