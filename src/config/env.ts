/** Maps VMQTT_<SECTION>_<KEY> environment variables onto config keys. */

export function envName(section: string, key: string): string {
  return `VMQTT_${section.toUpperCase()}_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`
}

/** Turns a string from the environment into the type of the key's default value. */
export function coerce(raw: string, example: unknown): unknown {
  if (raw === 'off') return raw
  if (typeof example === 'number') {
    const n = Number(raw)
    return raw.trim() !== '' && Number.isFinite(n) ? n : raw
  }
  if (typeof example === 'boolean') {
    if (/^(true|1|yes|on)$/i.test(raw)) return true
    if (/^(false|0|no)$/i.test(raw)) return false
    return raw
  }
  if (Array.isArray(example)) return raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0)
  return raw
}

/** Reads every VMQTT_* variable that names a key of defaults; unknown VMQTT_ names are errors. */
export function fromEnv(env: Record<string, string | undefined>, defaults: Record<string, Record<string, unknown>>): {
  values: Record<string, Record<string, unknown>>
  unknown: string[]
} {
  const names = new Map<string, [string, string]>()
  for (const [section, keys] of Object.entries(defaults)) {
    for (const key of Object.keys(keys)) names.set(envName(section, key), [section, key])
  }
  const values: Record<string, Record<string, unknown>> = {}
  const unknown: string[] = []
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith('VMQTT_') || raw === undefined || name === 'VMQTT_CONFIG') continue
    const target = names.get(name)
    if (target === undefined) { unknown.push(name); continue }
    const [section, key] = target
    values[section] ??= {}
    values[section][key] = coerce(raw, defaults[section]![key])
  }
  return { values, unknown }
}
