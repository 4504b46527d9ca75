// `annals/react` in a DOM (jsdom) with React Testing Library: renders are counted, so a
// hook that renders too often (or loops) fails here.
import "./dom.mjs";

import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";

import { act, cleanup, render } from "@testing-library/react";
import { createElement as h, Fragment, StrictMode } from "react";

import {
  changeAffectsQuery,
  StoreProvider,
  useEvents,
  useHead,
  useProjection,
  useStateAt,
  useStore,
} from "annals/react";

import { definitionsOf, openInRealm, realmStores } from "../dist/realm-stores.js";
import { eventually, openTestStore, uniqueName } from "./helpers.mjs";

afterEach(() => cleanup());

/** Runs `work` in act() and lets the store's notifications and React's updates settle. */
async function settle(work = async () => {}) {
  await act(async () => {
    await work();
    await new Promise((resolve) => setTimeout(resolve, 0));
  });
}

/** Waits (settling React's updates in act) until `check()` is truthy. */
function until(check, what) {
  return eventually(async () => {
    await settle();
    return check();
  }, 2000, what);
}

/** A promise with its resolve and reject in reach. */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe("useProjection", () => {
  test("a selector on an unrelated part of the state causes no render on an append", async () => {
    const store = await openTestStore();
    const renders = { selected: 0, whole: 0 };
    function StreamB() {
      renders.selected += 1;
      const b = useProjection(store, "byStream", (s) => s.b ?? 0);
      return h("span", null, `b=${b}`);
    }
    function Whole() {
      renders.whole += 1;
      const all = useProjection(store, "byStream");
      return h("span", null, ` streams=${Object.keys(all).length}`);
    }
    const view = render(h(Fragment, null, h(StreamB), h(Whole)));
    assert.equal(view.container.textContent, "b=0 streams=0");
    assert.deepEqual(renders, { selected: 1, whole: 1 });

    await settle(() => store.append({ stream: "a", type: "T" }));
    await settle(() => store.append({ stream: "a", type: "T" }));
    // The whole state changed twice; stream b's count did not.
    assert.deepEqual(renders, { selected: 1, whole: 3 });
    assert.equal(view.container.textContent, "b=0 streams=1");

    await settle(() => store.append({ stream: "b", type: "T" }));
    assert.deepEqual(renders, { selected: 2, whole: 4 });
    assert.equal(view.container.textContent, "b=1 streams=2");
    await store.close();
  });

  test("an inline selector with isEqual: no loop, no render for an equal selection, the same object kept", async () => {
    const store = await openTestStore();
    await store.append({ stream: "a", type: "T" });
    const sameItems = (x, y) => x.length === y.length && x.every((item, i) => item === y[i]);
    let renders = 0;
    const seen = [];
    function Streams({ label }) {
      renders += 1;
      // A new selector function on every render, returning a new array every time.
      const names = useProjection(store, "byStream", (s) => Object.keys(s).sort(), sameItems);
      seen.push(names);
      return h("p", null, `${label}: ${names.join(",")}`);
    }
    const view = render(h(Streams, { label: "one" }));
    assert.equal(renders, 1);
    view.rerender(h(Streams, { label: "two" }));
    assert.equal(renders, 2);
    assert.equal(view.container.textContent, "two: a");
    assert.equal(seen[1], seen[0], "an equal selection keeps the committed object across selectors");

    await settle(() => store.append({ stream: "a", type: "T" }));
    assert.equal(renders, 2, "the same stream names: no render");

    await settle(() => store.append({ stream: "b", type: "T" }));
    assert.equal(renders, 3);
    assert.equal(view.container.textContent, "two: a,b");
    await store.close();
  });
});

describe("useHead", () => {
  test("renders the head, and again when it moves", async () => {
    const store = await openTestStore();
    let renders = 0;
    function Head() {
      renders += 1;
      return h("p", null, `head ${useHead(store)}`);
    }
    const view = render(h(Head));
    assert.equal(view.container.textContent, "head 0");
    await settle(() => store.appendMany([{ stream: "a", type: "T" }, { stream: "b", type: "T" }]));
    assert.equal(view.container.textContent, "head 2");
    assert.equal(renders, 2, "one batch, one render");
    await store.close();
  });
});

describe("useStateAt", () => {
  test("the latest request wins when answers arrive out of order, and state and position always match", async () => {
    const asked = [];
    const source = {
      stateAt(name, position) {
        const answer = deferred();
        asked.push({ name, position, answer });
        return answer.promise;
      },
      on: () => () => {},
    };
    const shown = [];
    function Slider({ position }) {
      const result = useStateAt(source, "count", position);
      shown.push(result);
      return h("p", null, result.state === undefined ? "none" : `${result.position}:${result.state}${result.loading ? " (loading)" : ""}`);
    }
    const view = render(h(Slider, { position: 1 }));
    await settle(async () => view.rerender(h(Slider, { position: 2 })));
    assert.deepEqual(asked.map((a) => a.position), [1, 2]);
    assert.equal(shown.at(-1).loading, true);

    await settle(async () => asked[1].answer.resolve("state-2"));
    assert.equal(view.container.textContent, "2:state-2");
    // The older request's answer lands last: it must not overwrite the newer one.
    await settle(async () => asked[0].answer.resolve("state-1"));
    assert.equal(view.container.textContent, "2:state-2");

    await settle(async () => view.rerender(h(Slider, { position: 3 })));
    assert.equal(view.container.textContent, "2:state-2 (loading)", "the last answer stays while the next loads");
    await settle(async () => asked[2].answer.reject(new Error("no such position")));
    assert.equal(view.container.textContent, "2:state-2", "a failed request keeps the last answer");
    assert.equal(shown.at(-1).error.message, "no such position");
    assert.equal(shown.at(-1).loading, false);

    for (const result of shown) {
      if (result.state !== undefined) assert.equal(result.state, `state-${result.position}`, "no tearing");
    }
  });

  test("a refresh after a change of the log wins over the read it overtook; changes above the position ask nothing", async () => {
    const asked = [];
    let onChange;
    const source = {
      stateAt(name, position) {
        const answer = deferred();
        asked.push(answer);
        return answer.promise;
      },
      on(event, listener) {
        assert.equal(event, "change");
        onChange = listener;
        return () => {
          onChange = undefined;
        };
      },
    };
    function Slider() {
      const { state } = useStateAt(source, "count", 5);
      return h("p", null, String(state));
    }
    const view = render(h(Slider));
    assert.equal(asked.length, 1);
    const change = (previousHead) => ({ previousHead, head: previousHead + 1, confirmedHead: previousHead + 1, events: [], rebased: false, reset: false });
    await settle(async () => onChange(change(7)));
    assert.equal(asked.length, 1, "an append after position 5 leaves the state at 5 as it was");
    await settle(async () => onChange(change(4)));
    assert.equal(asked.length, 2, "an append at position 5 asks again");
    await settle(async () => asked[1].resolve("after the append"));
    await settle(async () => asked[0].resolve("before the append"));
    assert.equal(view.container.textContent, "after the append");
    view.unmount();
    assert.equal(onChange, undefined, "unsubscribed at unmount");
  });

  test("reads a real store's past states as the position moves", async () => {
    const store = await openTestStore();
    await store.appendMany([{ stream: "a", type: "T" }, { stream: "a", type: "T" }, { stream: "a", type: "T" }]);
    function Slider({ position }) {
      const { state, position: at, loading } = useStateAt(store, "count", position);
      return h("p", null, loading ? "loading" : `${at}:${state}`);
    }
    const view = render(h(Slider, { position: 2 }));
    await until(() => view.container.textContent === "2:2", "state at 2");
    view.rerender(h(Slider, { position: 0 }));
    await until(() => view.container.textContent === "0:0", "state at 0");
    view.rerender(h(Slider, { position: 3 }));
    await until(() => view.container.textContent === "3:3", "state at 3");
    await store.close();
  });
});

describe("useEvents", () => {
  test("reads the matching events, and again only after a change that matches the query", async () => {
    const store = await openTestStore();
    await store.appendMany([{ stream: "a", type: "T" }, { stream: "b", type: "T" }]);
    let reads = 0;
    const source = {
      events: (query) => {
        reads += 1;
        return store.events(query);
      },
      on: (event, listener) => store.on(event, listener),
    };
    function StreamA({ label }) {
      // An inline query: a new object each render, equal by value.
      const { events, loading } = useEvents(source, { stream: "a" });
      return h("p", null, `${label} ${loading ? "loading" : events.map((e) => e.position).join(",")}`);
    }
    const view = render(h(StreamA, { label: "x" }));
    await until(() => view.container.textContent === "x 1", "first read");
    view.rerender(h(StreamA, { label: "y" }));
    await settle();
    assert.equal(reads, 1, "an equal query is not read again");

    await settle(() => store.append({ stream: "b", type: "T" }));
    assert.equal(reads, 1, "an event of another stream does not read again");

    await settle(() => store.append({ stream: "a", type: "T" }));
    await until(() => view.container.textContent === "y 1,4", "read after the matching append");
    assert.equal(reads, 2);
    await store.close();
  });

  test("changeAffectsQuery: positions, a full page, stream, type, correlation, rebase", () => {
    const event = (position, extra = {}) => ({ position, stream: "s", type: "T", meta: {}, ...extra });
    const change = (events, flags = {}) => ({ previousHead: 0, head: 0, confirmedHead: 0, events, rebased: false, reset: false, ...flags });
    assert.equal(changeAffectsQuery({ after: 5 }, change([event(5)]), []), false);
    assert.equal(changeAffectsQuery({ after: 5 }, change([event(6)]), []), true);
    assert.equal(changeAffectsQuery({ to: 3 }, change([event(4)]), []), false);
    const page = [event(1), event(2)];
    assert.equal(changeAffectsQuery({ limit: 2 }, change([event(3)]), page), false, "after a full page");
    assert.equal(changeAffectsQuery({ limit: 3 }, change([event(3)]), page), true, "a page with room");
    assert.equal(changeAffectsQuery({ stream: "t" }, change([event(3)]), []), false);
    assert.equal(changeAffectsQuery({ type: "U" }, change([event(3)]), []), false);
    assert.equal(changeAffectsQuery({ type: "U" }, change([event(3, { type: "U" })]), []), true);
    assert.equal(changeAffectsQuery({ correlationId: "c" }, change([event(3)]), []), false);
    assert.equal(changeAffectsQuery({ correlationId: "c" }, change([event(3, { meta: { correlationId: "c" } })]), []), true);
    assert.equal(changeAffectsQuery({ stream: "t" }, change([], { rebased: true }), []), true);
  });
});

describe("StoreProvider and useStore", () => {
  // Node has no IndexedDB, where `openStore` shares stores; the provider opens through the
  // same sharing (`openInRealm`) over a memory store here.
  test("StrictMode's mount-unmount-mount opens one store, and unmounting closes it", async () => {
    const key = `indexeddb:${uniqueName("strict")}`;
    const options = { name: key, projections: {} };
    const opened = [];
    const open = () =>
      openInRealm(key, definitionsOf(options), async () => {
        const store = await openTestStore();
        opened.push(store);
        return store;
      });
    let calls = 0;
    const seen = new Set();
    function Count() {
      const store = useStore();
      seen.add(store);
      return h("p", null, `count ${useProjection(store, "count")}`);
    }
    const view = render(
      h(StrictMode, null, h(StoreProvider, { open: () => ((calls += 1), open()), fallback: h("p", null, "opening") }, h(Count))),
    );
    assert.equal(view.container.textContent, "opening");
    await until(() => view.container.textContent === "count 0", "store open");
    assert.equal(calls, 2, "StrictMode ran the provider's effect twice");
    assert.equal(opened.length, 1, "one store opened");
    assert.deepEqual(realmStores().find((s) => s.key === key), { key, handles: 1, ending: false, opened: 1 });
    assert.equal(seen.size, 1);
    const [handle] = seen;
    await settle(() => handle.append({ stream: "a", type: "T" }));
    assert.equal(view.container.textContent, "count 1");

    view.unmount();
    await until(() => opened[0].closed && handle.closed, "closed after unmount");
    await until(() => realmStores().find((s) => s.key === key)?.handles === 0, "no handle left");
  });

  test("passes a store opened elsewhere; useStore outside a provider says what to do", async () => {
    const store = await openTestStore();
    function Head() {
      return h("p", null, `head ${useHead(useStore())}`);
    }
    const view = render(h(StoreProvider, { store }, h(Head)));
    assert.equal(view.container.textContent, "head 0");
    cleanup();
    assert.equal(store.closed, false, "a store given to the provider is the app's to close");
    const errors = [];
    const onError = (event) => {
      errors.push(event.error);
      event.preventDefault();
    };
    window.addEventListener("error", onError);
    try {
      assert.throws(() => render(h(Head)), /outside a <StoreProvider>/);
    } finally {
      window.removeEventListener("error", onError);
    }
    await store.close();
  });

  test("a failed open reaches the nearest error boundary", async () => {
    const { Component } = await import("react");
    class Boundary extends Component {
      constructor(props) {
        super(props);
        this.state = { error: null };
      }
      static getDerivedStateFromError(error) {
        return { error };
      }
      render() {
        return this.state.error ? h("p", null, `failed: ${this.state.error.message}`) : this.props.children;
      }
    }
    const view = render(h(Boundary, null, h(StoreProvider, { open: () => Promise.reject(new Error("no quota")) }, h("p", null, "app"))));
    await until(() => view.container.textContent === "failed: no quota", "error shown");
  });
});
