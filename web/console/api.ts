// The operator API, typed as docs/openapi.json describes it. Every call carries the
// operator token in the Authorization header (never in a URL), and a refusal becomes an
// ApiError with the server's stable code.

export interface NodeInfo {
  id: string;
  version: string;
  engine: "memory" | "redis";
  startedAt: string;
  uptimeSeconds: number;
  connections: number;
  subscriptions: number;
  channels: number;
  draining: boolean;
}

export interface Info {
  node: NodeInfo;
  nodes: NodeInfo[];
}

export interface ConnectionInfo {
  connection: string;
  user: string;
  node: string;
  connectedAt: string;
  address?: string;
  channels: string[];
  frames: number;
  messages: number;
  bytes: number;
  gaps: number;
  queuedBytes: number;
}

export interface ConnectionList {
  connections: number;
  users: { user: string; connections: number }[];
  detail?: ConnectionInfo[];
  nodes: number;
  complete: boolean;
  truncated: boolean;
}

export interface ChannelInfo {
  channel: string;
  subscribers: number;
  seq: number;
  epoch: string;
  history: number;
}

/** One event of a user's trace (`GET /api/trace`). */
export interface TraceEvent {
  at: string;
  node: string;
  user: string;
  connection: string;
  event: "connected" | "subscribed" | "unsubscribed" | "frame" | "gap" | "closed" | "lagged";
  address?: string;
  channel?: string;
  code?: string | number;
  frames?: number;
  messages?: number;
  bytes?: number;
  from?: number;
  to?: number;
  reason?: string;
  missed?: number;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

export class OperatorApi {
  constructor(private readonly token: string) {}

  headers(): Record<string, string> {
    return { Authorization: `Bearer ${this.token}`, "Content-Type": "application/json" };
  }

  private async call<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
    const init: RequestInit = { method, headers: this.headers() };
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await fetch(path, init);
    const text = await response.text();
    let json: unknown = undefined;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON: reported below
    }
    if (!response.ok) {
      const error = json as { code?: string; message?: string } | undefined;
      throw new ApiError(response.status, error?.code ?? `HTTP_${response.status}`, error?.message ?? text);
    }
    return json as T;
  }

  info(): Promise<Info> {
    return this.call("GET", "/api/info");
  }

  connections(user?: string): Promise<ConnectionList> {
    return this.call("GET", user ? `/api/connections?user=${encodeURIComponent(user)}` : "/api/connections");
  }

  channels(): Promise<ChannelInfo[]> {
    return this.call("GET", "/api/channels");
  }

  disconnect(target: { user?: string; connection?: string }, reconnect: boolean): Promise<{ connections: number }> {
    return this.call("POST", "/api/disconnect", { ...target, reconnect, reason: "ended from the operator console" });
  }

  unsubscribe(target: { user?: string; connection?: string }, channel: string): Promise<{ connections: number }> {
    return this.call("POST", "/api/unsubscribe", { ...target, channel, reason: "removed from the operator console" });
  }

  revokeUser(user: string): Promise<{ connections: number }> {
    return this.call("POST", "/api/revoke", { user });
  }
}
