/**
 * Allocator settings that only take effect from the environment a process starts with.
 *
 * Bun allocates with mimalloc, whose default is to hand freed pages back to the OS 10 ms after
 * they were freed, from a background thread ("mi-scavenger"). A broker frees receive buffers all
 * the time, so that thread wakes ~30 times a second and takes the core from the event loop each
 * time, and the pages it returned fault back in on the next allocation. Measured with the broker
 * pinned to one core (100 QoS 0 pairs at 17.5 k msgs/s): p99 latency 1.5-2.0 ms with the
 * default, 0.8-0.9 ms with purging off (Mosquitto 1.0 ms in the same runs), and ~10 % less
 * CPU per message. With purging off, freed memory stays with the process for reuse (RSS stays
 * at its peak, as with glibc's malloc in Mosquitto).
 *
 * `vmqtt start` therefore replaces itself once (execve: same process id, same arguments and
 * standard streams) with these variables added, unless they are already set: any value the
 * user sets wins, e.g. MIMALLOC_PURGE_DELAY=10 to return memory to the OS sooner.
 */
export const RUNTIME_ENV: Readonly<Record<string, string>> = { MIMALLOC_PURGE_DELAY: '-1' }

/** The variables of RUNTIME_ENV that this environment lacks. */
export function missingRuntimeEnv(env: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(RUNTIME_ENV)) if (env[k] === undefined) out[k] = v
  return out
}

/**
 * Re-executes this process with RUNTIME_ENV added, when something is missing. Returns only when
 * nothing was missing or execve is unavailable (then the broker runs with the defaults).
 */
export function applyRuntimeEnv(): void {
  const missing = missingRuntimeEnv(process.env)
  if (Object.keys(missing).length === 0 || process.execve === undefined) return
  // a compiled binary sees argv ["bun", "/$bunfs/root/vmqtt", ...args]; its real argv has no script
  const compiled = Bun.main.startsWith('/$bunfs/')
  const args = compiled ? process.argv.slice(2) : [...process.execArgv, ...process.argv.slice(1)]
  try {
    process.execve(process.execPath, [process.execPath, ...args], { ...process.env, ...missing })
  } catch {
    // not supported here: keep running as we are
  }
}
