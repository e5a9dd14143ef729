declare module 'wasmgate:plugin/types@0.1.2' {
  /**
   * The phases a plugin implements; the host calls no other.
   */
  export interface Phases {
    requestHeaders?: boolean,
    requestBody?: boolean,
    selectUpstream?: boolean,
    upstreamRequest?: boolean,
    upstreamError?: boolean,
    responseHeaders?: boolean,
    responseBody?: boolean,
    responseTrailers?: boolean,
    log?: boolean,
  }
  /**
   * One header field. Names are case-insensitive; the host lowercases them.
   */
  export interface Header {
    name: string,
    value: Uint8Array,
  }
  /**
   * A response the plugin writes itself instead of going (on) upstream.
   */
  export interface LocalResponse {
    /**
     * 200 to 599.
     */
    status: number,
    headers: Array<Header>,
    body: Uint8Array,
  }
  /**
   * What the request goes on with after a header phase.
   */
  export type Action = ActionContinue | ActionRespond;
  /**
   * Carry on with the next plugin or phase.
   */
  export interface ActionContinue {
    tag: 'continue',
  }
  /**
   * Answer the client with this response; later request phases are skipped.
   */
  export interface ActionRespond {
    tag: 'respond',
    val: LocalResponse,
  }
  /**
   * Why the host refused an edit.
   */
  export type EditError = EditErrorInvalidName | EditErrorInvalidValue | EditErrorInvalidStatus | EditErrorInvalidPath | EditErrorReadOnly | EditErrorReservedHeader;
  /**
   * Not a valid header name (RFC 9110 token).
   */
  export interface EditErrorInvalidName {
    tag: 'invalid-name',
  }
  /**
   * The value holds CR, LF or NUL, or is too long.
   */
  export interface EditErrorInvalidValue {
    tag: 'invalid-value',
  }
  /**
   * The status is not in 200..=599 (1xx are the host's own).
   */
  export interface EditErrorInvalidStatus {
    tag: 'invalid-status',
  }
  /**
   * The path is not an absolute path with an optional query.
   */
  export interface EditErrorInvalidPath {
    tag: 'invalid-path',
  }
  /**
   * The current phase may not edit this (e.g. request headers during `on-log`).
   */
  export interface EditErrorReadOnly {
    tag: 'read-only',
  }
  /**
   * The host manages this header itself (hop-by-hop headers, `content-length`,
   * `x-wasmgate-error`).
   */
  export interface EditErrorReservedHeader {
    tag: 'reserved-header',
  }
  /**
   * A backend of an upstream group, as the host sees it now.
   */
  export interface Backend {
    /**
     * `host:port`.
     */
    address: string,
    weight: number,
    /**
     * False while health checks or outlier ejection hold the backend out: the host's
     * balancer picks only healthy backends.
     */
    healthy: boolean,
    /**
     * True while outlier detection (consecutive failures) holds the backend out.
     */
    ejected: boolean,
  }
  /**
   * Where a request should go.
   */
  export type UpstreamChoice = UpstreamChoiceDefault | UpstreamChoiceBackend | UpstreamChoiceGroup | UpstreamChoiceGroupBackend | UpstreamChoiceHashKey | UpstreamChoiceRespond;
  /**
   * No opinion: the route's group and its balancer decide.
   */
  export interface UpstreamChoiceDefault {
    tag: 'default',
  }
  /**
   * The backend at this index in the route group's `backends` list.
   */
  export interface UpstreamChoiceBackend {
    tag: 'backend',
    val: number,
  }
  /**
   * Another configured group, balanced by its own balancer.
   */
  export interface UpstreamChoiceGroup {
    tag: 'group',
    val: string,
  }
  /**
   * A backend of another configured group, by index in its `backends` list.
   */
  export interface UpstreamChoiceGroupBackend {
    tag: 'group-backend',
    val: [string, number],
  }
  /**
   * Pick from the route's group by hashing this key: the same key goes to the same
   * backend while the group's healthy backends stay the same.
   */
  export interface UpstreamChoiceHashKey {
    tag: 'hash-key',
    val: string,
  }
  /**
   * Do not go upstream: answer with this response.
   */
  export interface UpstreamChoiceRespond {
    tag: 'respond',
    val: LocalResponse,
  }
  /**
   * What a body phase does with a chunk.
   */
  export type BodyAction = BodyActionContinue | BodyActionReplace | BodyActionRespond;
  /**
   * Pass the chunk on unchanged.
   */
  export interface BodyActionContinue {
    tag: 'continue',
  }
  /**
   * Pass this instead of the chunk (empty drops it).
   */
  export interface BodyActionReplace {
    tag: 'replace',
    val: Uint8Array,
  }
  /**
   * Stop and answer with this response. Only from `on-request-body`, and only while
   * the response headers have not gone to the client: elsewhere the host treats it as
   * an invalid value (the plugin fails, per its failure policy).
   */
  export interface BodyActionRespond {
    tag: 'respond',
    val: LocalResponse,
  }
  /**
   * How an upstream attempt failed.
   * # Variants
   * 
   * ## `"connect-refused"`
   * 
   * The connection could not be opened (refused, unreachable, TLS failure).
   * ## `"connect-timeout"`
   * 
   * The connection or TLS handshake did not finish in time.
   * ## `"response-timeout"`
   * 
   * No response headers within the response timeout.
   * ## `"reset"`
   * 
   * The exchange broke before any response byte, or an HTTP/2 stream was refused.
   * ## `"overloaded"`
   * 
   * The backend's circuit breaker turned the request away.
   * ## `"status"`
   * 
   * The backend answered 502, 503 or 504 and the route retries on that status.
   */
  export type FailureKind = 'connect-refused' | 'connect-timeout' | 'response-timeout' | 'reset' | 'overloaded' | 'status';
  /**
   * An upstream attempt that failed.
   */
  export interface UpstreamFailure {
    kind: FailureKind,
    /**
     * `host:port` of the backend tried.
     */
    backend: string,
    /**
     * 1 for the first attempt.
     */
    attempt: number,
    message: string,
  }
  /**
   * What to do after an upstream failure.
   */
  export type ErrorAction = ErrorActionDefault | ErrorActionRetry | ErrorActionRespond;
  /**
   * Let the host decide: retry per the route's policy, else answer (502, 503 or 504).
   */
  export interface ErrorActionDefault {
    tag: 'default',
  }
  /**
   * Ask for another attempt on another backend. The host still keeps the route's
   * bounds: its retry count and budget, and never a request whose body was streamed or
   * a non-idempotent one that may have reached the backend.
   */
  export interface ErrorActionRetry {
    tag: 'retry',
  }
  /**
   * Answer with this response.
   */
  export interface ErrorActionRespond {
    tag: 'respond',
    val: LocalResponse,
  }
  /**
   * What the log phase is told about a finished request.
   */
  export interface LogEntry {
    /**
     * The status sent to the client (0 if none was sent).
     */
    status: number,
    /**
     * Microseconds from the request's arrival to the end of the response.
     */
    durationUs: bigint,
    /**
     * Microseconds waiting for the upstream's response headers, if it went upstream.
     */
    upstreamUs?: bigint,
    /**
     * Request body bytes read from the client.
     */
    bytesIn: bigint,
    /**
     * Response body bytes sent to the client.
     */
    bytesOut: bigint,
    /**
     * `host:port` of the backend that answered, if any.
     */
    backend?: string,
    /**
     * Why the request failed, if it did; also set when the client went away.
     */
    error?: string,
  }
  /**
   * Why the shared store refused an operation.
   */
  export type StoreError = StoreErrorTooLarge | StoreErrorNotAnInteger | StoreErrorUnavailable;
  /**
   * The key or value is larger than the store accepts (256-byte keys, 64 KiB values), or
   * the in-memory store is full for all plugins and this one has no entry of its own
   * left to drop.
   */
  export interface StoreErrorTooLarge {
    tag: 'too-large',
  }
  /**
   * `increment` found a value that is not a decimal 64-bit integer.
   */
  export interface StoreErrorNotAnInteger {
    tag: 'not-an-integer',
  }
  /**
   * The store could not be reached (a remote store); the message says why.
   */
  export interface StoreErrorUnavailable {
    tag: 'unavailable',
    val: string,
  }
  /**
   * A request a plugin sends to an upstream group.
   */
  export interface OutboundRequest {
    /**
     * e.g. `GET`.
     */
    method: string,
    /**
     * The path and query, e.g. `/check?user=7`.
     */
    path: string,
    headers: Array<Header>,
    body: Uint8Array,
    /**
     * Milliseconds the whole call may take (headers and body); 0 means the host's default
     * of 1000.
     */
    timeoutMs: number,
  }
  /**
   * The answer to an outbound request, read whole.
   */
  export interface OutboundResponse {
    status: number,
    headers: Array<Header>,
    body: Uint8Array,
  }
  /**
   * Why an outbound call failed.
   */
  export type OutboundError = OutboundErrorUnknownGroup | OutboundErrorInvalidRequest | OutboundErrorTimeout | OutboundErrorTooLarge | OutboundErrorFailed | OutboundErrorNotAllowed;
  /**
   * No upstream group of that name is configured.
   */
  export interface OutboundErrorUnknownGroup {
    tag: 'unknown-group',
  }
  /**
   * The request is malformed (method, path or a header); the message says which.
   */
  export interface OutboundErrorInvalidRequest {
    tag: 'invalid-request',
    val: string,
  }
  /**
   * The call took longer than its timeout.
   */
  export interface OutboundErrorTimeout {
    tag: 'timeout',
  }
  /**
   * The response body is larger than the host reads (1 MiB).
   */
  export interface OutboundErrorTooLarge {
    tag: 'too-large',
  }
  /**
   * The call could not be made or broke; the message says why.
   */
  export interface OutboundErrorFailed {
    tag: 'failed',
    val: string,
  }
  /**
   * Outbound calls are not allowed in this phase (`init` and `on-log`).
   */
  export interface OutboundErrorNotAllowed {
    tag: 'not-allowed',
  }
  /**
   * Severity of a plugin's log message.
   * # Variants
   * 
   * ## `"trace"`
   * 
   * ## `"debug"`
   * 
   * ## `"info"`
   * 
   * ## `"warn"`
   * 
   * ## `"error"`
   */
  export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
}
