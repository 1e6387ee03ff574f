/**
 * "Does anyone watch?": the stores write their change notifications (SQLite's change log,
 * PostgreSQL's NOTIFY, Redis's publishing script) only while some process watches. A writer
 * trusts its last answer for {@link WATCHER_RECHECK_MS}; `subscribe` resolves only after
 * {@link waitForWriters}, so every writer has asked again since the watcher appeared and no
 * change made after `subscribe` resolves goes unannounced.
 */
import { setTimeout as sleep } from 'node:timers/promises';

/** How long a writer trusts its answer. */
export const WATCHER_RECHECK_MS = 250;
/** A watcher's heartbeat row counts this long after its last beat (a crashed watcher stops counting). */
export const WATCHER_TTL_MS = 30_000;
export const WATCHER_HEARTBEAT_MS = 10_000;

/** Resolves once every writer's answer has gone stale: call it after the watcher is visible to them. */
export function waitForWriters(): Promise<void> {
  return sleep(WATCHER_RECHECK_MS + 50);
}

/**
 * A writer's cached answer, for stores that ask a server: asked at most every
 * {@link WATCHER_RECHECK_MS} (timed from when the question was asked), one question shared by
 * the writes meanwhile; a question that fails counts as "watched", so the write notifies.
 */
export class WatchedAnswer {
  #watched = false;
  #askedAt = Number.NEGATIVE_INFINITY;
  #pending: Promise<boolean> | undefined;

  /** The answer, asking with `ask` when the last one is stale. */
  get(ask: () => Promise<boolean>): boolean | Promise<boolean> {
    if (performance.now() - this.#askedAt < WATCHER_RECHECK_MS) return this.#watched;
    this.#pending ??= this.#ask(ask).finally(() => {
      this.#pending = undefined;
    });
    return this.#pending;
  }

  async #ask(ask: () => Promise<boolean>): Promise<boolean> {
    const askedAt = performance.now(); // an answer is as old as its question
    try {
      this.#watched = await ask();
      this.#askedAt = askedAt;
      return this.#watched;
    } catch {
      return true;
    }
  }
}
