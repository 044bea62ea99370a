// Reads a Server-Sent Events stream with fetch, so the operator token travels in a
// header (EventSource cannot set one): each event's name and JSON data, until the
// stream ends or `signal` aborts it.

export async function readEvents(
  url: string,
  headers: Record<string, string>,
  signal: AbortSignal,
  onEvent: (name: string, data: unknown) => void,
): Promise<void> {
  const response = await fetch(url, { headers, signal });
  if (!response.ok || !response.body) {
    let code = `HTTP_${response.status}`;
    try {
      code = ((await response.json()) as { code?: string }).code ?? code;
    } catch {
      // keep the status
    }
    throw new Error(code);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (!data) continue; // a keep-alive comment
      try {
        onEvent(name, JSON.parse(data));
      } catch {
        // not JSON: skip it
      }
    }
  }
}
