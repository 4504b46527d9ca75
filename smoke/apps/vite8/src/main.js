import { startPage } from "./counter.js";

startPage("smoke-vite8");

// The same counter, opened and appended to inside a module worker: the page only relays.
window.smokeWorker = (() => {
  const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  let next = 0;
  const waiting = new Map();
  worker.onmessage = ({ data }) => {
    waiting.get(data.id)?.(data);
    waiting.delete(data.id);
  };
  const ask = (op) =>
    new Promise((resolve, reject) => {
      const id = ++next;
      waiting.set(id, (answer) => (answer.error ? reject(new Error(answer.error)) : resolve(answer.result)));
      worker.postMessage({ id, op });
    });
  return { read: () => ask("read"), append: () => ask("append") };
})();
