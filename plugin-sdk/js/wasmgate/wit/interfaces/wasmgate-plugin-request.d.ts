/// <reference path="./wasmgate-plugin-types.d.ts" />
declare module 'wasmgate:plugin/request@0.1.2' {
  /**
   * The method, e.g. `GET`.
   */
  export function method(): string;
  /**
   * The path, without the query, as forwarded.
   */
  export function path(): string;
  /**
   * The query string without `?`, if any.
   */
  export function query(): string | undefined;
  /**
   * The host the client asked for (absolute-form target or `Host`), without the port.
   */
  export function host(): string | undefined;
  /**
   * `http` or `https`, as the client connected.
   */
  export function scheme(): string;
  /**
   * The client's `ip:port`.
   */
  export function clientAddr(): string;
  /**
   * Who the client's TLS certificate says it is (its first URI or DNS subject alternative
   * name, else its subject's common name), on a listener that verifies client
   * certificates; none otherwise.
   */
  export function clientIdentity(): string | undefined;
  /**
   * The name of the route that matched.
   */
  export function route(): string;
  /**
   * The first value of header `name`, if present.
   */
  export function header(name: string): Uint8Array | undefined;
  /**
   * Every value of header `name`, in order.
   */
  export function headerAll(name: string): Array<Uint8Array>;
  /**
   * The names of all headers present, lowercased, each once.
   */
  export function headerNames(): Array<string>;
  /**
   * Replaces every value of `name` with `value`.
   */
  export function setHeader(name: string, value: Uint8Array): void;
  /**
   * Adds a value to `name`, keeping the ones present.
   */
  export function addHeader(name: string, value: Uint8Array): void;
  /**
   * Removes every value of `name`; true if there was one.
   */
  export function removeHeader(name: string): boolean;
  /**
   * Replaces the path and query sent upstream, e.g. `/v2/items?id=3`.
   */
  export function setPath(pathAndQuery: string): void;
  export type EditError = import('wasmgate:plugin/types@0.1.2').EditError;
}
