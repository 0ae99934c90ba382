/**
 * A hand-written SVG chart: per scenario and MQTT version, one bar per broker for throughput
 * (left) and p99 latency (right), the median as the bar and the min-max spread as a whisker.
 * Throughput: a linear scale per scenario (they differ by orders of magnitude); latency: one
 * log scale from 0.1 ms to 10 s. Values are printed.
 */
import { fmt, get, summarize, type Column, type ResultLine } from './report.ts'
import { scenarioByName } from './scenarios/index.ts'

const COLORS: Record<string, string> = { vmqtt: '#1f6fb4', 'vmqtt-bin': '#7fb3e0', mosquitto: '#e6550d', aedes: '#31a354' }
const BAR = 13, GAP = 12, LABEL_W = 170, PANEL_W = 340, PANEL_GAP = 130, TOP = 70

const LOG_MIN = -1, LOG_MAX = 4
/** Position on the latency panel's log axis (0.1 ms .. 10 s), clamped to the panel. */
const logX = (ms: number) => Math.min(PANEL_W, Math.max(0, ((Math.log10(Math.max(ms, 1e-3)) - LOG_MIN) / (LOG_MAX - LOG_MIN)) * PANEL_W))

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

export function chart(lines: ResultLine[], brokers: Column[], title: string): string {
  const s = summarize(lines)
  const groups: { version: number; scenario: string; tput?: string; lat?: string }[] = []
  for (const v of [...new Set(lines.map((l) => l.version))].sort()) {
    for (const name of [...new Set(lines.map((l) => l.scenario))]) {
      const sc = scenarioByName(name)
      if (!sc || !lines.some((l) => l.version === v && l.scenario === name)) continue
      const tput = sc.metrics.find((m) => m.chart === 'throughput')?.key
      const lat = sc.metrics.find((m) => m.chart === 'latency')?.key
      if (tput || lat) groups.push({ version: v, scenario: name, tput, lat })
    }
  }
  const x1 = LABEL_W, x2 = LABEL_W + PANEL_W + PANEL_GAP
  const height = TOP + 6 + groups.length * (brokers.length * BAR + GAP) + 24
  const width = x2 + PANEL_W + 110
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="10" y="18" font-size="14" font-weight="bold">${esc(title)}</text>`,
    `<text x="${x1}" y="${TOP - 12}" font-weight="bold">throughput, msgs/s (longer is better)</text>`,
    `<text x="${x2}" y="${TOP - 12}" font-weight="bold">p99 latency, ms, log scale (shorter is better)</text>`,
  ]
  brokers.forEach((b, i) => {
    const lx = 10 + i * 150
    out.push(`<rect x="${lx}" y="28" width="12" height="12" fill="${COLORS[b.id] ?? '#888'}"/><text x="${lx + 16}" y="38">${esc(b.label)}</text>`)
  })
  for (let d = LOG_MIN; d <= LOG_MAX; d++) {
    const x = x2 + logX(10 ** d)
    out.push(`<line x1="${x.toFixed(1)}" y1="${TOP - 4}" x2="${x.toFixed(1)}" y2="${height - 20}" stroke="#ddd"/>`)
    out.push(`<text x="${x.toFixed(1)}" y="${TOP - 1}" font-size="9" fill="#666" text-anchor="middle">${d < 0 ? '0.1' : 10 ** d} ms</text>`)
  }
  let y = TOP + 6
  for (const g of groups) {
    const h = brokers.length * BAR
    out.push(`<text x="${LABEL_W - 8}" y="${y + h / 2 + 4}" text-anchor="end">${esc(g.scenario)} v${g.version === 5 ? '5' : '3.1.1'}</text>`)
    out.push(`<line x1="${x1}" y1="${y - 2}" x2="${x1}" y2="${y + h}" stroke="#999"/><line x1="${x2}" y1="${y - 2}" x2="${x2}" y2="${y + h}" stroke="#999"/>`)
    if (!g.tput) out.push(`<text x="${x1 + 6}" y="${y + h / 2 + 4}" fill="#666">fixed rate (see the table)</text>`)
    for (const [metric, x0, unit] of [[g.tput, x1, 'msgs/s'], [g.lat, x2, 'ms']] as const) {
      if (!metric) continue
      const vals = brokers.map((b) => get(s, g.version, g.scenario, b.id, metric))
      const scale = Math.max(...vals.map((v) => (v && Number.isFinite(v.max) ? v.max : 0)), 1e-9)
      // throughput: linear, per scenario; latency: one log axis for all (0.1 ms .. 10 s)
      const at = unit === 'ms' ? logX : (v: number) => (v / scale) * PANEL_W
      vals.forEach((v, i) => {
        if (!v || !Number.isFinite(v.median)) return
        const by = y + i * BAR
        const w = at(v.median)
        const color = COLORS[brokers[i]!.id] ?? '#888'
        out.push(`<rect x="${x0}" y="${by + 1}" width="${w.toFixed(1)}" height="${BAR - 3}" fill="${color}"/>`)
        if (v.n > 1) {
          const a = x0 + at(v.min), z = x0 + at(v.max), cy = by + BAR / 2 - 0.5
          out.push(`<line x1="${a.toFixed(1)}" y1="${cy}" x2="${z.toFixed(1)}" y2="${cy}" stroke="#000" stroke-width="1"/>`)
        }
        out.push(`<text x="${(x0 + Math.max(w, at(v.max)) + 4).toFixed(1)}" y="${by + BAR - 3}">${fmt(v.median, unit)}</text>`)
      })
    }
    y += h + GAP
  }
  out.push(`<text x="10" y="${height - 6}" fill="#666">Bars: median of the runs; whiskers: min-max. Throughput: each scenario has its own linear scale (deliveries/s at the subscribers). Latency: one log scale.</text>`)
  out.push('</svg>')
  return out.join('\n')
}
