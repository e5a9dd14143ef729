"""add-header in Python: sets the request and response headers its config lists."""

from dataclasses import dataclass, field

import wasmgate


@dataclass
class Config:
    request: dict[str, str] = field(default_factory=dict)
    response: dict[str, str] = field(default_factory=dict)


class AddHeader(wasmgate.Plugin):
    Config = Config

    def __init__(self, config: Config):
        for name in [*config.request, *config.response]:
            if not name or not all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name):
                raise ValueError(f"header {name!r}: the name is not an RFC 9110 token")
        self.config = config

    def on_request_headers(self, req):
        for name, value in self.config.request.items():
            req.set_header(name, value)

    def on_response_headers(self, req, resp):
        for name, value in self.config.response.items():
            resp.set_header(name, value)


Handler = wasmgate.export(AddHeader)
