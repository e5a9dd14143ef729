/// <reference path="./wasmgate-plugin-types.d.ts" />
declare module 'wasmgate:plugin/store@0.1.2' {
  /**
   * The value under `key`, unless absent or expired.
   */
  export function get(key: string): Uint8Array | undefined;
  /**
   * Sets `key` to `value`, expiring after `ttl-ms`.
   */
  export function set(key: string, value: Uint8Array, ttlMs: bigint): void;
  /**
   * Removes `key`; true if it was there.
   */
  export { _delete as delete };
  function _delete(key: string): boolean;
  /**
   * Adds `delta` to the decimal integer under `key` (absent counts as 0) and returns the
   * result, atomically. A key it creates expires after `ttl-ms`; an existing key keeps its
   * expiry.
   */
  export function increment(key: string, delta: bigint, ttlMs: bigint): bigint;
  /**
   * Sets `key` to `new` only if its value is `expected` (`none`: only if absent), atomically;
   * true if it did. The entry then expires after `ttl-ms`.
   */
  export function compareAndSwap(key: string, expected: Uint8Array | undefined, new_: Uint8Array, ttlMs: bigint): boolean;
  export type StoreError = import('wasmgate:plugin/types@0.1.2').StoreError;
}
