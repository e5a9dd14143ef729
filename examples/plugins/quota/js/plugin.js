// quota in JavaScript: at most `limit` requests per client in each `window_ms`, counted in the
// shared store (so across every instance, and across replicas on Redis). The client is the
// value of the `key_header` header, else its IP address. Answers 429 past the limit, and tells
// every client what it has left in `x-quota-remaining`.
import { Plugin, StoreError, clock, exportPlugin, log, metrics, respond, state, store } from 'wasmgate';

class Quota extends Plugin {
  static config = { limit: Number, window_ms: 60000, key_header: '' };

  constructor(config) {
    super(config);
    if (config.limit < 1 || config.window_ms < 1) throw new Error('`limit` and `window_ms` must be at least 1');
  }

  onRequestHeaders(req) {
    const { limit, window_ms: windowMs, key_header: keyHeader } = this.config;
    const client = (keyHeader && req.header(keyHeader)) || req.clientIp();
    const window = Math.floor(clock.wallMs() / windowMs);
    let used;
    try {
      used = store.increment(`${client}:${window}`, 1, windowMs);
    } catch (error) {
      if (!(error instanceof StoreError)) throw error;
      // Fail open: a store outage must not refuse every request.
      log.warn(`quota not counted: ${error.message}`);
      return;
    }
    if (used > limit) {
      metrics.counter('quota_refused');
      const retryAfter = Math.floor(((window + 1) * windowMs - clock.wallMs()) / 1000) + 1;
      return respond(429, 'quota exceeded\n', { 'retry-after': String(retryAfter), 'x-quota-remaining': '0' });
    }
    // The response phase may run on another instance: the count travels in the request's state.
    state.set('remaining', String(limit - used));
  }

  onResponseHeaders(req, resp) {
    const remaining = state.get('remaining');
    if (remaining !== undefined) resp.setHeader('x-quota-remaining', remaining);
  }
}

export const handler = exportPlugin(Quota);
