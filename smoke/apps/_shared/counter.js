// The app every browser row of the smoke matrix runs: a store on IndexedDB with one
// projection, exposed on `window.smoke` for the test to drive (or on `self` in a worker).
import { openStore } from "annals";

const counter = {
  initial: 0,
  apply(state, event) {
    switch (event.type) {
      case "Clicked":
        return state + 1;
      default:
        return state; // events of other types leave the count alone
    }
  },
};

/** Opens the store `name` on IndexedDB; `read` tells the test what it holds. */
export async function openCounter(name) {
  const store = await openStore({ name, storage: "indexeddb", projections: { counter } });
  const read = async () => ({
    count: store.get("counter"),
    head: store.head,
    // The database must really exist: memory storage would also count, but forget on reload.
    storage: (await indexedDB.databases()).some((db) => db.name === name) ? "indexeddb" : "none",
  });
  return {
    read,
    async append() {
      await store.append({ stream: "clicks", type: "Clicked", data: {} });
      return read();
    },
  };
}

/** Page entry: opens the counter and publishes it (or the error) for the test. */
export function startPage(name) {
  openCounter(name).then(
    (api) => { window.smoke = api; },
    (error) => { window.smokeError = String(error?.stack ?? error); },
  );
}
