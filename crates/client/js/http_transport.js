// The browser's side of tidewire's HTTP fallback: the session's event stream read
// with fetch, and its commands POSTed one at a time, in order. What the events mean
// is the wasm's business (the protocol crate parses them); this only moves bytes.
export function openHttp(url, token, onBytes, onEnd) {
  const controller = new AbortController();
  const signal = controller.signal;
  let auth = token;
  let session = null;
  let sending = false;
  let ended = false;
  const queue = [];
  const headers = (extra) => {
    const h = Object.assign({}, extra);
    if (auth) h.Authorization = "Bearer " + auth;
    return h;
  };
  const end = (code, reason) => {
    if (ended) return;
    ended = true;
    controller.abort();
    onEnd(code, reason);
  };
  const pump = () => {
    if (sending || ended || session === null || queue.length === 0) return;
    sending = true;
    const post = { method: "POST", body: queue[0], signal, credentials: "omit", cache: "no-store" };
    post.headers = headers({ "Content-Type": "application/json", "Tidewire-Session": session });
    fetch(new URL("send", url), post).then(
      (response) => {
        sending = false;
        if (response.status === 429) {
          setTimeout(pump, 1000);
          return;
        }
        queue.shift();
        // 400 and 413 close the session with 1007 and 1009, which its stream says.
        if (response.ok || response.status === 400 || response.status === 413) pump();
        else end(1006, "POST /http/send answered " + response.status);
      },
      (error) => {
        sending = false;
        end(1006, String(error));
      },
    );
  };
  const stream = { headers: headers({}), signal, credentials: "omit", cache: "no-store" };
  fetch(url, stream)
    .then(async (response) => {
      if (!response.ok || !response.body) {
        end(1006, "GET " + url + " answered " + response.status);
        return;
      }
      const reader = response.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done || ended) break;
        onBytes(value);
      }
      end(1006, "the event stream ended");
    })
    .catch((error) => end(1006, String(error)));
  return {
    session(id) {
      session = id;
      pump();
    },
    send(text) {
      queue.push(text);
      pump();
    },
    token(value) {
      auth = value;
    },
    close() {
      ended = true;
      controller.abort();
    },
  };
}
