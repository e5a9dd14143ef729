/// <reference path="./wasmgate-plugin-types.d.ts" />
declare module 'wasmgate:plugin/upstream@0.1.2' {
  /**
   * The name of the route's upstream group.
   */
  export function group(): string;
  /**
   * The backends of `group` (the route's group if none), in config order; none if no such
   * group exists.
   */
  export function backends(group: string | undefined): Array<Backend> | undefined;
  /**
   * The TLS server name (SNI) to send, and verify the certificate against, for this
   * request's upstream connection, instead of the group's. Only in `select-upstream`
   * (`read-only` elsewhere); `invalid-value` if not a DNS name. Ignored for plain-TCP groups.
   */
  export function setSni(name: string): void;
  export type Backend = import('wasmgate:plugin/types@0.1.2').Backend;
  export type EditError = import('wasmgate:plugin/types@0.1.2').EditError;
}
