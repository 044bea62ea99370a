// Number and time formatting shared by the panels.

const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
const whole = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export function money(value: number): string {
  return (value < 0 ? "-" : "") + compact.format(Math.abs(value));
}

export function integer(value: number): string {
  return whole.format(value);
}

/** `840 B/s`, `12.5 KB/s`, `1.2 MB/s`: what a panel costs on the wire. */
export function bytesPerSecond(bytes: number): string {
  if (bytes < 1000) return `${whole.format(bytes)} B/s`;
  if (bytes < 1e6) return `${(bytes / 1e3).toFixed(1)} KB/s`;
  return `${(bytes / 1e6).toFixed(1)} MB/s`;
}

export function pct(value: number, digits = 1): string {
  return `${value.toFixed(digits)}%`;
}

/** `10:30:45.123` from an RFC 3339 timestamp. */
export function clock(timestamp: string): string {
  return timestamp.slice(11, 23);
}

/** Sets text only when it changed (cheap re-renders). */
export function setText(element: Element | null, text: string): void {
  if (element && element.textContent !== text) element.textContent = text;
}

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function byTestId<T extends Element = HTMLElement>(id: string): T {
  const node = document.querySelector<T>(`[data-testid="${id}"]`);
  if (!node) throw new Error(`missing element ${id}`);
  return node;
}
