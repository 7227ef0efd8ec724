// A resettable flag that loops can sleep on with a timeout: the worker's side loops sleep
// until their next due time unless something (a new receipt, a stop) wakes them earlier.

export class Wakeup {
  #set = false;
  /** @type {Set<(woken: boolean) => void>} */
  #waiters = new Set();

  get isSet() {
    return this.#set;
  }

  set() {
    this.#set = true;
    for (const wake of this.#waiters) wake(true);
  }

  clear() {
    this.#set = false;
  }

  /**
   * Resolves true once set (at once if it already is), or false after `ms`.
   * @param {number} [ms] no limit when undefined
   * @returns {Promise<boolean>}
   */
  wait(ms) {
    if (this.#set) return Promise.resolve(true);
    return new Promise((resolve) => {
      /** @type {NodeJS.Timeout | undefined} */
      let timer;
      /** @param {boolean} woken */
      const wake = (woken) => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
        resolve(woken);
      };
      this.#waiters.add(wake);
      if (ms !== undefined) timer = setTimeout(wake, Math.max(ms, 0), false);
    });
  }
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Whether `promise` settles within `ms`; the timer is cleared either way, so it never keeps
 * the process alive.
 * @param {Promise<unknown>} promise
 * @param {number} ms
 * @returns {Promise<boolean>}
 */
export async function settlesWithin(promise, ms) {
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(resolve, ms, false);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
