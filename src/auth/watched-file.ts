import { readFileSync, watch, type FSWatcher } from 'node:fs'
import { dirname } from 'node:path'

/** Reads a text file; the error names the file. */
export function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (e) {
    throw new Error(`${path}: cannot read: ${(e as Error).message}`)
  }
}

export interface WatchedFileOptions {
  /** Re-read the file when it changes (default true). */
  watch?: boolean
  /** Called when a re-read after a change fails; the previous version stays in force. */
  onError?: (message: string) => void
  /** Quiet period after the last change event before re-reading, in ms (default 100). */
  debounceMs?: number
}

/**
 * A text file parsed into a value, kept current: re-read when it changes and on reload(); a
 * version that does not parse is not applied. The directory is watched, not the file: editors
 * and atomic writers replace the file by rename, which a watch on the old inode would miss.
 * Every event in the directory (also a swapped symlink, as Kubernetes mounts do) schedules a
 * debounced re-read, which does nothing when the text is unchanged.
 */
export class WatchedFile<T> {
  readonly path: string
  #value: T
  #lastText: string | null
  #parse: (text: string, path: string) => T
  #applied: (value: T) => void
  #what: string
  #options: WatchedFileOptions
  #watcher: FSWatcher | null = null
  #timer: ReturnType<typeof setTimeout> | null = null

  /**
   * Loads the file (throws naming the file and line when it is invalid) and starts watching.
   * `what` names the content in messages ("users", "rules"); `applied` runs after each re-read
   * that replaced the value.
   */
  constructor(path: string, what: string, parse: (text: string, path: string) => T, applied: (value: T) => void, options: WatchedFileOptions = {}) {
    this.path = path
    this.#what = what
    this.#parse = parse
    this.#applied = applied
    this.#options = options
    this.#lastText = readText(path)
    this.#value = parse(this.#lastText, path)
    if (options.watch !== false) this.#watch()
  }

  get value(): T {
    return this.#value
  }

  /** Re-reads the file now. Throws (naming file and line) when invalid; the old value stays. */
  reload(): void {
    this.#apply(readText(this.path))
  }

  close(): void {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    this.#watcher?.close()
    this.#watcher = null
  }

  #apply(text: string): void {
    // remembered even when it does not parse: the same bad text is reported once
    this.#lastText = text
    this.#value = this.#parse(text, this.path)
    this.#applied(this.#value)
  }

  #watch(): void {
    const onEvent = () => {
      if (this.#timer !== null) clearTimeout(this.#timer)
      this.#timer = setTimeout(() => this.#changed(), this.#options.debounceMs ?? 100)
      this.#timer.unref?.()
    }
    this.#watcher = watch(dirname(this.path), { persistent: false }, onEvent)
    this.#watcher.on('error', (e: Error) => this.#options.onError?.(`${this.path}: cannot watch: ${e.message}`))
  }

  #changed(): void {
    this.#timer = null
    let text: string
    try {
      text = readText(this.path)
    } catch (e) {
      // e.g. deleted, or mid-replace: keep the old version; the next event retries
      this.#options.onError?.(`${(e as Error).message}; keeping the previous ${this.#what}`)
      this.#lastText = null
      return
    }
    if (text === this.#lastText) return
    try {
      this.#apply(text)
    } catch (e) {
      this.#options.onError?.(`${(e as Error).message}; keeping the previous ${this.#what}`)
    }
  }
}
