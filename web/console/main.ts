// The operator console: the cluster's nodes, users and channels, refreshed every
// second, and one user's connections and trace live, with buttons that disconnect a
// user or a connection, take one off a channel, or revoke a user's tokens.
//
// The page holds no data of its own: everything comes from the operator API with the
// token typed in (kept for this tab only, in sessionStorage), so without an operator
// token it shows nothing. Every name the API returns is put in the page as text,
// never as HTML.

import { ApiError, OperatorApi, type ChannelInfo, type ConnectionInfo, type TraceEvent } from "./api";
import { readEvents } from "./sse";
import { el, integer, setText } from "../src/format";

const TOKEN_KEY = "tidewire.console.token";
const REFRESH_MS = 1000;
const LOG_LINES = 200;

const byId = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const found = document.querySelector<T>(`[data-testid="${id}"]`);
  if (!found) throw new Error(`the page has no ${id}`);
  return found;
};

let api: OperatorApi | null = null;
let traced: string | null = null;
let tracing: AbortController | null = null;
const lastSeq = new Map<string, { seq: number; at: number; rate: number }>();

function notice(text: string | null): void {
  const box = byId("notice");
  box.hidden = text === null;
  setText(box, text ?? "");
}

function session(state: "connected" | "connecting" | "disconnected", text: string): void {
  const pill = byId("session");
  pill.dataset.state = state;
  setText(pill, text);
}

/** A button; with `confirmText`, it asks first (naming what it acts on), so a row that
 * moved under the pointer cannot take the click. */
function button(label: string, testid: string, className: string, action: () => Promise<unknown>, confirmText?: string): HTMLButtonElement {
  const b = el("button", className, label);
  b.type = "button";
  b.dataset.testid = testid;
  b.addEventListener("click", () => {
    if (confirmText !== undefined && !window.confirm(confirmText)) return;
    action().then(refresh, (e: unknown) => notice(e instanceof Error ? e.message : String(e)));
  });
  return b;
}

function row(cells: (string | Node)[], classes: string[] = []): HTMLTableRowElement {
  const tr = el("tr");
  cells.forEach((cell, i) => {
    const td = el("td", classes[i] ?? "");
    if (typeof cell === "string") td.textContent = cell;
    else td.append(cell);
    tr.append(td);
  });
  return tr;
}

function uptime(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  return h > 0 ? `${h}h ${m}m` : `${m}m ${seconds % 60}s`;
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

async function renderNodes(current: OperatorApi): Promise<void> {
  const info = await current.info();
  const body = byId("nodes");
  body.replaceChildren(
    ...info.nodes.map((node) => {
      const tr = row(
        [
          node.id + (node.id === info.node.id ? " (this)" : ""),
          node.version,
          node.engine,
          uptime(node.uptimeSeconds),
          integer(node.connections),
          integer(node.subscriptions),
          integer(node.channels),
          node.draining ? "draining" : "serving",
        ],
        ["", "", "", "r", "r", "r", "r", ""],
      );
      tr.dataset.testid = `node-${node.id}`;
      return tr;
    }),
  );
  setText(byId("node-count"), `${info.nodes.length}`);
}

async function renderUsers(current: OperatorApi): Promise<void> {
  const list = await current.connections();
  setText(byId("connection-count"), `${integer(list.connections)} connections on ${list.nodes} node(s)${list.complete ? "" : ", not every node answered"}`);
  byId("users").replaceChildren(
    ...list.users.map(({ user, connections }) => {
      const actions = el("span");
      actions.append(
        button("trace", `trace-${user}`, "", async () => select(user)),
        button("disconnect", `disconnect-${user}`, "warn", () => current.disconnect({ user }, true)),
        button("end access", `end-${user}`, "danger", () => current.disconnect({ user }, false), `End ${user}'s access? Their clients will not reconnect.`),
        button("revoke tokens", `revoke-${user}`, "danger", () => current.revokeUser(user), `Revoke every token ${user} holds?`),
      );
      const tr = row([user, integer(connections), actions], ["", "r", "actions"]);
      tr.dataset.testid = `user-${user}`;
      tr.dataset.connections = String(connections);
      if (user === traced) tr.className = "selected";
      return tr;
    }),
  );
}

function rateOf(channel: ChannelInfo, now: number): number {
  const last = lastSeq.get(channel.channel);
  let rate = last?.rate ?? 0;
  if (last && now > last.at && channel.seq >= last.seq) rate = ((channel.seq - last.seq) * 1000) / (now - last.at);
  lastSeq.set(channel.channel, { seq: channel.seq, at: now, rate });
  return rate;
}

async function renderChannels(current: OperatorApi): Promise<void> {
  const channels = await current.channels();
  const now = performance.now();
  byId("channels").replaceChildren(
    ...channels.map((channel) => {
      const tr = row(
        [channel.channel, integer(channel.subscribers), integer(channel.seq), rateOf(channel, now).toFixed(1), integer(channel.history)],
        ["", "r", "r", "r", "r"],
      );
      tr.dataset.testid = `channel-${channel.channel}`;
      return tr;
    }),
  );
}

function connectionRow(current: OperatorApi, c: ConnectionInfo): HTMLTableRowElement {
  const channels = el("span");
  for (const channel of c.channels) {
    const chip = el("span", "chip", channel);
    chip.append(button("×", `unsubscribe-${c.connection}-${channel}`, "warn", () => current.unsubscribe({ connection: c.connection }, channel)));
    channels.append(chip);
  }
  const actions = el("span");
  actions.append(button("disconnect", `disconnect-connection-${c.connection}`, "warn", () => current.disconnect({ connection: c.connection }, true)));
  const tr = row(
    [c.connection, c.node, c.connectedAt.slice(11, 19), c.address ?? "", channels, integer(c.frames), integer(c.messages), bytes(c.bytes), integer(c.gaps), bytes(c.queuedBytes), actions],
    ["", "", "", "", "", "r", "r", "r", "r", "r", "actions"],
  );
  tr.dataset.testid = `connection-${c.connection}`;
  return tr;
}

async function renderTraced(current: OperatorApi): Promise<void> {
  if (!traced) return;
  const list = await current.connections(traced);
  byId("user-connections").replaceChildren(...(list.detail ?? []).map((c) => connectionRow(current, c)));
}

function describe(event: TraceEvent): string {
  const who = `${event.connection} @ ${event.node}`;
  switch (event.event) {
    case "connected":
      return `${who} connected${event.address ? ` from ${event.address}` : ""}`;
    case "subscribed":
      return `${who} subscribed to ${event.channel}`;
    case "unsubscribed":
      return `${who} left ${event.channel}${event.code ? ` (${event.code})` : ""}`;
    case "frame":
      return `${who} ${event.frames === 1 ? "frame" : `${event.frames} frames`}: ${event.messages} messages, ${event.bytes} bytes`;
    case "gap":
      return `${who} GAP on ${event.channel}: seqs ${event.from}–${event.to} dropped`;
    case "closed":
      return `${who} closed ${event.code ?? "by the client"}: ${event.reason ?? ""}`;
    case "lagged":
      return `the console fell behind and missed ${event.missed} events`;
  }
}

function log(event: TraceEvent): void {
  const list = byId("trace-log");
  const line = el("li");
  line.dataset.event = event.event;
  line.append(el("span", "at", event.at.slice(11, 23)), document.createTextNode(describe(event)));
  list.prepend(line);
  while (list.childElementCount > LOG_LINES) list.lastElementChild?.remove();
}

/** Follows `user`'s trace until another user is selected, reopening it when it ends. */
async function follow(current: OperatorApi, user: string, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    setText(byId("trace-state"), "live");
    try {
      await readEvents(`/api/trace?user=${encodeURIComponent(user)}`, current.headers(), signal, (_name, data) => log(data as TraceEvent));
    } catch (e) {
      if (signal.aborted) return;
      setText(byId("trace-state"), `trace stopped: ${e instanceof Error ? e.message : String(e)}; retrying`);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function select(user: string): void {
  if (!api) return;
  traced = user;
  tracing?.abort();
  tracing = new AbortController();
  byId("trace-panel").hidden = false;
  setText(byId("traced-user"), user);
  byId("trace-log").replaceChildren();
  void follow(api, user, tracing.signal);
  void refresh();
}

let refreshing = false;
async function refresh(): Promise<void> {
  const current = api;
  if (!current || refreshing) return;
  refreshing = true;
  try {
    await Promise.all([renderNodes(current), renderUsers(current), renderChannels(current), renderTraced(current)]);
    session("connected", "signed in");
    notice(null);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      session("disconnected", e.code);
      sessionStorage.removeItem(TOKEN_KEY);
      api = null;
      tracing?.abort();
    }
    notice(e instanceof Error ? e.message : String(e));
  } finally {
    refreshing = false;
  }
}

function signIn(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
  api = new OperatorApi(token);
  session("connecting", "signing in");
  void refresh();
}

byId<HTMLFormElement>("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = byId<HTMLInputElement>("token");
  signIn(input.value.trim());
  input.value = "";
});
const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) signIn(saved);
setInterval(() => void refresh(), REFRESH_MS);
