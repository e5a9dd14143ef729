"""quota in Python: at most `limit` requests per client in each `window_ms`, counted in the
shared store (so across every instance, and across replicas on Redis). The client is the value
of the `key_header` header, else its IP address. Answers 429 past the limit, and tells every
client what it has left in `x-quota-remaining`."""

from dataclasses import dataclass

import wasmgate
from wasmgate import clock, log, metrics, state, store


@dataclass
class Config:
    limit: int
    window_ms: int = 60_000
    key_header: str = ""


class Quota(wasmgate.Plugin):
    Config = Config

    def __init__(self, config: Config):
        if config.limit < 1 or config.window_ms < 1:
            raise ValueError("`limit` and `window_ms` must be at least 1")
        self.config = config

    def on_request_headers(self, req):
        c = self.config
        client = (c.key_header and req.header(c.key_header)) or req.client_ip()
        window = clock.wall_ms() // c.window_ms
        try:
            used = store.increment(f"{client}:{window}", 1, c.window_ms)
        except wasmgate.StoreError as error:
            # Fail open: a store outage must not refuse every request.
            log.warn(f"quota not counted: {error}")
            return None
        if used > c.limit:
            metrics.counter("quota_refused")
            retry_after = str(((window + 1) * c.window_ms - clock.wall_ms()) // 1000 + 1)
            return wasmgate.respond(429, "quota exceeded\n", retry_after=retry_after, x_quota_remaining="0")
        # The response phase may run on another instance: the count travels in the request's state.
        state.set("remaining", str(c.limit - used))

    def on_response_headers(self, req, resp):
        remaining = state.get("remaining")
        if remaining is not None:
            resp.set_header("x-quota-remaining", remaining)


Handler = wasmgate.export(Quota)
