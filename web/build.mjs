// Builds the dashboard into ../server/labelloop/web/static/: dashboard.js, dashboard.css, index.html.
// One bundler (esbuild), no dev server; the server (api/web.py) serves exactly these three files.
import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "server", "labelloop", "web", "static");

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const result = await esbuild.build({
  entryPoints: { dashboard: join(here, "src", "main.ts") },
  bundle: true,
  format: "esm",
  target: ["es2022"],
  minify: true,
  legalComments: "eof",
  outdir: out,
  metafile: true,
  logLevel: "warning",
});

// index.html names each file with its content hash, so a browser never runs an old bundle.
const version = async (name) =>
  createHash("sha256").update(await readFile(join(out, name))).digest("hex").slice(0, 12);
const page = (await readFile(join(here, "src", "index.html"), "utf8"))
  .replace("{{js}}", `/web/dashboard.js?v=${await version("dashboard.js")}`)
  .replace("{{css}}", `/web/dashboard.css?v=${await version("dashboard.css")}`);
await writeFile(join(out, "index.html"), page);

for (const [file, { bytes }] of Object.entries(result.metafile.outputs)) {
  console.log(`${file.slice(file.indexOf("server/"))}  ${(bytes / 1024).toFixed(1)} KiB`);
}
