/// <reference path="./wasmgate-plugin-types.d.ts" />
declare module 'wasmgate:plugin/log@0.1.2' {
  /**
   * Writes `message` at `level`.
   */
  export function write(level: Level, message: string): void;
  export type Level = import('wasmgate:plugin/types@0.1.2').Level;
}
