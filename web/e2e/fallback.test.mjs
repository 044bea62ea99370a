// The unchanged dashboard behind a proxy that refuses WebSocket upgrades, as inspecting
// proxies on bank networks do: the client falls back to the HTTP transport by itself,
// every panel fills, and after a server restart the page has missed nothing (the demo
// keeps its history in Redis, so the restarted node replays what the page had not seen).
//
// Needs TIDEWIRE_BIN (the demo binary, tidewire-desk), a built web/dist, and Redis on
// 127.0.0.1:6379.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { connect, createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, launchChromium, waitForHealth } from "./support.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const bin = process.env.TIDEWIRE_BIN;

function redisAnswers() {
  return new Promise((resolve) => {
    const socket = connect(6379, "127.0.0.1", () => {
      socket.end();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}

function startDemo(port, prefix) {
  const args = ["--listen", `127.0.0.1:${port}`, "--web-dir", join(here, "..", "dist"), "--drain-window", "300ms", "--rate", "200",
    "--redis-url", "redis://127.0.0.1:6379", "--redis-prefix", prefix];
  const child = spawn(bin, args, {
    env: { ...process.env, TIDEWIRE_JWT_SECRET: "e2e-secret-of-at-least-thirty-two-bytes", TIDEWIRE_LOG: "warn" },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, exited };
}

// Passes HTTP through to the node; answers every WebSocket upgrade with 403.
function blockingProxy(target) {
  const counts = { refused: 0, streams: 0 };
  const server = createServer((client) => {
    let head = Buffer.alloc(0);
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk]);
      if (!head.includes("\r\n\r\n")) return;
      client.off("data", onData);
      const text = head.toString("latin1");
      if (/^upgrade:\s*websocket/im.test(text)) {
        counts.refused += 1;
        client.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
      }
      if (text.startsWith("GET /http/stream")) counts.streams += 1;
      const upstream = connect(target, "127.0.0.1", () => {
        upstream.write(head);
        client.pipe(upstream);
        upstream.pipe(client);
      });
      upstream.on("error", () => client.destroy());
      client.on("error", () => upstream.destroy());
    };
    client.on("data", onData);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, counts, port: server.address().port })));
}

test("behind a proxy that refuses WebSocket, the unchanged dashboard falls back to HTTP and loses nothing", { timeout: 150_000 }, async () => {
  assert.ok(bin, "set TIDEWIRE_BIN to the tidewire-desk binary");
  assert.ok(await redisAnswers(), "this test needs Redis on 127.0.0.1:6379 (see the README's services)");
  const port = await freePort();
  const prefix = `tw-e2e-fallback-${process.pid}-${Date.now()}`;
  let demo = startDemo(port, prefix);
  await waitForHealth(port);
  const proxy = await blockingProxy(port);
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`http://127.0.0.1:${proxy.port}/`);

    await page.waitForFunction(() => {
      const n = (id) => Number(document.querySelector(`[data-testid="${id}"]`)?.getAttribute("data-count") ?? 0);
      return n("routing") > 0 && n("lps") >= 6 && n("exposure") > 0 && n("alerts") > 0;
    }, null, { timeout: 45_000 });
    assert.equal(await page.locator('[data-testid="connection"]').innerText(), "CONNECTED");
    assert.ok(proxy.counts.refused >= 1, "the page tried WebSocket first");
    assert.ok(proxy.counts.streams >= 1, "and fell back to the HTTP stream");
    assert.equal(await page.locator('[data-testid="lp-rows"] tr').count(), 6);

    // Every routing decision the page is handed, from now on, and the subscription's events.
    await page.evaluate(() => {
      window.seen = [];
      window.events = [];
      window.watch = window.tidewire.subscribe("routing-metrics", (m) => window.seen.push(m.seq), (e) => window.events.push(e));
    });
    await page.waitForFunction(() => window.seen.length > 100, null, { timeout: 15_000 });

    // The server restarts; the page reconnects (over HTTP again) and recovers.
    demo.child.kill("SIGTERM");
    assert.equal(await demo.exited, 0, "tidewire exits 0 on SIGTERM");
    await page.waitForFunction(() => document.querySelector('[data-testid="connection"]')?.textContent?.startsWith("reconnecting"), null, { timeout: 10_000 });
    const streamsBefore = proxy.counts.streams;
    demo = startDemo(port, prefix);
    await waitForHealth(port);
    await page.waitForFunction(() => document.querySelector('[data-testid="connection"]')?.textContent === "connected", null, { timeout: 30_000 });
    const resumed = await page.evaluate(() => window.seen.length);
    await page.waitForFunction((n) => window.seen.length > n + 100, resumed, { timeout: 15_000 });
    assert.ok(proxy.counts.streams > streamsBefore, "the reconnect went over HTTP");

    const { seen, events } = await page.evaluate(() => ({ seen: window.seen, events: window.events }));
    const holes = [];
    for (let i = 1; i < seen.length; i++) {
      if (seen[i] !== seen[i - 1] + 1) holes.push([seen[i - 1], seen[i]]);
    }
    assert.deepEqual(holes, [], `every seq once, in order, across the restart (${seen.length} seen)`);
    assert.ok(events.some((e) => e.type === "subscribed" && e.recovered === true), JSON.stringify(events));

    // Leaving a channel works as over WebSocket: no more messages for that handler.
    await page.evaluate(() => window.watch.unsubscribe());
    const after = await page.evaluate(() => window.seen.length);
    await page.waitForTimeout(500);
    assert.equal(await page.evaluate(() => window.seen.length), after);
    assert.ok(Number(await page.locator('[data-testid="routing"]').getAttribute("data-count")) > 0);
    assert.deepEqual(errors, [], "no page errors");
  } finally {
    await browser.close();
    proxy.server.close();
    demo.child.kill("SIGTERM");
    await demo.exited;
  }
});
