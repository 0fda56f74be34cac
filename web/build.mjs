// Builds the web pages into ../server/labelloop/web/static/: the curators' dashboard (dashboard.js,
// dashboard.css, index.html) and the annotator (annotate.js, annotate.css, annotate.html).
// One bundler (esbuild), no dev server; the server (api/web.py) serves exactly these files.
import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "server", "labelloop", "web", "static");
/** Bundle name -> its entry point and the page that loads it. */
const PAGES = {
  dashboard: { entry: join("src", "main.ts"), template: join("src", "index.html"), page: "index.html" },
  annotate: { entry: join("src", "annotate", "main.ts"), template: join("src", "annotate.html"), page: "annotate.html" },
};

// NiiVue reads OME-Zarr through zarrita, whose blosc, lz4 and zstd codecs are WebAssembly inlined
// in 1.4 MB of script, imported only when a Zarr array uses them. The annotator opens NIfTI and
// NRRD only, so they are left out: such an import fails with this message instead.
const withoutZarrCodecs = {
  name: "without-zarr-codecs",
  setup(build) {
    build.onResolve({ filter: /^numcodecs\/(blosc|lz4|zstd)$/ }, (args) => ({ path: args.path, namespace: "left-out" }));
    build.onLoad({ filter: /.*/, namespace: "left-out" }, (args) => ({
      contents: `export default { fromConfig() { throw new Error("${args.path} is not in labelloop's bundle"); } };`,
      loader: "js",
    }));
  },
};

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const result = await esbuild.build({
  entryPoints: Object.fromEntries(Object.entries(PAGES).map(([name, { entry }]) => [name, join(here, entry)])),
  bundle: true,
  format: "esm",
  target: ["es2022"],
  minify: true,
  legalComments: "eof",
  outdir: out,
  metafile: true,
  logLevel: "warning",
  plugins: [withoutZarrCodecs],
});

// Each page names its files with their content hash, so a browser never runs an old bundle.
const version = async (name) =>
  createHash("sha256").update(await readFile(join(out, name))).digest("hex").slice(0, 12);
for (const [name, { template, page }] of Object.entries(PAGES)) {
  const html = (await readFile(join(here, template), "utf8"))
    .replace("{{js}}", `/web/${name}.js?v=${await version(`${name}.js`)}`)
    .replace("{{css}}", `/web/${name}.css?v=${await version(`${name}.css`)}`);
  await writeFile(join(out, page), html);
}

for (const [file, { bytes }] of Object.entries(result.metafile.outputs)) {
  console.log(`${file.slice(file.indexOf("server/"))}  ${(bytes / 1024).toFixed(1)} KiB`);
}
