/**
 * Allocator settings that only take effect from the environment a process starts with.
 *
 * Bun allocates with mimalloc, which by default returns freed pages to the OS 100 ms after they
 * were freed, from a background thread ("mi-scavenger"). A broker frees buffers all the time, so
 * with the broker pinned to one core that thread woke ~30 times a second, took the core from the
 * event loop, and the pages it returned faulted back in on the next allocation. Measured in one
 * bench run each (vmqtt with the setting vs the same code without it, Mosquitto alongside):
 * latency p99 at 17.5 k msgs/s 0.84 ms vs 2.40 (Mosquitto 0.76); QoS 1 window 64 455 k vs
 * 336 k msgs/s. Demoting the thread (nice 19, SCHED_IDLE), MIMALLOC_SCAVENGER=0 (purging inline)
 * and longer purge delays did not give the same.
 *
 * The price: freed pages stay with the process for reuse, so RSS stays at its peak (as with
 * glibc's malloc in Mosquitto). The peak includes one-time costs such as the JIT compiling the
 * hot paths: right after a burst of 19,000 connections the RSS per connection reads ~5.5 KB
 * instead of ~3.2 KB. MIMALLOC_PURGE_DELAY=100 (mimalloc's default) returns memory sooner.
 *
 * `vmqtt start` therefore replaces itself once (execve: same process id, same arguments and
 * standard streams) with these variables added, unless they are already set: any value the
 * user sets wins.
 */
export const RUNTIME_ENV: Readonly<Record<string, string>> = { MIMALLOC_PURGE_DELAY: '-1' }

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
