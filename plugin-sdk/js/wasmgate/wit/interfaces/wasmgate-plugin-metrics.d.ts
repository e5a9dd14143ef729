declare module 'wasmgate:plugin/metrics@0.1.2' {
  /**
   * Adds `value` to a counter.
   */
  export function counterAdd(name: string, labels: Array<[string, string]>, value: bigint): boolean;
  /**
   * Sets a gauge.
   */
  export function gaugeSet(name: string, labels: Array<[string, string]>, value: number): boolean;
  /**
   * Records one observation in a histogram (buckets from 0.5 ms to 10 s, suited to seconds).
   */
  export function histogramRecord(name: string, labels: Array<[string, string]>, value: number): boolean;
}
