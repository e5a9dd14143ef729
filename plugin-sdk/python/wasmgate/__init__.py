"""Write wasmgate plugins in Python.

    import wasmgate

    class Tagger(wasmgate.Plugin):
        def on_request_headers(self, req):
            if req.path() == "/healthz":
                return wasmgate.respond(200, "ok\\n")
            req.set_header("x-tag", "python")

    Handler = wasmgate.export(Tagger)

Build it with `plugin-sdk/python/build.sh DIR OUT.wasm`. The gateway lends one instance to
each phase call, so carry what a request's later phases need in `wasmgate.state`, never in the
plugin object.
"""

from . import cache, clock, log, metrics, outbound, state, store, upstream
from ._errors import EditError, HostError, OutboundError, StoreError
from .config import ConfigError
from .http import LocalResponse, Request, Response, respond
from .plugin import RETRY, Plugin, export

__all__ = [
    "RETRY", "ConfigError", "EditError", "HostError", "LocalResponse", "OutboundError", "Plugin",
    "Request", "Response", "StoreError", "cache", "clock", "export", "log", "metrics", "outbound",
    "respond", "state", "store", "upstream",
]
