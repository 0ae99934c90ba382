/** Topic name and topic filter rules (spec 4.7). Pure functions, no broker state. */

export interface TopicLimits {
  maxLength: number
  maxLevels: number
  /** Accept the control characters U+0001-U+001F and U+007F-U+009F (refused when not set). */
  allowControl?: boolean
}

/** Returns an error text, or null when the topic name is valid. */
export function topicNameError(topic: string, limits: TopicLimits): string | null {
  // [MQTT-4.7.3-1] topic names and filters are at least one character long
  if (topic.length === 0) return 'topic name is empty'
  // [MQTT-3.3.2-2] no wildcard characters in a PUBLISH topic name: checked in the same pass
  return scan(topic, limits, true)
}

/** Returns an error text, or null when the topic filter (without $share prefix) is valid. */
export function topicFilterError(filter: string, limits: TopicLimits): string | null {
  return filterSyntaxError(filter, limits.allowControl === true) ?? scan(filter, limits, false)
}

/**
 * What the specification forbids in a filter (empty, misplaced wildcards) and, unless allowed,
 * control characters; not the configured limits. MQTT 3.1.1 closes the connection for these.
 */
export function filterSyntaxError(filter: string, allowControl = false): string | null {
  if (filter.length === 0) return 'topic filter is empty'
  let levelStart = 0
  for (let i = 0; i <= filter.length; i++) {
    const c = i < filter.length ? filter.charCodeAt(i) : 47
    if (c === 47) { levelStart = i + 1; continue }
    if (c === 35) {
      // [MQTT-4.7.1-2] '#' must be the last character and occupy a whole level
      if (i !== levelStart || i !== filter.length - 1) return "'#' must be alone in the last level"
    } else if (c === 43) {
      // [MQTT-4.7.1-3] '+' must occupy an entire level
      if (i !== levelStart || (i + 1 < filter.length && filter.charCodeAt(i + 1) !== 47)) return "'+' must occupy a whole level"
    } else if (!allowControl && c < 0xa0 && (c < 0x20 || c >= 0x7f)) return controlError(c)
  }
  return null
}

/**
 * The error text for a string with a control character (U+0001-U+001F, U+007F-U+009F; U+0000
 * too, which the codecs refuse earlier), or null. For client ids and user names.
 */
export function controlCharacterError(s: string): string | null {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0xa0 && (c < 0x20 || c >= 0x7f)) return controlError(c)
  }
  return null
}

function controlError(c: number): string {
  return `contains the control character U+${c.toString(16).toUpperCase().padStart(4, '0')}`
}

/**
 * One pass over a topic name or filter: wildcards (names only), control characters (unless
 * allowed: spec 1.5.3 / 1.5.4 say they SHOULD NOT appear, and they would reach logs, audit lines
 * and the admin API), and the level and length limits. The PUBLISH hot path: no allocation.
 */
function scan(s: string, limits: TopicLimits, name: boolean): string | null {
  const strict = limits.allowControl !== true
  let levels = 1
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 47) levels++
    else if (c < 0xa0) {
      if (name && (c === 43 || c === 35)) return 'topic name contains a wildcard'
      if (strict && (c < 0x20 || c >= 0x7f)) return controlError(c)
    }
  }
  // a string's UTF-8 length is at least its UTF-16 length and at most three times it
  if (s.length > limits.maxLength || (s.length * 3 > limits.maxLength && Buffer.byteLength(s) > limits.maxLength)) return `longer than ${limits.maxLength} bytes`
  if (levels > limits.maxLevels) return `more than ${limits.maxLevels} levels`
  return null
}

export interface ParsedFilter {
  /** The filter without the $share/{group}/ prefix. */
  filter: string
  /** Share name, or null for an ordinary subscription. */
  group: string | null
}

/** Splits `$share/{group}/{filter}`; returns an error text for a malformed shared filter. */
export function parseShared(raw: string): ParsedFilter | string {
  if (!raw.startsWith('$share/')) return { filter: raw, group: null }
  const rest = raw.slice(7)
  const slash = rest.indexOf('/')
  // [MQTT-4.8.2-1] the ShareName is at least one character and has no '/', '+' or '#'
  if (slash <= 0) return 'shared subscription needs $share/{ShareName}/{filter}'
  const group = rest.slice(0, slash)
  if (group.includes('+') || group.includes('#')) return 'ShareName must not contain wildcards'
  const filter = rest.slice(slash + 1)
  if (filter.length === 0) return 'shared subscription has an empty filter'
  return { filter, group }
}
