// A fake `navigator.locks` for the unit tests of the modules that take Web Locks.

/**
 * Exclusive locks by name, granted in request order; `signal` takes a waiting request out of
 * the queue; `ifAvailable` calls back with null at once when the lock is held or asked for.
 */
export function fakeLocks() {
  const queues = new Map();
  const grant = (name) => {
    const entry = queues.get(name)?.[0];
    if (!entry || entry.granted) return;
    entry.granted = true;
    Promise.resolve()
      .then(() => entry.callback({ name }))
      .then(entry.resolve, entry.reject)
      .finally(() => {
        const queue = queues.get(name);
        queue.shift();
        if (queue.length === 0) queues.delete(name);
        else grant(name);
      });
  };
  return {
    request(name, options, callback) {
      return new Promise((resolve, reject) => {
        if (options.ifAvailable && queues.get(name)?.length) {
          Promise.resolve(null).then(callback).then(resolve, reject);
          return;
        }
        const entry = { callback, resolve, reject, granted: false };
        if (options.signal?.aborted) return reject(new DOMException("aborted", "AbortError"));
        options.signal?.addEventListener("abort", () => {
          const queue = queues.get(name) ?? [];
          const i = queue.indexOf(entry);
          if (i >= 0 && !entry.granted) {
            queue.splice(i, 1);
            if (queue.length === 0) queues.delete(name);
            reject(new DOMException("aborted", "AbortError"));
          }
        });
        if (!queues.has(name)) queues.set(name, []);
        queues.get(name).push(entry);
        grant(name);
      });
    },
    held: (name) => queues.get(name)?.[0]?.granted === true,
    waiting: (name) => (queues.get(name) ?? []).filter((e) => !e.granted).length,
  };
}
