// The dashboard's channels are the analytics catalogue's: naming them for the client
// package types every handler's message by the channel it subscribes to.

import type { AnalyticsChannels } from "tidewire-client";

declare module "tidewire-client" {
  interface TidewireChannels extends AnalyticsChannels {}
}
