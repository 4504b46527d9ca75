// tabs.ts with a fake channel: what a tab says to the others, what it does with what they
// say, the protocol version on every message, and the messages held while the page is frozen.
import assert from "node:assert/strict";
import { afterEach, mock, test } from "node:test";

import { AnnalsError } from "../dist/errors.js";
import { SYNC_ANSWER_MS, TAB_PROTOCOL_VERSION, Tabs } from "../dist/tabs.js";

/** A channel that records what is posted; `deliver` plays a message from another tab. */
function fakeChannel() {
  return {
    posted: [],
    closed: false,
    onmessage: null,
    postMessage(message) {
      if (this.closed) throw new Error("posted on a closed channel");
      this.posted.push(structuredClone(message));
    },
    close() {
      this.closed = true;
    },
    deliver(data) {
      this.onmessage?.({ data });
    },
    kinds() {
      return this.posted.map((m) => m.kind);
    },
  };
}

/** A host that records what the tabs module asks of it. */
function fakeHost(overrides = {}) {
  const calls = { peerHeads: [], remoteStatus: [], rejections: [], errors: [] };
  const host = {
    head: () => 5,
    confirmedHead: () => 3,
    isClosed: () => false,
    onPeerHeads: (kind, head, confirmed) => calls.peerHeads.push([kind, head, confirmed]),
    onRemoteStatus: (status) => calls.remoteStatus.push(status),
    leaderStatus: () => undefined,
    onRemoteRejection: (rejection) => calls.rejections.push(rejection),
    syncHere: () => undefined,
    reportError: (error) => calls.errors.push(error),
    ...overrides,
  };
  return { host, calls };
}

function started(overrides = {}, askStatus = false) {
  const { host, calls } = fakeHost(overrides);
  const abort = new AbortController();
  const tabs = new Tabs(host, abort.signal);
  const channel = fakeChannel();
  tabs.start(channel, askStatus);
  return { tabs, channel, calls, abort };
}

const v = TAB_PROTOCOL_VERSION;
const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

afterEach(() => mock.timers.reset());

test("every message a tab posts carries the protocol version", async () => {
  const { tabs, channel } = started({ leaderStatus: () => ({ online: true }) }, true);
  channel.deliver({ v, kind: "hello" });
  tabs.postRejection({ event: { id: "e" }, reason: "r" });
  tabs.announceChange();
  await tick();
  assert.deepEqual(channel.kinds(), ["hello", "status?", "here", "rejected", "change"]);
  for (const message of channel.posted) assert.equal(message.v, TAB_PROTOCOL_VERSION, message.kind);
});

test("a message of an unknown version is ignored and reported, once per version", () => {
  const { channel, calls } = started();
  channel.deliver({ v: v + 1, kind: "change", head: 9, confirmed: 9 });
  channel.deliver({ v: v + 1, kind: "hello" });
  channel.deliver({ kind: "hello" }); // a tab of an annals from before versions
  assert.deepEqual(channel.kinds(), ["hello"], "no answer to either hello");
  assert.deepEqual(calls.peerHeads, [], "the newer change was not read as one");
  assert.equal(calls.errors.length, 2, "one report per unknown version");
  const [newer, unversioned] = calls.errors;
  assert.ok(newer instanceof AnnalsError);
  assert.equal(newer.code, "FORMAT_TOO_NEW");
  assert.match(newer.message, new RegExp(`protocol version ${v + 1}.*speaks version ${v}`));
  assert.equal(unversioned.code, "CORRUPT");
  assert.match(unversioned.message, /no protocol version/);
});

test("a hello is answered with this tab's heads", () => {
  const { channel } = started();
  channel.deliver({ v, kind: "hello" });
  assert.deepEqual(channel.posted.at(-1), { v, kind: "here", head: 5, confirmed: 3 });
});

test("another tab's heads are read only when they differ from this tab's", () => {
  const { channel, calls } = started();
  channel.deliver({ v, kind: "change", head: 5, confirmed: 3 });
  channel.deliver({ v, kind: "change", head: 6, confirmed: 3 });
  channel.deliver({ v, kind: "here", head: 5, confirmed: 4 });
  assert.deepEqual(calls.peerHeads, [
    ["change", 6, 3],
    ["here", 5, 4],
  ]);
});

test("changes are announced only once another tab was heard, one message per burst", async () => {
  const { tabs, channel } = started();
  tabs.announceChange();
  await tick();
  assert.deepEqual(channel.kinds(), ["hello"], "alone: nobody to tell");
  channel.deliver({ v, kind: "here", head: 5, confirmed: 3 });
  tabs.announceChange();
  tabs.announceChange();
  tabs.announceChange();
  await tick();
  assert.deepEqual(channel.kinds(), ["hello", "change"]);
});

test("a pending change announcement goes out before any other message, keeping their order", () => {
  const { tabs, channel } = started();
  channel.deliver({ v, kind: "here", head: 5, confirmed: 3 });
  tabs.announceChange();
  tabs.postStatus({ online: true });
  assert.deepEqual(channel.kinds(), ["hello", "change", "status"]);
});

test("a frozen tab acts on nothing until it resumes, then on a few messages that stand for the rest", () => {
  const { tabs, channel, calls } = started();
  tabs.hold();
  for (let i = 0; i < 20; i++) channel.deliver({ v, kind: "hello" });
  for (let i = 0; i < 20; i++) channel.deliver({ v, kind: "change", head: 10 + i, confirmed: 3 });
  channel.deliver({ v, kind: "status", status: { n: 1 } });
  channel.deliver({ v, kind: "status", status: { n: 2 } });
  channel.deliver({ v, kind: "sync?", id: "q" });
  channel.deliver({ v, kind: "status?" });
  channel.deliver({ v, kind: "synced", id: "not-asked-here" });
  channel.deliver({ v, kind: "rejected", rejection: { event: { id: "e" } } });
  assert.deepEqual(channel.kinds(), ["hello"], "frozen: no answers");
  assert.deepEqual(calls.peerHeads, []);
  tabs.release();
  assert.deepEqual(channel.kinds(), ["hello", "here"], "one answer for twenty hellos");
  assert.deepEqual(calls.peerHeads, [["change", 29, 3]], "the newest change only");
  assert.deepEqual(calls.remoteStatus, [{ n: 2 }], "the newest status only");
  assert.equal(calls.rejections.length, 1);
});

test("a question for the syncing tab is answered with its report, or its error", async () => {
  let fail = false;
  const { channel } = started({
    syncHere: () => (fail ? Promise.reject(new AnnalsError("UNAUTHORIZED", "bad token")) : Promise.resolve({ pushed: 1, pulled: 2, rejected: 0, restarts: 0 })),
  });
  channel.deliver({ v, kind: "sync?", id: "a" });
  await tick();
  fail = true;
  channel.deliver({ v, kind: "sync?", id: "b" });
  await tick();
  assert.deepEqual(channel.posted.slice(1), [
    { v, kind: "synced", id: "a", report: { pushed: 1, pulled: 2, rejected: 0, restarts: 0 } },
    { v, kind: "synced", id: "b", error: { code: "UNAUTHORIZED", message: "bad token" } },
  ]);
});

test("a tab that does not sync leaves questions to the one that does", async () => {
  const { channel } = started();
  channel.deliver({ v, kind: "sync?", id: "a" });
  await tick();
  assert.deepEqual(channel.kinds(), ["hello"]);
});

test("ask resolves with the syncing tab's answer, and rejects with its error code", async () => {
  const { tabs, channel } = started();
  const answered = tabs.ask();
  const question = channel.posted.at(-1);
  assert.equal(question.kind, "sync?");
  channel.deliver({ v, kind: "synced", id: question.id, report: { pushed: 3, pulled: 0, rejected: 0, restarts: 0 } });
  assert.deepEqual(await answered, { pushed: 3, pulled: 0, rejected: 0, restarts: 0 });

  const refused = tabs.ask();
  channel.deliver({ v, kind: "synced", id: channel.posted.at(-1).id, error: { code: "FORBIDDEN", message: "no" } });
  await assert.rejects(refused, (error) => error instanceof AnnalsError && error.code === "FORBIDDEN");
});

test("ask gives up with OFFLINE when no tab answers in time", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  const { tabs } = started();
  const asked = tabs.ask();
  mock.timers.tick(SYNC_ANSWER_MS - 1);
  let settled = false;
  asked.catch(() => undefined).finally(() => (settled = true));
  await Promise.resolve();
  assert.equal(settled, false, "still waiting just before the deadline");
  mock.timers.tick(1);
  await assert.rejects(asked, (error) => error.code === "OFFLINE" && /did not answer within/.test(error.message));
});

test("ask without a channel fails at once with OFFLINE", async () => {
  const { host } = fakeHost();
  const tabs = new Tabs(host, new AbortController().signal);
  await assert.rejects(tabs.ask(), (error) => error.code === "OFFLINE" && /no tab syncs/.test(error.message));
});

test("abort sends the pending announcement, closes the channel and fails questions with CLOSED", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  const { tabs, channel, abort } = started();
  channel.deliver({ v, kind: "here", head: 1, confirmed: 1 });
  tabs.announceChange();
  const asked = tabs.ask();
  abort.abort();
  await assert.rejects(asked, (error) => error.code === "CLOSED");
  assert.equal(channel.closed, true);
  assert.deepEqual(channel.kinds(), ["hello", "change", "sync?"]);
  // No timer is left to fire: neither the announcement's nor the question's.
  mock.timers.tick(SYNC_ANSWER_MS * 2);
  tabs.announceChange();
  tabs.postStatus({});
  assert.equal(channel.posted.length, 3, "nothing is posted after abort");
});

test("fingerprint questions: answered by every other tab, and done early once the tabs heard before have all answered", async () => {
  const { tabs, channel } = started({ fingerprints: async (name, positions) => positions.map((p) => `${name}@${p}`) });
  const answer = (question, tab) =>
    channel.deliver({ v, kind: "fingerprints", id: question.id, tab, head: 9, fingerprints: question.positions.map(String) });

  // The question's timer does not keep Node alive (unref): this one does, meanwhile.
  const keepAlive = setTimeout(() => undefined, 10_000);
  // The first question waits its whole time: nobody knows yet how many tabs there are.
  const first = tabs.askFingerprints("board", [1, 2], 50);
  const asked = channel.posted.at(-1);
  assert.deepEqual({ kind: asked.kind, name: asked.name, positions: asked.positions }, { kind: "fingerprints?", name: "board", positions: [1, 2] });
  answer(asked, "tab-a");
  answer(asked, "tab-b");
  channel.deliver({ v, kind: "fingerprints", id: "another question", tab: "tab-c", head: 1, fingerprints: [] });
  assert.deepEqual((await first).map((a) => a.tab), ["tab-a", "tab-b"]);

  // The next one is done as soon as tab-a and tab-b answered, long before its 60 s.
  const askedAt = Date.now();
  const second = tabs.askFingerprints("board", [3], 60_000);
  const again = channel.posted.at(-1);
  answer(again, "tab-b");
  answer(again, "tab-a");
  assert.deepEqual((await second).map((a) => [a.tab, a.fingerprints]), [["tab-b", ["3"]], ["tab-a", ["3"]]]);
  assert.ok(Date.now() - askedAt < 5_000);

  // This tab answers others' questions with its own fingerprints.
  channel.deliver({ v, kind: "fingerprints?", id: "q1", name: "board", positions: [4, 5] });
  await tick();
  const reply = channel.posted.at(-1);
  assert.deepEqual([reply.kind, reply.id, reply.head, reply.fingerprints], ["fingerprints", "q1", 5, ["board@4", "board@5"]]);
  clearTimeout(keepAlive);
});
