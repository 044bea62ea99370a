// LP performance: one row per LP, keyed by name. The keyed snapshot fills every row on
// the first frame (`snapshot-end` says it is complete); later updates replace rows in
// place, and a delete (an LP leaving the desk) removes its row.

import type { LpMetrics } from "tidewire-client";
import { byTestId, el, integer, pct, setText } from "../format";

export class LpPanel {
  private readonly lps = new Map<string, LpMetrics>();
  private dirty = false;
  private readonly root = byTestId("lps");
  private readonly body = byTestId("lp-rows");

  set(metrics: LpMetrics): void {
    this.lps.set(metrics.lpName, metrics);
    this.dirty = true;
  }

  remove(lpName: string): void {
    this.dirty = this.lps.delete(lpName) || this.dirty;
  }

  clear(): void {
    this.lps.clear();
    this.dirty = true;
  }

  /** Whether the table holds the whole snapshot (set on `snapshot-end`). */
  complete(done: boolean): void {
    this.root.dataset.complete = String(done);
  }

  render(): void {
    if (!this.dirty) return;
    this.dirty = false;
    this.root.dataset.count = String(this.lps.size);
    const rows = [...this.lps.values()].sort((a, b) => a.lpName.localeCompare(b.lpName));
    // Reuse rows by LP so updates don't rebuild the table.
    while (this.body.children.length > rows.length) this.body.lastElementChild?.remove();
    rows.forEach((m, i) => {
      let tr = this.body.children[i] as HTMLTableRowElement | undefined;
      if (!tr) {
        tr = el("tr");
        for (let c = 0; c < 8; c += 1) tr.append(el("td", c >= 2 ? "r" : ""));
        this.body.append(tr);
      }
      const cells = tr.children;
      setText(cells[0] ?? null, m.lpName);
      const status = cells[1] as HTMLElement;
      status.className = `status-${m.status}`;
      if (!status.firstChild) status.append(el("span", "dot"), document.createTextNode(""));
      setText(status.childNodes[1] as Element, m.status);
      setText(cells[2] ?? null, pct(m.executionQuality * 100));
      setText(cells[3] ?? null, m.status === "disconnected" ? "–" : `${m.latencyMs} ms`);
      setText(cells[4] ?? null, integer(m.quotesPerSecond));
      setText(cells[5] ?? null, pct(m.rejectRate * 100, 2));
      setText(cells[6] ?? null, (m.avgSpread * 1e4).toFixed(2));
      setText(cells[7] ?? null, pct(m.uptime, 2));
    });
  }
}
