"""The `Plugin` base class, and `export`, which turns a subclass into the component's
`handler`: one plugin object per instance, made by `init`, whose overridden phases are the ones
declared to the host."""

import traceback

from componentize_py_types import Err
from wit_world.imports import types as _types

from . import log
from .config import ConfigError, load
from .http import LocalResponse, Request, Response
from .upstream import Choice

# Each phase method and the flag that declares it, in the WIT's order.
_PHASES = {
    "on_request_headers": _types.Phases.REQUEST_HEADERS,
    "on_request_body": _types.Phases.REQUEST_BODY,
    "select_upstream": _types.Phases.SELECT_UPSTREAM,
    "on_upstream_request": _types.Phases.UPSTREAM_REQUEST,
    "on_upstream_error": _types.Phases.UPSTREAM_ERROR,
    "on_response_headers": _types.Phases.RESPONSE_HEADERS,
    "on_response_body": _types.Phases.RESPONSE_BODY,
    "on_response_trailers": _types.Phases.RESPONSE_TRAILERS,
    "on_log": _types.Phases.LOG,
}

RETRY = object()
"""Return from `on_upstream_error` to ask for another attempt on another backend."""


class Plugin:
    """Subclass it, set `Config` to a dataclass (or leave None for the JSON as a dict), and
    override only the phases you need: the host calls no other. Each phase returns None to carry
    on, or what its docstring says. An exception that escapes a phase is logged with its
    traceback and fails the request per the plugin's `on_failure`; the instance is kept."""

    Config = None

    def __init__(self, config):
        """Called once per instance with the parsed config; raise to refuse it."""
        self.config = config

    def on_request_headers(self, req: Request):
        """None, or a `LocalResponse` to answer."""

    def on_request_body(self, req: Request, chunk: bytes, end: bool):
        """None to pass the chunk, bytes to replace it, or a `LocalResponse` (buffered bodies)."""

    def select_upstream(self, req: Request):
        """None for the route's balancer, an `upstream` choice, or a `LocalResponse`."""

    def on_upstream_request(self, req: Request):
        """None, or a `LocalResponse`."""

    def on_upstream_error(self, req: Request, failure):
        """None for the host's policy, `RETRY`, or a `LocalResponse`."""

    def on_response_headers(self, req: Request, resp: Response):
        """None, or a `LocalResponse` to replace the response."""

    def on_response_body(self, req: Request, chunk: bytes, end: bool):
        """None to pass the chunk, or bytes to replace it."""

    def on_response_trailers(self, trailers: Response):
        """Edit the trailers through `trailers`."""

    def on_log(self, req: Request, entry):
        """`entry` has `status`, `duration_us`, `upstream_us`, `bytes_in`, `bytes_out`, `backend`
        and `error`."""


# A value the host refuses as invalid: how a phase that raised fails its request without
# trapping, so the instance survives.
_FAILED = _types.LocalResponse(0, [], b"")


def export(cls: type) -> type:
    """The component's `Handler` class for the plugin class `cls`: write
    `Handler = wasmgate.export(MyPlugin)` at the top level of the app module."""
    request, response = Request(), Response()
    slot = []
    phases = _types.Phases(0)
    for name, flag in _PHASES.items():
        if getattr(cls, name) is not getattr(Plugin, name):
            phases |= flag

    def run(phase: str, *args):
        try:
            return getattr(slot[0], phase)(*args), None
        except Exception:
            log.error(f"{phase} raised:\n{traceback.format_exc()}")
            return None, _FAILED

    def action(result, failed):
        if failed is not None:
            return _types.Action_Respond(failed)
        if isinstance(result, LocalResponse):
            return _types.Action_Respond(result._wit())
        return _types.Action_Continue()

    def body_action(result, failed):
        if failed is not None:
            return _types.BodyAction_Respond(failed)
        if isinstance(result, LocalResponse):
            return _types.BodyAction_Respond(result._wit())
        if result is None:
            return _types.BodyAction_Continue()
        return _types.BodyAction_Replace(result.encode() if isinstance(result, str) else bytes(result))

    class Handler:
        def init(self, config: str) -> _types.Phases:
            try:
                slot[:] = [cls(load(config, cls.Config))]
            except ConfigError as error:
                raise Err(str(error)) from None
            except Exception as error:
                raise Err(f"{type(error).__name__}: {error}") from None
            return phases

        def on_request_headers(self):
            return action(*run("on_request_headers", request))

        def on_request_body(self, chunk: bytes, end: bool):
            return body_action(*run("on_request_body", request, chunk, end))

        def select_upstream(self):
            result, failed = run("select_upstream", request)
            if failed is not None:
                return _types.UpstreamChoice_Respond(failed)
            if isinstance(result, Choice):
                return result.wit
            if isinstance(result, LocalResponse):
                return _types.UpstreamChoice_Respond(result._wit())
            return _types.UpstreamChoice_Default()

        def on_upstream_request(self):
            return action(*run("on_upstream_request", request))

        def on_upstream_error(self, failure):
            result, failed = run("on_upstream_error", request, failure)
            if failed is not None:
                return _types.ErrorAction_Respond(failed)
            if result is RETRY:
                return _types.ErrorAction_Retry()
            if isinstance(result, LocalResponse):
                return _types.ErrorAction_Respond(result._wit())
            return _types.ErrorAction_Default()

        def on_response_headers(self):
            return action(*run("on_response_headers", request, response))

        def on_response_body(self, chunk: bytes, end: bool):
            return body_action(*run("on_response_body", request, chunk, end))

        def on_response_trailers(self):
            run("on_response_trailers", response)

        def on_log(self, entry):
            run("on_log", request, entry)

    return Handler
