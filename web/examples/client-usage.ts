// The browser client's API as the README shows it, type-checked against the generated
// npm package (built by `cargo xtask wasm`), so the documented example cannot rot.

import init, {
  TidewireClient,
  type AnalyticsChannels,
  type ChannelPublication,
  type TidewireState,
  type TidewireSubscriptionEvent,
} from "tidewire-client";

// Name the app's channels once (here the generated analytics catalogue): every handler's
// message is then typed by the channel it subscribes to.
declare module "tidewire-client" {
  interface TidewireChannels extends AnalyticsChannels {}
}

export async function start(url: string, fetchToken: () => Promise<string>): Promise<TidewireClient> {
  await init();
  const client = new TidewireClient({ url, getToken: fetchToken, pauseWhenHidden: true });
  client.onState((s: TidewireState) => {
    const why = s.stopped ? ` (${s.stopped.reason}${s.stopped.code ? ` ${s.stopped.code}` : ""})` : "";
    console.log(`tidewire ${s.state}, attempt ${s.attempt}${why}`);
  });
  client.onError((e) => console.warn(e.kind, e.code ?? "", e.message));

  const lps = new Map<string, ChannelPublication<"lp-performance">>();
  let complete = false;
  const sub = client.subscribe(
    "lp-performance",
    (message) => {
      if (message.op === "delete" && message.key) lps.delete(message.key); // the LP left the table
      else if (message.op === "clear") lps.clear();
      else if (message.type === "lp-metrics") lps.set(message.data.lpName, message);
    },
    (event: TidewireSubscriptionEvent) => {
      if (event.type === "subscribed" && event.recovered === false) lps.clear(); // reload: a snapshot follows
      if (event.type === "snapshot-end") complete = true; // every row is in
    },
    { keys: ["OANDA", "LMAX"] }, // only these rows, filtered by the server
  );
  client.publish("alerts", "alert", { title: "dashboard opened" });
  client.publish("lp-performance", "lp-metrics", null, "Jump", "delete");
  console.log(complete);
  const stats = client.stats();
  console.log(stats.frames, stats.messages, stats.recoveries, stats.reconnects, client.state);
  sub.unsubscribe();
  return client;
}
