import { describe, expect, it } from "vitest";
import { openStore } from "annals";

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

describe("annals in Vitest (memory storage)", () => {
  it("folds appended events and reads them back", async () => {
    const store = await openStore({ name: "smoke-vitest", storage: "memory", projections: { counter } });
    await store.append({ stream: "clicks", type: "Clicked", data: {} });
    await store.append({ stream: "clicks", type: "Ignored", data: {} });
    await store.append({ stream: "clicks", type: "Clicked", data: {} });
    expect(store.get("counter")).toBe(2);
    expect(store.head).toBe(3);
    expect(await store.stateAt("counter", 1)).toBe(1);
    await store.close();
  });
});
