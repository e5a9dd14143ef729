declare module 'wasmgate:plugin/state@0.1.2' {
  /**
   * The value stored under `key` for this request, if any.
   */
  export function get(key: string): Uint8Array | undefined;
  /**
   * Stores `value` under `key` for this request; false if the bounds refuse it.
   */
  export function set(key: string, value: Uint8Array): boolean;
  /**
   * Removes `key`; true if it was there.
   */
  export function remove(key: string): boolean;
}
