// Debian's Chromium and the flags that keep it headless, quiet and working in containers:
// shared by the Playwright tests (www/tests) and the browser benchmarks (bench/). The
// wasm-bindgen tests pass the same flags through webdriver.json.
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

export const CHROMIUM_ARGS = [
  "--headless=new",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];
