// Bundle the browser app into static/dist/ with esbuild: one ES module, no network at run time.
import { build } from "esbuild";

const watch = process.argv.includes("--dev");
await build({
  entryPoints: ["src/main.js"],
  bundle: true,
  format: "esm",
  target: ["chrome100", "firefox100", "safari15"],
  outfile: "static/dist/app.js",
  minify: !watch,
  sourcemap: true,
  legalComments: "linked",
  logLevel: "info",
});
