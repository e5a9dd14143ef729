// Write wasmgate plugins in JavaScript: a `Plugin` base class whose phases default to no-ops,
// `exportPlugin`, which turns a subclass into the component's `handler` (declaring to the host
// the phases the subclass overrides), typed config, and the host API as plain JavaScript.
// Built with QuickJS (plugin-sdk/js/build.sh), which has no TextEncoder, console or crypto:
// the helpers below stand in where the SDK needs them.

import * as hostRequest from 'wasmgate:plugin/request@0.1.2';
import * as hostResponse from 'wasmgate:plugin/response@0.1.2';
import * as hostState from 'wasmgate:plugin/state@0.1.2';
import * as hostStore from 'wasmgate:plugin/store@0.1.2';
import * as hostMetrics from 'wasmgate:plugin/metrics@0.1.2';
import * as hostClock from 'wasmgate:plugin/clock@0.1.2';
import * as hostLog from 'wasmgate:plugin/log@0.1.2';
import * as hostOutbound from 'wasmgate:plugin/outbound@0.1.2';
import * as hostUpstream from 'wasmgate:plugin/upstream@0.1.2';
import * as hostCache from 'wasmgate:plugin/cache@0.1.2';

/** UTF-8 bytes of a string (QuickJS has no TextEncoder). */
export function encode(text) {
  if (text instanceof Uint8Array) return text;
  const bytes = [];
  for (const ch of String(text)) {
    let c = ch.codePointAt(0);
    if (c < 0x80) bytes.push(c);
    else if (c < 0x800) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(bytes);
}

/** The string of UTF-8 bytes; invalid sequences become U+FFFD. */
export function decode(bytes) {
  if (bytes === undefined || bytes === null) return undefined;
  let out = '';
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    const need = b < 0x80 ? 0 : b >> 5 === 6 ? 1 : b >> 4 === 14 ? 2 : b >> 3 === 30 ? 3 : -1;
    let c = need === 0 ? b : need === 1 ? b & 31 : need === 2 ? b & 15 : b & 7;
    let ok = need >= 0 && i + need < bytes.length + (need === 0 ? 1 : 0);
    for (let k = 1; ok && k <= need; k++) {
      if (i + k >= bytes.length || bytes[i + k] >> 6 !== 2) ok = false;
      else c = (c << 6) | (bytes[i + k] & 63);
    }
    if (!ok) { out += '\ufffd'; i += 1; continue; }
    out += String.fromCodePoint(c);
    i += need + 1;
  }
  return out;
}

/** A host call refused what the plugin asked; `kind` is the WIT case, e.g. `read-only`. */
export class HostError extends Error {
  constructor(kind, message = '') {
    super(message ? `${kind}: ${message}` : kind);
    this.kind = kind;
    this.detail = message;
  }
}
export class EditError extends HostError {}
export class StoreError extends HostError {}
export class OutboundError extends HostError {}

// Calls a host function whose WIT result is `result<_, E>`, turning its error into `Kind`.
function call(Kind, fn, ...args) {
  try {
    return fn(...args);
  } catch (thrown) {
    const value = thrown && thrown.payload !== undefined ? thrown.payload : thrown;
    if (value && typeof value.tag === 'string') throw new Kind(value.tag, value.val === undefined ? '' : String(value.val));
    if (typeof value === 'string') throw new Kind(value);
    throw thrown;
  }
}

/** A response the plugin writes itself: `respond(429, 'slow down\n', { 'retry-after': '1' })`. */
export function respond(status, body = '', headers = {}) {
  return new LocalResponse(status, headers, body);
}

export class LocalResponse {
  constructor(status, headers = {}, body = '') {
    this.status = status;
    this.headers = Object.entries(headers).map(([name, value]) => ({ name, value: encode(value) }));
    this.body = encode(body);
  }
}

class Head {
  constructor(host) { this.host = host; }
  /** The first value of `name` as text, if present. */
  header(name) { return decode(this.host.header(name)); }
  headerBytes(name) { return this.host.header(name); }
  headerAll(name) { return this.host.headerAll(name); }
  headerNames() { return this.host.headerNames(); }
  setHeader(name, value) { call(EditError, this.host.setHeader, name, encode(value)); }
  addHeader(name, value) { call(EditError, this.host.addHeader, name, encode(value)); }
  removeHeader(name) { return call(EditError, this.host.removeHeader, name); }
}

/** The downstream request, and the head that goes upstream. */
export class Request extends Head {
  constructor() { super(hostRequest); }
  method() { return hostRequest.method(); }
  path() { return hostRequest.path(); }
  query() { return hostRequest.query(); }
  host() { return hostRequest.host(); }
  scheme() { return hostRequest.scheme(); }
  clientAddr() { return hostRequest.clientAddr(); }
  /** The client's address without the port. */
  clientIp() { return hostRequest.clientAddr().replace(/:\d+$/, '').replace(/^\[|\]$/g, ''); }
  clientIdentity() { return hostRequest.clientIdentity(); }
  route() { return hostRequest.route(); }
  setPath(pathAndQuery) { call(EditError, hostRequest.setPath, pathAndQuery); }
}

/** The response head (the trailers in `onResponseTrailers`). */
export class Response extends Head {
  constructor() { super(hostResponse); }
  status() { return hostResponse.status(); }
  setStatus(status) { call(EditError, hostResponse.setStatus, status); }
}

const level = (name) => (message) => hostLog.write(name, String(message));
/** The plugin's log, in the gateway's log under the plugin's name. */
export const log = { trace: level('trace'), debug: level('debug'), info: level('info'), warn: level('warn'), error: level('error') };

/** Per-request state the host keeps between phases; carry a request's data here. */
export const state = {
  get: (key) => hostState.get(key),
  getText: (key) => decode(hostState.get(key)),
  set: (key, value) => hostState.set(key, encode(value)),
  remove: (key) => hostState.remove(key),
};

/** The store shared by every instance (in memory, or Redis across replicas); throws StoreError. */
export const store = {
  get: (key) => call(StoreError, hostStore.get, key),
  set: (key, value, ttlMs = 0) => call(StoreError, hostStore.set, key, encode(value), ttlMs),
  delete: (key) => call(StoreError, hostStore.delete, key),
  /** Adds `delta` atomically; returns the new value. */
  increment: (key, delta = 1, ttlMs = 0) => call(StoreError, hostStore.increment, key, delta, ttlMs),
  compareAndSwap: (key, expected, value, ttlMs = 0) =>
    call(StoreError, hostStore.compareAndSwap, key, expected === undefined ? undefined : encode(expected), encode(value), ttlMs),
};

const labels = (object) => Object.entries(object || {}).map(([k, v]) => [k, String(v)]);
/** Metrics, exported as `wasmgate_plugin_<name>`; false when the host refuses one. */
export const metrics = {
  counter: (name, value = 1, l = {}) => hostMetrics.counterAdd(name, labels(l), value),
  gauge: (name, value, l = {}) => hostMetrics.gaugeSet(name, labels(l), value),
  histogram: (name, value, l = {}) => hostMetrics.histogramRecord(name, labels(l), value),
};

/** Clocks and randomness (QuickJS's Math.random is the same in every instance: use these). */
export const clock = {
  monotonicNs: () => hostClock.monotonicNs(),
  wallMs: () => hostClock.wallMs(),
  randomBytes: (length) => hostClock.randomBytes(length),
};

/** The cache of a route with `cache = { ... }`; each throws EditError outside its phase. */
export const cache = {
  setKey: (key) => call(EditError, hostCache.setKey, key),
  addKeyPart: (part) => call(EditError, hostCache.addKeyPart, part),
  bypass: () => call(EditError, hostCache.bypass),
  setTtlMs: (ttlMs) => call(EditError, hostCache.setTtl, ttlMs),
};

/** Where a request goes: return one of these from `selectUpstream`. */
export const upstream = {
  group: () => hostUpstream.group(),
  backends: (group) => hostUpstream.backends(group),
  setSni: (name) => call(EditError, hostUpstream.setSni, name),
  backend: (index) => ({ choice: { tag: 'backend', val: index } }),
  toGroup: (name, index) =>
    ({ choice: index === undefined ? { tag: 'group', val: name } : { tag: 'group-backend', val: [name, index] } }),
  hashKey: (key) => ({ choice: { tag: 'hash-key', val: key } }),
};

/** Sends a request to a backend of `group`; throws OutboundError. Not in `init` or `onLog`. */
export function outbound(group, { method = 'GET', path = '/', headers = {}, body = '', timeoutMs = 0 } = {}) {
  const request = {
    method, path, body: encode(body), timeoutMs,
    headers: Object.entries(headers).map(([name, value]) => ({ name, value: encode(value) })),
  };
  const answer = call(OutboundError, hostOutbound.call, group, request);
  return { status: answer.status, headers: answer.headers, body: answer.body, text: () => decode(answer.body) };
}

/** Return from `onUpstreamError` to ask for another attempt. */
export const RETRY = Symbol('retry');

/** Thrown when the config does not fit; the gateway refuses to start with its message. */
export class ConfigError extends Error {}

const TYPES = new Map([[Number, 'number'], [String, 'string'], [Boolean, 'boolean'], [Object, 'object'], [Array, 'array']]);
const typeOf = (v) => (Array.isArray(v) ? 'array' : v === null ? 'null' : typeof v);

/** Reads `config` against `schema`: each field is a type (`Number`, `String`, `Boolean`,
 *  `Object`, `Array`; required) or a default value (optional, of that value's type). */
export function parseConfig(config, schema) {
  if (typeOf(config) !== 'object') throw new ConfigError(`invalid config: must be a table, not ${JSON.stringify(config)}`);
  for (const key of Object.keys(config)) {
    if (!(key in schema)) {
      throw new ConfigError(`invalid config: unknown field \`${key}\`, expected one of ${Object.keys(schema).map((k) => `\`${k}\``).join(', ') || 'none'}`);
    }
  }
  const out = {};
  for (const [key, spec] of Object.entries(schema)) {
    const required = TYPES.has(spec);
    const want = required ? TYPES.get(spec) : typeOf(spec);
    if (!(key in config)) {
      if (required) throw new ConfigError(`invalid config: missing field \`${key}\``);
      out[key] = spec;
    } else if (typeOf(config[key]) !== want) {
      throw new ConfigError(`invalid config: \`${key}\` must be ${want === 'object' ? 'a table' : `a ${want}`}, not ${JSON.stringify(config[key])}`);
    } else {
      out[key] = config[key];
    }
  }
  return out;
}

/** Subclass it, set `static config` to a schema (see `parseConfig`) or leave it unset for the
 *  JSON as it is, and override only the phases you need. An exception that escapes a phase is
 *  logged and fails the request per the plugin's `on_failure`; the instance is kept. */
export class Plugin {
  constructor(config) { this.config = config; }
  onRequestHeaders(req) {}
  onRequestBody(req, chunk, end) {}
  selectUpstream(req) {}
  onUpstreamRequest(req) {}
  onUpstreamError(req, failure) {}
  onResponseHeaders(req, resp) {}
  onResponseBody(req, chunk, end) {}
  onResponseTrailers(trailers) {}
  onLog(req, entry) {}
}

const PHASES = {
  onRequestHeaders: 'requestHeaders', onRequestBody: 'requestBody', selectUpstream: 'selectUpstream',
  onUpstreamRequest: 'upstreamRequest', onUpstreamError: 'upstreamError', onResponseHeaders: 'responseHeaders',
  onResponseBody: 'responseBody', onResponseTrailers: 'responseTrailers', onLog: 'log',
};

// A value the host refuses as invalid: how a phase that threw fails its request without
// trapping, so the instance survives.
const FAILED = { status: 0, headers: [], body: new Uint8Array(0) };

/** The component's `handler` for the plugin class `Kind`: `export const handler = exportPlugin(MyPlugin);` */
export function exportPlugin(Kind) {
  const request = new Request();
  const response = new Response();
  let plugin;
  const phases = {};
  for (const [method, flag] of Object.entries(PHASES)) {
    if (Kind.prototype[method] !== Plugin.prototype[method]) phases[flag] = true;
  }
  const run = (method, ...args) => {
    try {
      return [plugin[method](...args), undefined];
    } catch (error) {
      log.error(`${method} threw: ${error && error.stack ? `${error}\n${error.stack}` : error}`);
      return [undefined, FAILED];
    }
  };
  const action = ([result, failed]) =>
    failed ? { tag: 'respond', val: failed } : result instanceof LocalResponse ? { tag: 'respond', val: result } : { tag: 'continue' };
  const bodyAction = ([result, failed]) => {
    if (failed) return { tag: 'respond', val: failed };
    if (result instanceof LocalResponse) return { tag: 'respond', val: result };
    if (result === undefined || result === null) return { tag: 'continue' };
    return { tag: 'replace', val: encode(result) };
  };
  return {
    init(config) {
      try {
        plugin = new Kind(Kind.config ? parseConfig(JSON.parse(config), Kind.config) : JSON.parse(config));
      } catch (error) {
        throw error instanceof ConfigError ? error.message : `${error && error.name ? `${error.name}: ` : ''}${error && error.message ? error.message : error}`;
      }
      return phases;
    },
    onRequestHeaders: () => action(run('onRequestHeaders', request)),
    onRequestBody: (chunk, end) => bodyAction(run('onRequestBody', request, chunk, end)),
    selectUpstream() {
      const [result, failed] = run('selectUpstream', request);
      if (failed) return { tag: 'respond', val: failed };
      if (result instanceof LocalResponse) return { tag: 'respond', val: result };
      return result && result.choice ? result.choice : { tag: 'default' };
    },
    onUpstreamRequest: () => action(run('onUpstreamRequest', request)),
    onUpstreamError(failure) {
      const [result, failed] = run('onUpstreamError', request, failure);
      if (failed) return { tag: 'respond', val: failed };
      if (result === RETRY) return { tag: 'retry' };
      if (result instanceof LocalResponse) return { tag: 'respond', val: result };
      return { tag: 'default' };
    },
    onResponseHeaders: () => action(run('onResponseHeaders', request, response)),
    onResponseBody: (chunk, end) => bodyAction(run('onResponseBody', request, chunk, end)),
    onResponseTrailers() { run('onResponseTrailers', response); },
    onLog(entry) { run('onLog', request, entry); },
  };
}
