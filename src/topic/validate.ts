/** Topic name and topic filter rules (spec 4.7). Pure functions, no broker state. */

export interface TopicLimits {
  maxLength: number
  maxLevels: number
}

/** Returns an error text, or null when the topic name is valid. */
export function topicNameError(topic: string, limits: TopicLimits): string | null {
  // [MQTT-4.7.3-1] topic names and filters are at least one character long
  if (topic.length === 0) return 'topic name is empty'
  // [MQTT-3.3.2-2] the topic name in a PUBLISH must not contain wildcard characters
  if (topic.includes('+') || topic.includes('#')) return 'topic name contains a wildcard'
  return limitError(topic, limits)
}

/** Returns an error text, or null when the topic filter (without $share prefix) is valid. */
export function topicFilterError(filter: string, limits: TopicLimits): string | null {
  if (filter.length === 0) return 'topic filter is empty'
  const levels = filter.split('/')
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i]!
    if (l.includes('#')) {
      // [MQTT-4.7.1-2] '#' must be the last character and occupy a whole level
      if (l !== '#' || i !== levels.length - 1) return "'#' must be alone in the last level"
    } else if (l.includes('+') && l !== '+') {
      // [MQTT-4.7.1-3] '+' must occupy an entire level
      return "'+' must occupy a whole level"
    }
  }
  return limitError(filter, limits)
}

function limitError(s: string, limits: TopicLimits): string | null {
  if (Buffer.byteLength(s) > limits.maxLength) return `longer than ${limits.maxLength} bytes`
  let levels = 1
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) === 47) levels++
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
