// The desk dashboard: four live panels and a status bar over one tidewire connection.
//
// Messages update in-memory panel state as they arrive; drawing happens at most once
// per animation frame, and only for panels that changed, so hundreds of updates per
// second stay smooth.

import init, {
  TidewireClient,
  type AnalyticsPublication,
  type TidewireState,
  type TidewireSubscribeOptions,
} from "tidewire-client";
import { AlertsPanel } from "./panels/alerts";
import { ExposurePanel } from "./panels/exposure";
import { LpPanel } from "./panels/lps";
import { RoutingPanel } from "./panels/routing";
import { byTestId, bytesPerSecond, integer, setText } from "./format";

const routing = new RoutingPanel();
const lps = new LpPanel();
const exposure = new ExposurePanel();
const alerts = new AlertsPanel();

function handle(message: AnalyticsPublication): void {
  // Keyed tables lose rows: a delete takes its key out, a clear empties the table.
  if (message.op === "clear" && message.channel === "lp-performance") return lps.clear();
  if (message.op === "delete") {
    if (message.type === "lp-metrics" && message.key) lps.remove(message.key);
    return;
  }
  switch (message.type) {
    case "routing-decision":
      routing.add(message.timestamp, message.data);
      break;
    case "lp-metrics":
      lps.set(message.data);
      break;
    case "exposure-change":
      exposure.set(message.data);
      break;
    case "alert":
      alerts.add(message.timestamp, message.data);
      break;
  }
}

function showState(state: TidewireState): void {
  const pill = byTestId("connection");
  const label = state.state === "connecting" && state.attempt > 0 ? "reconnecting" : state.state;
  pill.dataset.state = state.state;
  setText(pill, state.stopped ? `${label} · ${state.stopped.reason}` : label);
  setText(byTestId("attempt"), String(state.attempt));
}

async function main(): Promise<void> {
  await init({ module_or_path: new URL("tidewire_client_bg.wasm", window.location.href) });
  const wsUrl = `${window.location.protocol === "https:" ? "wss" : "ws"}://${window.location.host}/ws`;
  // The demo's viewer keeps one name across reconnects, as a signed-in user would.
  const viewer = sessionStorage.getItem("tidewire.viewer") ?? Math.random().toString(16).slice(2, 8);
  sessionStorage.setItem("tidewire.viewer", viewer);
  const client = new TidewireClient({
    url: wsUrl,
    getToken: async () => {
      const response = await fetch(`/demo/token?viewer=${viewer}`, { cache: "no-store" });
      if (response.status === 401 || response.status === 403) return null;
      if (!response.ok) throw new Error(`token endpoint answered ${response.status}`);
      return response.text();
    },
    maxReconnectDelayMs: 5000,
  });
  client.onState(showState);
  client.onError((error) => console.warn("tidewire", error.kind, error.code ?? "", error.message));
  // The LP grid needs each LP's newest reading a few times a second, not every quote:
  // the server resamples it per LP. The LP rows and the exposure record travel as field
  // deltas (the client hands over whole records). Alerts and decisions arrive
  // unthrottled and whole.
  const options: Record<string, TidewireSubscribeOptions> = {
    "lp-performance": { maxRate: 2, deltas: true },
    "exposure-updates": { deltas: true },
  };
  const channels = ["routing-metrics", "lp-performance", "exposure-updates", "alerts"] as const;
  for (const channel of channels) {
    client.subscribe(channel, handle, (event) => {
      if (channel !== "lp-performance") return;
      if (event.type === "subscribed" && event.maxRate !== undefined) {
        setText(byTestId("lp-rate"), `≤ ${event.maxRate}/s per LP`);
      }
      // Not recoverable: forget keyed state; the snapshot that follows refills it.
      if (event.type === "subscribed" && event.recovered === false) {
        lps.clear();
        lps.complete(false);
      }
      if (event.type === "snapshot-end") lps.complete(true);
    }, options[channel]);
  }

  // Per-second rates for the status bar.
  let last = client.stats();
  let lastRouting = 0;
  let routingRate = 0;
  setInterval(() => {
    const now = client.stats();
    const messages = now.messages - last.messages;
    const frames = now.frames - last.frames;
    setText(byTestId("msgs"), integer(messages));
    setText(byTestId("frames"), integer(frames));
    setText(byTestId("batch"), frames ? (messages / frames).toFixed(1) : "0");
    setText(byTestId("recovered"), integer(now.recoveries));
    setText(byTestId("total"), integer(now.messages));
    // What each panel costs on the wire, per second.
    for (const channel of channels) {
      const bytes = (now.bytes[channel] ?? 0) - (last.bytes[channel] ?? 0);
      setText(byTestId(`cost-${channel}`), `${bytesPerSecond(bytes)}`);
    }
    const routed = Number(byTestId("routing").dataset.count ?? 0);
    routingRate = routed - lastRouting;
    lastRouting = routed;
    last = now;
  }, 1000);

  const frame = (): void => {
    routing.render(routingRate);
    lps.render();
    exposure.render();
    alerts.render();
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  (window as unknown as { tidewire: TidewireClient }).tidewire = client;
}

main().catch((error: unknown) => {
  console.error(error);
  setText(byTestId("connection"), "failed to start");
});
