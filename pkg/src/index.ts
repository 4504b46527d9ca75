// The types entry: the browser and Node entries export the same API.
export * from "./browser.js";
