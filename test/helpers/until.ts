/**
 * Polls `fn` until it holds, failing after `timeoutMs` with what was awaited. For state that
 * has no event to wait for (a file watcher having re-read a file, a map entry gone).
 */
export async function until(what: string, fn: () => Promise<boolean> | boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await fn()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`)
    await Bun.sleep(25)
  }
}
