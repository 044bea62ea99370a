// The browser's side of tidewire's HTTP fallback: the session's event stream read
// with fetch, and its commands POSTed in order, those waiting sent together (one per
// line, at most 16 per POST), one POST at a time. What the events mean is the wasm's
// business (the protocol crate parses them); this only moves bytes.
const PER_POST = 16;

export function openHttp(url, token, onBytes, onEnd) {
  const controller = new AbortController();
  const signal = controller.signal;
  let auth = token;
  let session = null;
  let sending = false;
  let ended = false;
  let notBefore = 0;
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
  const later = () => {
    notBefore = Date.now() + 1000;
    setTimeout(pump, 1000);
  };
  const pump = () => {
    if (sending || ended || session === null || queue.length === 0 || Date.now() < notBefore) return;
    sending = true;
    const batch = queue.slice(0, PER_POST);
    const used = auth;
    const post = { method: "POST", body: batch.join("\n"), signal, credentials: "omit", cache: "no-store" };
    post.headers = headers({ "Content-Type": "text/plain", "Tidewire-Session": session });
    fetch(new URL("send", url), post).then(
      (response) => {
        sending = false;
        const status = response.status;
        // No room now (429), or the node is busy reading bodies (503): the same batch later.
        if (status === 429 || status === 503) return later();
        // Sent with a token a refresh has replaced meanwhile: again with the new one.
        if (status === 401 && auth !== used) return pump();
        queue.splice(0, batch.length);
        // 400 and 413 close the session with 1007 and 1009, which its stream says.
        if (response.ok || status === 400 || status === 413) pump();
        else end(1006, "POST /http/send answered " + status);
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
