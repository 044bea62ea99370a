// The operator console end to end: the demo (`tidewire-desk`) serves it at /console/,
// headless Chromium opens the dashboard (a viewer) and the console (an operator). The
// console signs in with an operator token, lists the node, the viewer and the channels,
// traces the viewer live, and its buttons act: "disconnect" closes the viewer's
// connection (4003), which the dashboard reopens by itself; "end access" closes it for
// good (4504), and the dashboard stays down. A screenshot is saved to
// $TIDEWIRE_CONSOLE_SCREENSHOT (`target/e2e/console.png` under `cargo xtask test`).
//
// Needs TIDEWIRE_BIN (the demo binary, tidewire-desk) and a built web/dist.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, launchChromium, waitForHealth } from "./support.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const bin = process.env.TIDEWIRE_BIN;
const screenshot = process.env.TIDEWIRE_CONSOLE_SCREENSHOT ?? join(here, "..", "..", "target", "e2e", "console.png");
const secret = "e2e-console-secret-of-at-least-thirty-two-bytes";

/** An HS256 JWT, as the node verifies them. */
function jwt(claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

const testid = (id) => `[data-testid="${id}"]`;

test("the console shows the cluster, traces a user, and its buttons end connections", { timeout: 120_000 }, async () => {
  assert.ok(bin, "set TIDEWIRE_BIN to the tidewire-desk binary");
  const port = await freePort();
  const demo = spawn(bin, ["--listen", `127.0.0.1:${port}`, "--web-dir", join(here, "..", "dist"), "--rate", "100"], {
    env: { ...process.env, TIDEWIRE_JWT_SECRET: secret, TIDEWIRE_LOG: "warn" },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const exited = new Promise((resolve) => demo.on("exit", resolve));
  await waitForHealth(port);
  const browser = await launchChromium();
  try {
    const dashboard = await browser.newPage();
    await dashboard.goto(`http://127.0.0.1:${port}/`);
    await dashboard.waitForFunction(() => document.querySelector('[data-testid="connection"]')?.textContent === "connected", null, { timeout: 30_000 });

    const console = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    const errors = [];
    const asked = [];
    console.on("pageerror", (e) => errors.push(e.message));
    console.on("dialog", (dialog) => {
      asked.push(dialog.message());
      void dialog.accept();
    });
    await console.goto(`http://127.0.0.1:${port}/console/`);

    // Without a token, or with a viewer's, the console shows nothing.
    await console.fill(testid("token"), jwt({ sub: "viewer", exp: Math.floor(Date.now() / 1000) + 600 }));
    await console.click(testid("sign-in"));
    await console.waitForFunction(() => document.querySelector('[data-testid="notice"]')?.textContent?.startsWith("FORBIDDEN"), null, { timeout: 10_000 });
    assert.equal(await console.locator(`${testid("users")} tr`).count(), 0);

    const operator = jwt({ sub: "e2e-operator", exp: Math.floor(Date.now() / 1000) + 600, operator: true, jti: "console-e2e" });
    await console.fill(testid("token"), operator);
    await console.click(testid("sign-in"));
    await console.waitForFunction(() => document.querySelector('[data-testid="session"]')?.textContent === "signed in", null, { timeout: 10_000 });

    // The node, the dashboard's viewer, and the channels it reads, with their rates.
    await console.waitForSelector(`${testid("nodes")} tr`, { timeout: 10_000 });
    assert.equal(await console.locator(`${testid("nodes")} tr`).count(), 1);
    const viewerRow = console.locator('[data-testid^="user-viewer-"]');
    await viewerRow.waitFor({ timeout: 10_000 });
    const viewer = (await viewerRow.getAttribute("data-testid")).slice("user-".length);
    assert.equal(await viewerRow.getAttribute("data-connections"), "1");
    await console.waitForFunction(() => {
      const row = document.querySelector('[data-testid="channel-routing-metrics"]');
      return row && Number(row.children[1].textContent) >= 1 && Number(row.children[3].textContent) > 0;
    }, null, { timeout: 15_000 });

    // Trace the viewer: its connection with its channels, and frames as they go.
    await console.click(testid(`trace-${viewer}`));
    await console.waitForSelector('[data-testid^="connection-"]', { timeout: 10_000 });
    const channels = await console.locator('[data-testid^="connection-"] .chip').allTextContents();
    assert.ok(channels.some((c) => c.startsWith("routing-metrics")), `the viewer's channels: ${channels}`);
    await console.waitForSelector(`${testid("trace-log")} li[data-event="frame"]`, { timeout: 10_000 });

    // "disconnect": closed with 4003, and the dashboard comes back by itself.
    await console.click(testid(`disconnect-${viewer}`));
    const closed = console.locator(`${testid("trace-log")} li[data-event="closed"]`);
    await closed.first().waitFor({ timeout: 10_000 });
    assert.match(await closed.first().textContent(), /closed 4003/);
    await console.waitForFunction(() => {
      const events = [...document.querySelectorAll('[data-testid="trace-log"] li')].map((li) => li.dataset.event);
      return events.indexOf("connected") >= 0 && events.indexOf("connected") < events.indexOf("closed");
    }, null, { timeout: 15_000 });
    await dashboard.waitForFunction(() => document.querySelector('[data-testid="connection"]')?.textContent === "connected", null, { timeout: 15_000 });
    assert.ok(Number(await dashboard.locator(testid("attempt")).textContent()) >= 0);
    await console.waitForFunction(() => document.querySelectorAll('[data-testid="trace-log"] li[data-event="frame"]').length > 3, null, { timeout: 10_000 });
    mkdirSync(dirname(screenshot), { recursive: true });
    await console.screenshot({ path: screenshot });

    // "end access": closed with 4504, terminal; the dashboard stays down.
    await console.click(testid(`end-${viewer}`));
    assert.deepEqual(asked, [`End ${viewer}'s access? Their clients will not reconnect.`], "it asks first, naming the user");
    await console.waitForFunction(() => [...document.querySelectorAll('[data-testid="trace-log"] li[data-event="closed"]')].some((li) => li.textContent.includes("closed 4504")), null, { timeout: 10_000 });
    await dashboard.waitForFunction(() => document.querySelector('[data-testid="connection"]')?.dataset.state === "disconnected", null, { timeout: 10_000 });
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await dashboard.locator(testid("connection")).getAttribute("data-state"), "disconnected", "it does not reconnect");
    await console.waitForFunction(() => !document.querySelector('[data-testid^="user-viewer-"]'), null, { timeout: 10_000 });
    assert.deepEqual(errors, [], "no page errors");
  } finally {
    await browser.close();
    demo.kill("SIGTERM");
    await exited;
  }
});
