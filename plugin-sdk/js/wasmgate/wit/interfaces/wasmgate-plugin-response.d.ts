/// <reference path="./wasmgate-plugin-types.d.ts" />
declare module 'wasmgate:plugin/response@0.1.2' {
  /**
   * The status code (0 before a response exists).
   */
  export function status(): number;
  /**
   * Replaces the status code (200..=599).
   */
  export function setStatus(status: number): void;
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
  export type EditError = import('wasmgate:plugin/types@0.1.2').EditError;
}
