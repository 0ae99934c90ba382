import type { Logger } from '../../src/log.ts'

export interface LogLine { level: string; msg: string; fields: Record<string, unknown> }

/** A Logger for startBroker(env, { log }) that keeps every line, for tests that count log lines. */
export function captureLog(): { log: Logger; lines: LogLine[]; matching: (text: string) => LogLine[] } {
  const lines: LogLine[] = []
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => { lines.push({ level, msg, fields: fields ?? {} }) }
  const log: Logger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), enabled: () => true }
  return { log, lines, matching: (text) => lines.filter((l) => l.msg.includes(text)) }
}
