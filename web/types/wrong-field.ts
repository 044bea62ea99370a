// A handler that reads a field its channel's events do not have. `cargo xtask test`
// checks that this file does NOT compile (`tsconfig.wrong-field.json`): a handler typed
// by channel turns the wrong field into a compile error.

import type { TidewireClient } from "tidewire-client";

export function watchSpreads(client: TidewireClient): void {
  client.subscribe("lp-performance", (message) => {
    if (message.type === "lp-metrics") console.log(message.data.bidPrice);
  });
}
