// Handles every message type through the generated bindings, with exhaustive switches:
// renaming a field or adding a message type in Rust breaks this file's type check
// (`cargo xtask test` runs `tsc --strict` on it).

import {
  ANALYTICS_CHANNELS,
  CLOSE_CODES,
  CONTROL_TYPES,
  PROTOCOL_VERSION,
  type AnalyticsPublication,
  type Command,
  type Control,
  type ErrorCode,
  type Publication,
  type ServerMessage,
} from "../../ts-bindings/index";

function assertNever(value: never): never {
  throw new Error(`unhandled: ${JSON.stringify(value)}`);
}

/** Control messages use reserved types; everything else is a publication. */
export function isControl(message: ServerMessage): message is Control {
  return (CONTROL_TYPES as readonly string[]).includes(message.type);
}

const analyticsTypes = ["routing-decision", "lp-metrics", "exposure-change", "alert"] as const;

export function isAnalytics(message: Publication): message is Publication & AnalyticsPublication {
  return (analyticsTypes as readonly string[]).includes(message.type);
}

export function describeAnalytics(message: AnalyticsPublication): string {
  switch (message.type) {
    case "routing-decision": {
      const d = message.data;
      return `${d.symbol} ${d.side} ${d.volume} → ${d.routingDecision === "ABOOK" ? "A-Book" : "B-Book"} via ${d.lpSelected} in ${d.executionTimeMs} ms (spread ${d.spread}, slippage ${d.slippage})`;
    }
    case "lp-metrics": {
      const m = message.data;
      const status: string = m.status === "connected" ? "up" : m.status === "degraded" ? "degraded" : "down";
      return `${m.lpName} ${status}: quality ${m.executionQuality}, ${m.latencyMs} ms, ${m.quotesPerSecond} q/s, rejects ${m.rejectRate}, uptime ${m.uptime}%, spread ${m.avgSpread}`;
    }
    case "exposure-change": {
      const e = message.data;
      const symbols = Object.entries(e.bySymbol).map(([symbol, value]) => `${symbol}=${value}`);
      const lps = Object.entries(e.byLP).map(([lp, value]) => `${lp}=${value}`);
      return `net ${e.netExposure} of ${e.exposureLimit} (${e.utilizationPct.toFixed(1)}%, ${e.riskLevel}); total ${e.totalExposure}; ${symbols.join(" ")}; ${lps.join(" ")}`;
    }
    case "alert": {
      const a = message.data;
      const severity: Record<typeof a.severity, string> = { info: "ℹ", warning: "⚠", error: "✖", critical: "‼" };
      const category: Record<typeof a.category, string> = { exposure: "exposure", lp: "LP", routing: "routing", system: "system" };
      return `${severity[a.severity]} [${category[a.category]}] ${a.id} ${a.title}: ${a.message} (${a.source}) → ${a.actionItems.join("; ")}`;
    }
    default:
      return assertNever(message);
  }
}

function describeError(code: ErrorCode): string {
  switch (code) {
    case "AUTH_REQUIRED":
    case "AUTH_INVALID":
    case "TOKEN_EXPIRED":
    case "TOKEN_REVOKED":
      return "sign in again";
    case "FORBIDDEN":
      return "not allowed";
    case "RATE_LIMIT_EXCEEDED":
      return "slow down";
    case "BAD_REQUEST":
    case "UNKNOWN_ACTION":
      return "client bug";
    case "INVALID_CHANNEL":
    case "TOO_MANY_CHANNELS":
    case "MESSAGE_TOO_BIG":
    case "TOO_MANY_KEYS":
      return "rejected input";
    case "REQUEST_TIMEOUT":
      return "send faster";
    case "UNKNOWN_SESSION":
      return "reconnect";
    case "UNAVAILABLE":
    case "INTERNAL_ERROR":
      return "server trouble";
    default:
      return assertNever(code);
  }
}

export function describeControl(message: Control): string {
  switch (message.type) {
    case "connected":
      if (message.version !== PROTOCOL_VERSION) return `incompatible server (v${message.version})`;
      return `connected ${message.connectionId} as ${message.userId}; heartbeat ${message.heartbeatIntervalMs} ms; ${message.limits.maxBatch}/${message.limits.batchIntervalMs} ms, ${message.limits.maxQueuedBatches} queued, ${message.limits.maxChannels} channels, ${message.limits.maxMessageBytes} B, ${message.limits.commandsPerSecond}/s${message.expiresAt ? `; expires ${message.expiresAt}` : ""}`;
    case "subscribed":
      return `subscribed ${message.channel} at ${message.seq} (epoch ${message.epoch})${message.recovered === undefined ? "" : message.recovered ? ", recovered" : ", reload state"}${message.id === undefined ? "" : ` #${message.id}`}`;
    case "unsubscribed":
      return `unsubscribed ${message.channel}`;
    case "published":
      return `published ${message.channel} seq ${message.seq}`;
    case "refreshed":
      return `token refreshed${message.expiresAt ? ` until ${message.expiresAt}` : ""}`;
    case "error":
      return `${message.code} (${describeError(message.code)}): ${message.message}${message.channel ? ` on ${message.channel}` : ""}${message.details === undefined ? "" : ` ${JSON.stringify(message.details)}`}`;
    case "pong":
      return "pong";
    case "heartbeat":
      return `heartbeat at ${message.timestamp}`;
    case "gap":
      return `missed ${message.channel} ${message.from}..=${message.to} (${message.reason === "overflow" ? "recover with since" : "superseded by newer values"})`;
    case "snapshot-end":
      return `snapshot of ${message.channel} complete at ${message.seq}`;
    default:
      return assertNever(message);
  }
}

/** Parses one frame and describes each message in it. */
export function handleFrame(text: string): string[] {
  const messages = JSON.parse(text) as ServerMessage[];
  return messages.map((message) => {
    if (isControl(message)) return describeControl(message);
    const snapshot = message.snapshot ? " (snapshot)" : "";
    if (isAnalytics(message)) return `${message.channel}#${message.seq}${snapshot} ${describeAnalytics(message)}`;
    return `${message.channel}#${message.seq}${snapshot} ${message.type}: ${JSON.stringify(message.data)}`;
  });
}

/** Every command a client sends, typed. */
export const commands: Command[] = [
  { action: "subscribe", channels: [...ANALYTICS_CHANNELS] },
  { action: "subscribe", id: 1, channels: ["alerts"], since: { alerts: 41, "lp-performance": { seq: 7, epoch: "a1b2" } } },
  { action: "unsubscribe", channels: ["routing-metrics"] },
  { action: "publish", id: "p1", channel: "alerts", type: "alert", data: { title: "hello" }, key: "k" },
  { action: "ping" },
  { action: "refresh", token: "eyJ..." },
];

/** Whether to reconnect after a close, from the generated close-code table. */
export function shouldReconnect(code: number): boolean {
  const row = Object.values(CLOSE_CODES).find((entry) => entry.code === code);
  if (row) return row.reconnect;
  if ([1002, 1003, 1007, 1010].includes(code)) return false;
  return !((code >= 3500 && code <= 3999) || (code >= 4500 && code <= 4999));
}
