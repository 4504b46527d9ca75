// A module worker that owns a store on IndexedDB; the page asks it to read and append.
import { openCounter } from "./counter.js";

const counter = openCounter("smoke-worker");

self.onmessage = async ({ data: { id, op } }) => {
  try {
    const api = await counter;
    self.postMessage({ id, result: await api[op]() });
  } catch (error) {
    self.postMessage({ id, error: String(error?.stack ?? error) });
  }
};
