// add-header in JavaScript: sets the request and response headers its config lists.
import { Plugin, exportPlugin } from 'wasmgate';

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

class AddHeader extends Plugin {
  static config = { request: {}, response: {} };

  constructor(config) {
    super(config);
    for (const name of [...Object.keys(config.request), ...Object.keys(config.response)]) {
      if (!TOKEN.test(name)) throw new Error(`header ${JSON.stringify(name)}: the name is not an RFC 9110 token`);
    }
  }

  onRequestHeaders(req) {
    for (const [name, value] of Object.entries(this.config.request)) req.setHeader(name, value);
  }

  onResponseHeaders(req, resp) {
    for (const [name, value] of Object.entries(this.config.response)) resp.setHeader(name, value);
  }
}

export const handler = exportPlugin(AddHeader);
