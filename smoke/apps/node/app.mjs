// Node ESM with memory storage: open, append, read the projection and the log, close.
import { openStore, AnnalsError } from "annals";

const counter = {
  initial: 0,
  apply(state, event) {
    switch (event.type) {
      case "Clicked":
        return state + 1;
      default:
        return state;
    }
  },
};

const store = await openStore({ name: "smoke-node", storage: "memory", projections: { counter } });
await store.append({ stream: "clicks", type: "Clicked", data: {}, expectedVersion: "no_stream" });
await store.appendMany([
  { stream: "clicks", type: "Clicked", data: {} },
  { stream: "clicks", type: "Renamed", data: { to: "taps" } },
]);
let conflict = null;
try {
  await store.append({ stream: "clicks", type: "Clicked", data: {}, expectedVersion: "no_stream" });
} catch (error) {
  conflict = error instanceof AnnalsError ? error.code : `not an AnnalsError: ${error}`;
}
const events = await store.events({ after: 0 });
console.log(JSON.stringify({ count: store.get("counter"), head: store.head, types: events.map((e) => e.type), conflict }));
await store.close();
