/// <reference path="./interfaces/wasmgate-plugin-cache.d.ts" />
/// <reference path="./interfaces/wasmgate-plugin-clock.d.ts" />
/// <reference path="./interfaces/wasmgate-plugin-handler.d.ts" />
/// <reference path="./interfaces/wasmgate-plugin-log.d.ts" />
/// <reference path="./interfaces/wasmgate-plugin-metrics.d.ts" />
/// <reference path="./interfaces/wasmgate-plugin-outbound.d.ts" />
/// <reference path="./interfaces/wasmgate-plugin-request.d.ts" />
/// <reference path="./interfaces/wasmgate-plugin-response.d.ts" />
/// <reference path="./interfaces/wasmgate-plugin-state.d.ts" />
/// <reference path="./interfaces/wasmgate-plugin-store.d.ts" />
/// <reference path="./interfaces/wasmgate-plugin-types.d.ts" />
/// <reference path="./interfaces/wasmgate-plugin-upstream.d.ts" />
declare module 'wasmgate:plugin/plugin@0.1.2' {
  export type * as WasmgatePluginCache012 from 'wasmgate:plugin/cache@0.1.2'; // import wasmgate:plugin/cache@0.1.2
  export type * as WasmgatePluginClock012 from 'wasmgate:plugin/clock@0.1.2'; // import wasmgate:plugin/clock@0.1.2
  export type * as WasmgatePluginLog012 from 'wasmgate:plugin/log@0.1.2'; // import wasmgate:plugin/log@0.1.2
  export type * as WasmgatePluginMetrics012 from 'wasmgate:plugin/metrics@0.1.2'; // import wasmgate:plugin/metrics@0.1.2
  export type * as WasmgatePluginOutbound012 from 'wasmgate:plugin/outbound@0.1.2'; // import wasmgate:plugin/outbound@0.1.2
  export type * as WasmgatePluginRequest012 from 'wasmgate:plugin/request@0.1.2'; // import wasmgate:plugin/request@0.1.2
  export type * as WasmgatePluginResponse012 from 'wasmgate:plugin/response@0.1.2'; // import wasmgate:plugin/response@0.1.2
  export type * as WasmgatePluginState012 from 'wasmgate:plugin/state@0.1.2'; // import wasmgate:plugin/state@0.1.2
  export type * as WasmgatePluginStore012 from 'wasmgate:plugin/store@0.1.2'; // import wasmgate:plugin/store@0.1.2
  export type * as WasmgatePluginTypes012 from 'wasmgate:plugin/types@0.1.2'; // import wasmgate:plugin/types@0.1.2
  export type * as WasmgatePluginUpstream012 from 'wasmgate:plugin/upstream@0.1.2'; // import wasmgate:plugin/upstream@0.1.2
  export * as handler from 'wasmgate:plugin/handler@0.1.2'; // export wasmgate:plugin/handler@0.1.2
}
