// Exposure: a utilization gauge coloured by risk level, and by-symbol / by-LP bars.

import type { ExposureChange } from "tidewire-client";
import { byTestId, el, money, pct, setText } from "../format";

function bars(container: HTMLElement, values: Record<string, number>): void {
  const entries = Object.entries(values).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
  const max = Math.max(1, ...entries.map(([, v]) => Math.abs(v)));
  container.replaceChildren(
    ...entries.map(([name, value]) => {
      const row = el("div", "hbar");
      const track = el("div", "track");
      const bar = el("div", `v ${value >= 0 ? "pos" : "neg"}`);
      bar.style.width = `${(Math.abs(value) / max) * 50}%`;
      track.append(bar);
      row.append(el("span", "", name), track, el("span", "n", money(value)));
      return row;
    }),
  );
}

export class ExposurePanel {
  private latest: ExposureChange | null = null;
  private count = 0;
  private dirty = false;
  private readonly root = byTestId("exposure");

  set(change: ExposureChange): void {
    this.latest = change;
    this.count += 1;
    this.dirty = true;
  }

  render(): void {
    if (!this.dirty || !this.latest) return;
    this.dirty = false;
    const e = this.latest;
    this.root.dataset.count = String(this.count);
    const utilization = Math.abs(e.utilizationPct);
    const gauge = byTestId("gauge");
    gauge.setAttribute("class", `gauge risk-${e.riskLevel}`);
    byTestId("gauge-fill").setAttribute("stroke-dasharray", `${Math.min(100, utilization).toFixed(1)} 100`);
    setText(byTestId("utilization"), pct(e.utilizationPct, 0));
    setText(byTestId("risk"), e.riskLevel);
    setText(byTestId("net"), money(e.netExposure));
    setText(byTestId("gross"), money(e.totalExposure));
    setText(byTestId("limit"), money(e.exposureLimit));
    bars(byTestId("by-symbol"), e.bySymbol);
    bars(byTestId("by-lp"), e.byLP);
  }
}
