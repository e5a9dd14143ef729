/// <reference path="./wasmgate-plugin-types.d.ts" />
declare module 'wasmgate:plugin/cache@0.1.2' {
  /**
   * In `on-request-headers`: the key the request is looked up and stored under, in place of
   * its host and path-and-query (`example.com/a?b=1`). An admin purge by prefix matches it.
   * `invalid-value` past 1024 bytes or with a control character.
   */
  export function setKey(key: string): void;
  /**
   * In `on-request-headers`: adds `part` to the key, after a `|` (a tenant, a device class:
   * whatever the response depends on that `Vary` does not say).
   */
  export function addKeyPart(part: string): void;
  /**
   * In `on-request-headers`: this request neither reads nor fills the cache.
   */
  export function bypass(): void;
  /**
   * In `on-response-headers`: store this response for `ttl-ms`, whatever its own headers say
   * (a `Set-Cookie` is left out of the stored copy), or, with 0, do not store it.
   */
  export function setTtl(ttlMs: bigint): void;
  export type EditError = import('wasmgate:plugin/types@0.1.2').EditError;
}
