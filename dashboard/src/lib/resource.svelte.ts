// One API answer a page shows, with its loading and error states. Only the latest load counts: a slow answer
// to an older filter never overwrites a newer one. The data is $state.raw (replaced, never mutated in place),
// so a 100,000-point series is not wrapped in reactive proxies.

export class Resource<T> {
  data = $state.raw<T | undefined>(undefined);
  error = $state.raw<unknown>(null);
  loading = $state(false);
  #generation = 0;
  #fetcher: () => Promise<T>;

  constructor(fetcher: () => Promise<T>) {
    this.#fetcher = fetcher;
  }

  /** Loads (again); resolves when done, never rejects (the error is in `error`). */
  async load(): Promise<void> {
    const generation = ++this.#generation;
    this.loading = true;
    this.error = null;
    try {
      const data = await this.#fetcher();
      if (generation === this.#generation) this.data = data;
    } catch (error) {
      if (generation === this.#generation) this.error = error;
    } finally {
      if (generation === this.#generation) this.loading = false;
    }
  }
}

/** Runs an action for a button: `busy` while it runs, its error kept to show. */
export class Action {
  busy = $state(false);
  error = $state.raw<unknown>(null);

  async run<T>(action: () => Promise<T>): Promise<T | undefined> {
    this.busy = true;
    this.error = null;
    try {
      return await action();
    } catch (error) {
      this.error = error;
      return undefined;
    } finally {
      this.busy = false;
    }
  }
}
