/**
 * node:quic, loaded on first use and without its ExperimentalWarning: a static import would
 * print the warning on stderr for every command (`vmqtt passwd`, `config check`, ...) even
 * when no QUIC listener or client is used.
 */
type NodeQuic = typeof import('node:quic')

let loading: Promise<NodeQuic> | null = null

export function loadQuic(): Promise<NodeQuic> {
  loading ??= (async () => {
    const emit = process.emitWarning
    process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
      const text = typeof warning === 'string' ? warning : warning.message
      if (/\bquic\b/i.test(text)) return
      return (emit as (...a: unknown[]) => void).call(process, warning, ...rest)
    }) as typeof process.emitWarning
    try {
      return await import('node:quic')
    } finally {
      process.emitWarning = emit
    }
  })()
  return loading
}
