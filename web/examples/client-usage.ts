// The browser client's API as the README shows it, type-checked against the generated
// npm package (built by `cargo xtask wasm`), so the documented example cannot rot.

import init, {
  TidewireClient,
  type AnalyticsPublication,
  type TidewireState,
  type TidewireSubscriptionEvent,
} from "tidewire-client";

export async function start(url: string, fetchToken: () => Promise<string>): Promise<TidewireClient> {
  await init();
  const client = new TidewireClient({ url, getToken: fetchToken, pauseWhenHidden: true });
  client.onState((s: TidewireState) => {
    const why = s.stopped ? ` (${s.stopped.reason}${s.stopped.code ? ` ${s.stopped.code}` : ""})` : "";
    console.log(`tidewire ${s.state}, attempt ${s.attempt}${why}`);
  });
  client.onError((e) => console.warn(e.kind, e.code ?? "", e.message));

  const lps = new Map<string, AnalyticsPublication>();
  const sub = client.subscribe(
    "lp-performance",
    (message: AnalyticsPublication) => {
      if (message.type === "lp-metrics") lps.set(message.data.lpName, message);
    },
    (event: TidewireSubscriptionEvent) => {
      if (event.type === "subscribed" && event.recovered === false) lps.clear(); // reload: a snapshot follows
    },
  );
  client.publish("alerts", "alert", { title: "dashboard opened" });
  const stats = client.stats();
  console.log(stats.frames, stats.messages, stats.recoveries, stats.reconnects, client.state);
  sub.unsubscribe();
  return client;
}
