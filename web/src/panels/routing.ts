// Routing decisions: the latest rows, the A-Book/B-Book split, and an execution-time
// sparkline. Decisions arrive hundreds per second; the panel keeps bounded state and
// draws once per animation frame at most.

import type { RoutingDecision } from "tidewire-client";
import { byTestId, clock, el, integer, pct, setText } from "../format";

const ROWS = 14;
const SPARK = 200;

interface Row {
  timestamp: string;
  decision: RoutingDecision;
}

export class RoutingPanel {
  private rows: Row[] = [];
  private times: number[] = [];
  private aBook = 0;
  private bBook = 0;
  private count = 0;
  private dirty = false;
  private readonly root = byTestId("routing");
  private readonly body = byTestId("routing-rows");
  private readonly spark = byTestId<HTMLCanvasElement>("spark");

  add(timestamp: string, decision: RoutingDecision): void {
    this.rows.unshift({ timestamp, decision });
    if (this.rows.length > ROWS) this.rows.length = ROWS;
    this.times.push(decision.executionTimeMs);
    if (this.times.length > SPARK) this.times.shift();
    if (decision.routingDecision === "ABOOK") this.aBook += 1;
    else this.bBook += 1;
    this.count += 1;
    this.dirty = true;
  }

  render(rate: number): void {
    if (!this.dirty) return;
    this.dirty = false;
    this.root.dataset.count = String(this.count);
    setText(byTestId("routing-rate"), `${integer(rate)}/s`);
    const total = this.aBook + this.bBook;
    const share = total ? (this.aBook / total) * 100 : 50;
    byTestId("abook").style.width = `${share}%`;
    setText(byTestId("abook-pct"), pct(share));
    setText(byTestId("bbook-pct"), pct(100 - share));
    this.body.replaceChildren(
      ...this.rows.map(({ timestamp, decision: d }) => {
        const tr = el("tr");
        tr.append(
          el("td", "", clock(timestamp)),
          el("td", "", d.symbol),
          el("td", `side-${d.side}`, d.side),
          el("td", "r", integer(d.volume)),
          el("td", `book-${d.routingDecision}`, d.routingDecision === "ABOOK" ? "A-Book" : "B-Book"),
          el("td", "", d.lpSelected),
          el("td", "r", `${d.executionTimeMs} ms`),
          el("td", "r", (d.slippage * 1e4).toFixed(2)),
        );
        return tr;
      }),
    );
    this.drawSpark();
  }

  private drawSpark(): void {
    const canvas = this.spark;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth * ratio;
    const height = canvas.clientHeight * ratio;
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const ctx = canvas.getContext("2d");
    if (!ctx || this.times.length < 2) return;
    ctx.clearRect(0, 0, width, height);
    const max = Math.max(...this.times, 1);
    const step = width / (SPARK - 1);
    ctx.beginPath();
    this.times.forEach((t, i) => {
      const x = i * step;
      const y = height - (t / max) * (height - 6 * ratio) - 3 * ratio;
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.strokeStyle = "#3fa7ff";
    ctx.lineWidth = 1.5 * ratio;
    ctx.stroke();
  }
}
