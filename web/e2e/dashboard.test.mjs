// End to end, as a person would see it: the demo (`tidewire-desk`) serves the dashboard, headless
// Chromium (Debian's, driven by playwright-core) opens it, all four panels fill, the
// counters rise, the server restarts and the status bar goes reconnecting → connected
// with data flowing again. A screenshot is saved to $TIDEWIRE_E2E_SCREENSHOT
// (`target/e2e/dashboard.png` under `cargo xtask test`).
//
// Needs TIDEWIRE_BIN (the demo binary, tidewire-desk) and a built web/dist.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, launchChromium, waitForHealth } from "./support.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const bin = process.env.TIDEWIRE_BIN;
const screenshot = process.env.TIDEWIRE_E2E_SCREENSHOT ?? join(here, "..", "..", "target", "e2e", "dashboard.png");

function startDemo(port) {
  const child = spawn(bin, ["--listen", `127.0.0.1:${port}`, "--web-dir", join(here, "..", "dist"), "--drain-window", "300ms", "--rate", "300"], {
    env: { ...process.env, TIDEWIRE_JWT_SECRET: "e2e-secret-of-at-least-thirty-two-bytes", TIDEWIRE_LOG: "warn" },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, exited };
}

const count = (page, id) => page.locator(`[data-testid="${id}"]`).getAttribute("data-count").then(Number);
// Waits (at most 15 s) until the routing panel has counted more than `floor` messages.
const routingCountAbove = (page, floor) =>
  page.waitForFunction(
    (floor) => Number(document.querySelector('[data-testid="routing"]')?.getAttribute("data-count") ?? 0) > floor,
    floor,
    { timeout: 15_000 },
  );
const text = (page, id) => page.locator(`[data-testid="${id}"]`).innerText();

test("the dashboard fills, counts, and survives a server restart", { timeout: 120_000 }, async () => {
  assert.ok(bin, "set TIDEWIRE_BIN to the tidewire-desk binary");
  const port = await freePort();
  let demo = startDemo(port);
  await waitForHealth(port);
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`http://127.0.0.1:${port}/`);

    // All four panels fill; the LP table is complete at once thanks to the keyed snapshot.
    await page.waitForFunction(() => {
      const n = (id) => Number(document.querySelector(`[data-testid="${id}"]`)?.getAttribute("data-count") ?? 0);
      return n("routing") > 0 && n("lps") >= 6 && n("exposure") > 0 && n("alerts") > 0;
    }, null, { timeout: 45_000 });
    assert.equal(await text(page, "connection"), "CONNECTED");
    assert.equal(await page.locator('[data-testid="lp-rows"] tr').count(), 6);

    // Counters rise.
    const before = await count(page, "routing");
    await routingCountAbove(page, before + 100);
    // The status bar's rates are per second: wait for a second that saw the traffic.
    await page.waitForFunction(
      () => Number(document.querySelector('[data-testid="msgs"]')?.textContent?.replace(/,/g, "") ?? 0) > 100,
      null,
      { timeout: 15_000 },
    );
    const rate = Number((await text(page, "msgs")).replace(/,/g, ""));
    assert.ok(rate > 100, `status bar shows ${rate} msg/s`);
    const batch = Number(await text(page, "batch"));
    assert.ok(batch > 1, `messages arrive batched (${batch} per frame)`);

    // The LP grid is resampled at the rate it asked for, and says so.
    // (textContent: the panel's heading is styled in capitals.)
    assert.equal(await page.locator('[data-testid="lp-rate"]').textContent(), "≤ 2/s per LP");
    // Each panel's heading says what it costs on the wire; the LP grid and exposure
    // travel as field deltas, rebuilt whole by the client (the rows above are whole).
    for (const channel of ["routing-metrics", "lp-performance", "exposure-updates", "alerts"]) {
      const cost = await page.locator(`[data-testid="cost-${channel}"]`).textContent();
      assert.match(cost, /^[0-9.,]+ (B|KB|MB)\/s$/, `${channel} costs ${cost}`);
    }
    const deltas = await page.evaluate(() => new Promise((resolve) => {
      const seen = [];
      window.tidewire.subscribe("exposure-updates", (m) => { seen.push(m); if (seen.length === 3) resolve(seen); });
    }));
    assert.ok(deltas.every((m) => m.base === undefined && typeof m.data.netExposure === "number"), "whole records");
    assert.ok(deltas.some((m) => Array.isArray(m.changed) && m.changed.length > 0), "rebuilt from deltas, naming changed fields");

    // An LP leaves the desk: its row goes, and a fresh page (whose snapshot is complete)
    // shows the same table; it comes back when relisted.
    const rows = (p) => p.locator('[data-testid="lp-rows"] tr').count();
    const lpNames = (p) => p.locator('[data-testid="lp-rows"] tr td:first-child').allTextContents();
    const listing = (action) => fetch(`http://127.0.0.1:${port}/demo/${action}?lp=Jump`, { method: "POST" });
    assert.equal((await listing("delist")).status, 204);
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="lp-rows"] tr').length === 5, null, { timeout: 10_000 });
    assert.ok(!(await lpNames(page)).includes("Jump"), "the delisted row is gone");
    const fresh = await browser.newPage();
    await fresh.goto(`http://127.0.0.1:${port}/`);
    await fresh.waitForFunction(() => document.querySelector('[data-testid="lps"]')?.dataset.complete === "true", null, { timeout: 30_000 });
    assert.deepEqual(await lpNames(fresh), await lpNames(page), "a fresh page reaches the same table");
    assert.equal((await listing("relist")).status, 204);
    for (const p of [page, fresh]) {
      await p.waitForFunction(() => document.querySelectorAll('[data-testid="lp-rows"] tr').length === 6, null, { timeout: 10_000 });
    }
    assert.equal((await fetch(`http://127.0.0.1:${port}/demo/delist?lp=Nobody`, { method: "POST" })).status, 404);
    await fresh.close();
    assert.equal(await rows(page), 6);

    // The server restarts: reconnecting, then connected, then data again.
    demo.child.kill("SIGTERM");
    assert.equal(await demo.exited, 0, "tidewire exits 0 on SIGTERM");
    await page.waitForFunction(() => document.querySelector('[data-testid="connection"]')?.textContent?.startsWith("reconnecting"), null, { timeout: 10_000 });
    demo = startDemo(port);
    await waitForHealth(port);
    await page.waitForFunction(() => document.querySelector('[data-testid="connection"]')?.textContent === "connected", null, { timeout: 30_000 });
    const resumed = await count(page, "routing");
    await routingCountAbove(page, resumed + 100); // data flows again after the restart
    assert.equal(await page.locator('[data-testid="lp-rows"] tr').count(), 6);

    mkdirSync(dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot });
    assert.deepEqual(errors, [], "no page errors");
  } finally {
    await browser.close();
    demo.child.kill("SIGTERM");
    await demo.exited;
  }
});
