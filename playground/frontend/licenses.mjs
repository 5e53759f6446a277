// Writes the licence of every package bundled into editor.js (the lockfile's non-dev
// packages), so that the vendored bundle ships with its notices. Run by ../build.
import { readFileSync, readdirSync, writeFileSync } from "node:fs";

const lock = JSON.parse(readFileSync("package-lock.json", "utf8"));
const parts = ["Licences of the packages bundled into editor.js (built by playground/build).\n"];
for (const [path, info] of Object.entries(lock.packages).sort()) {
  if (!path || info.dev) continue;
  const file = readdirSync(path).find((name) => /^licen[cs]e/i.test(name));
  const text = file ? readFileSync(`${path}/${file}`, "utf8").trim() : `(${info.license})`;
  parts.push(`${"=".repeat(72)}\n${path.replace(/^node_modules\//, "")} ${info.version}\n\n${text}\n`);
}
writeFileSync(process.argv[2], parts.join("\n"));
