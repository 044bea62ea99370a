// Builds the dashboard into dist/: one bundled, minified app.js (the wasm client
// package aliased from target/npm), app.css, index.html and the client's .wasm; and
// the operator console into dist/console/.

import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const pkg = join(here, "..", "target", "npm", "tidewire-client");
const dist = join(here, "dist");

if (!existsSync(join(pkg, "tidewire_client.js"))) {
  console.error(`missing ${pkg}: run \`cargo xtask wasm\` first`);
  process.exit(1);
}
await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
await build({
  entryPoints: [join(here, "src", "main.ts")],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  outfile: join(dist, "app.js"),
  alias: { "tidewire-client": join(pkg, "tidewire_client.js") },
  logLevel: "info",
});
await build({ entryPoints: [join(here, "src", "styles.css")], bundle: true, minify: true, outfile: join(dist, "app.css"), logLevel: "info" });
await copyFile(join(here, "index.html"), join(dist, "index.html"));
// The operator console, at /console/: no client package, plain fetch and a streamed trace.
await mkdir(join(dist, "console"), { recursive: true });
await build({
  entryPoints: [join(here, "console", "main.ts")],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  outfile: join(dist, "console", "console.js"),
  logLevel: "info",
});
await copyFile(join(here, "console", "console.css"), join(dist, "console", "console.css"));
await copyFile(join(here, "console", "index.html"), join(dist, "console", "index.html"));
await copyFile(join(pkg, "tidewire_client_bg.wasm"), join(dist, "tidewire_client_bg.wasm"));
console.log(`dashboard built into ${dist}`);
