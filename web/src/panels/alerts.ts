// Alerts: newest first, coloured by severity, with their action items.

import type { Alert } from "tidewire-client";
import { byTestId, clock, el, setText } from "../format";

const KEEP = 12;

export class AlertsPanel {
  private alerts: { timestamp: string; alert: Alert }[] = [];
  private count = 0;
  private dirty = false;
  private readonly root = byTestId("alerts");
  private readonly feed = byTestId("alert-feed");

  add(timestamp: string, alert: Alert): void {
    if (this.alerts.some((a) => a.alert.id === alert.id)) return;
    this.alerts.unshift({ timestamp, alert });
    if (this.alerts.length > KEEP) this.alerts.length = KEEP;
    this.count += 1;
    this.dirty = true;
  }

  render(): void {
    if (!this.dirty) return;
    this.dirty = false;
    this.root.dataset.count = String(this.count);
    this.feed.replaceChildren(
      ...this.alerts.map(({ timestamp, alert: a }) => {
        const li = el("li", `sev-${a.severity}`);
        const head = el("div", "head");
        head.append(el("span", "title", a.title), el("span", "meta", `${a.severity} · ${a.category} · ${clock(timestamp)}`));
        li.append(head, el("div", "", a.message));
        if (a.actionItems.length) {
          const list = el("ul");
          for (const item of a.actionItems) list.append(el("li", "", item));
          li.append(list);
        }
        const source = el("div", "meta");
        setText(source, `${a.source} · ${a.id}`);
        li.append(source);
        return li;
      }),
    );
  }
}
