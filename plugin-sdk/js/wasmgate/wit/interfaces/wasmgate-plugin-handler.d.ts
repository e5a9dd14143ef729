/// <reference path="./wasmgate-plugin-types.d.ts" />
declare module 'wasmgate:plugin/handler@0.1.2' {
  /**
   * Called once on each new instance with the plugin's config from the gateway config, as
   * JSON (`{}` when there is none). Returns the phases the plugin implements, or a message
   * saying why the config is refused: the gateway then refuses to start.
   */
  export function init(config: string): Phases;
  /**
   * The request headers arrived. May edit them or answer locally.
   */
  export function onRequestHeaders(): Action;
  /**
   * The request body. On a route that buffers request bodies (`request_buffer`) it is
   * called once, with the whole body and `end` true, before `select-upstream`: the request
   * head may still be edited then, and `replace` sets the body sent upstream. Otherwise it
   * is called for each chunk as the body streams upstream (`end` on the last, which may be
   * empty), and the head is read-only. The host removes `content-length` from a request
   * whose body a plugin may change, so the upstream gets it chunked (HTTP/1.1).
   */
  export function onRequestBody(chunk: Uint8Array, end: boolean): BodyAction;
  /**
   * Choose where the request goes.
   */
  export function selectUpstream(): UpstreamChoice;
  /**
   * The head about to be sent upstream (hop-by-hop headers stripped, forwarding headers
   * added). May edit it or answer locally.
   */
  export function onUpstreamRequest(): Action;
  /**
   * An upstream attempt failed (before any response byte reached the client).
   */
  export function onUpstreamError(failure: UpstreamFailure): ErrorAction;
  /**
   * The response headers arrived. May edit the status and headers, or replace the response.
   */
  export function onResponseHeaders(): Action;
  /**
   * A chunk of the response body as it streams to the client; `end` on the last one (which
   * may be empty). The host removes `content-length` from a response whose body a plugin
   * may change. `respond` is not allowed: the headers are gone.
   */
  export function onResponseBody(chunk: Uint8Array, end: boolean): BodyAction;
  /**
   * The upstream sent trailers. While this runs, the header functions of `response`
   * read and edit the trailers instead of the response head.
   */
  export function onResponseTrailers(): void;
  /**
   * The request is over.
   */
  export function onLog(entry: LogEntry): void;
  export type Phases = import('wasmgate:plugin/types@0.1.2').Phases;
  export type Action = import('wasmgate:plugin/types@0.1.2').Action;
  export type UpstreamChoice = import('wasmgate:plugin/types@0.1.2').UpstreamChoice;
  export type BodyAction = import('wasmgate:plugin/types@0.1.2').BodyAction;
  export type UpstreamFailure = import('wasmgate:plugin/types@0.1.2').UpstreamFailure;
  export type ErrorAction = import('wasmgate:plugin/types@0.1.2').ErrorAction;
  export type LogEntry = import('wasmgate:plugin/types@0.1.2').LogEntry;
}
