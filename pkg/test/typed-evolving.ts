// Evolving events, typed: compiled with `tsc --noEmit` (npm test). Each `@ts-expect-error`
// line must be an error, or tsc fails.
import { openStore, type AnnalsEvent, type RebuildProgress, type Upcasters, type UnknownEventPolicy } from "annals";

type Todo = { type: "TodoCreated"; data: { text: string; priority: number } };

const upcasters: Upcasters = {
  TodoAdded: {
    1: (data: { title: string }) => ({ ...data, priority: 0 }),
    2: { type: "TodoCreated", upcast: ({ title, ...rest }: { title: string; priority: number }) => ({ ...rest, text: title }) },
  },
};

export async function evolving(): Promise<void> {
  const policy: UnknownEventPolicy = "warn";
  const store = await openStore({
    name: "typed-evolving",
    upcasters,
    unknownEvents: policy,
    rebuild: { background: 10_000, slice: 2_000, saveEvery: 20_000 },
    projections: {
      todos: {
        initial: {} as Record<string, string>,
        version: 2,
        apply: (state, event: AnnalsEvent<Todo>) => ({ ...state, [event.stream]: event.data.text }),
      },
    },
  });
  const off = store.on("rebuild", (progress: RebuildProgress) => {
    const fraction: number = progress.done / progress.total;
    const name: string = progress.name;
    void fraction;
    void name;
  });
  off();
  const [event] = await store.events();
  const from: { type: string; schemaVersion: number } | undefined = event?.upcastFrom;
  const version: number | undefined = event?.schemaVersion;
  void from;
  void version;
  // @ts-expect-error: not a policy
  await openStore({ name: "x", unknownEvents: "ignore" });
  // @ts-expect-error: not a rebuild option
  await openStore({ name: "x", rebuild: { chunk: 5 } });
  await store.close();
}
