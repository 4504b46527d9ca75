// `annals/react`: the hooks render the store's current state (server rendering here; Node
// has no DOM for a client renderer).
import assert from "node:assert/strict";
import { test } from "node:test";

import { createElement } from "react";
import { renderToString } from "react-dom/server";

import { useProjection, useSyncStatus } from "annals/react";

import { openTestStore } from "./helpers.mjs";

test("useProjection and useSyncStatus render the current state", async () => {
  const store = await openTestStore();
  function Count() {
    const count = useProjection(store, "count");
    const byStream = useProjection(store, "byStream");
    const status = useSyncStatus(store);
    return createElement("p", null, `${count} events, ${Object.keys(byStream).length} streams, ${status.pending} pending`);
  }
  assert.equal(renderToString(createElement(Count)), "<p>0 events, 0 streams, 0 pending</p>");
  await store.appendMany([
    { stream: "a", type: "T" },
    { stream: "b", type: "T" },
    { stream: "a", type: "T" },
  ]);
  assert.equal(renderToString(createElement(Count)), "<p>3 events, 2 streams, 0 pending</p>");
  await store.close();
});
