/// <reference path="./wasmgate-plugin-types.d.ts" />
declare module 'wasmgate:plugin/outbound@0.1.2' {
  /**
   * Sends `request` to a backend of `group` and reads the whole response.
   */
  export function call(group: string, request: OutboundRequest): OutboundResponse;
  export type OutboundRequest = import('wasmgate:plugin/types@0.1.2').OutboundRequest;
  export type OutboundResponse = import('wasmgate:plugin/types@0.1.2').OutboundResponse;
  export type OutboundError = import('wasmgate:plugin/types@0.1.2').OutboundError;
}
