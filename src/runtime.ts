/**
 * Allocator settings that only take effect from the environment a process starts with.
 *
 * Bun allocates with mimalloc, which by default returns freed pages to the OS 100 ms after they
 * were freed, from a background thread ("mi-scavenger"). A broker frees buffers all the time:
 * under steady load that thread wakes ~27 times a second and the pages it returns fault back in
 * (~2,000 minor faults/s at 15-20 k msgs/s, against ~350/s without purging). An earlier single
 * bench run measured latency p99 at 17.5 k msgs/s 0.84 ms with MIMALLOC_PURGE_DELAY=-1 (never
 * return memory) vs 2.40 with the default, and -1 was the setting here until issue 13 showed
 * its price: RSS never came down from a peak (+800 MB after a fuzz run, +135 MB after ten
 * argon2id logins, +230 MB after 30 large incomplete packets).
 *
 * MIMALLOC_PURGE_DELAY=1000 (issue 13, README "Memory"): the scavenger wakes ~10 times a second
 * (2-3x fewer) with about the same fault rate as 100, and everything a burst freed is back with
 * the OS within ~10 s (arena purges run at 10x the delay). Longer delays (3,000-30,000 ms) did
 * not lower the fault rate further; they only delay the return. Latency p99 could not be told
 * apart from -1's on the shared 2-core machine of that session (both within the run-to-run
 * noise of 30-400 ms). MIMALLOC_PURGE_DELAY=-1 remains the choice for a latency-critical
 * deployment whose memory use is steady.
 *
 * `vmqtt start` replaces itself once (execve: same process id, same arguments and standard
 * streams) with these variables added, unless they are already set: any value the user sets
 * wins.
 */
export const RUNTIME_ENV: Readonly<Record<string, string>> = { MIMALLOC_PURGE_DELAY: '1000' }

/** `vmqtt` with no command, or only flags (not help or version), starts the broker. */
export function defaultsToStart(argv: readonly string[]): boolean {
  return argv.length === 0 || argv[0]!.startsWith('-') && argv[0] !== '--help' && argv[0] !== '-h' && argv[0] !== '--version'
}

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

// Applied while this module is evaluated, i.e. before the modules main.ts imports after it: the
// replaced process image then never loads the broker twice (~65 ms of start-up in the binary).
const argv = process.argv.slice(2)
if (argv[0] === 'start' || defaultsToStart(argv)) applyRuntimeEnv()
