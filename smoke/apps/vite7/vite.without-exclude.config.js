// Only for the smoke test that shows why vite.config.js excludes annals: the same app
// without the exclude (its own cache folder, so the two configs don't re-optimize each
// other's dependencies).
export default { cacheDir: "node_modules/.vite-without-exclude" };
