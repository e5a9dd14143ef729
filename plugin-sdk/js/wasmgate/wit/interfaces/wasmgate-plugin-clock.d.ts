declare module 'wasmgate:plugin/clock@0.1.2' {
  /**
   * Nanoseconds on a monotonic clock: only differences mean anything.
   */
  export function monotonicNs(): bigint;
  /**
   * Milliseconds since the Unix epoch, from the system clock.
   */
  export function wallMs(): bigint;
  /**
   * `len` bytes from a cryptographically secure generator (at most 1024).
   */
  export function randomBytes(len: number): Uint8Array;
}
