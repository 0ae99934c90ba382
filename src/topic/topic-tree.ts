/**
 * A tree of topic names with one value per topic, searchable by topic filter: the index for
 * retained messages, so a SUBSCRIBE visits only the matching branches. Pure, no broker state.
 */
class Node<V> {
  children = new Map<string, Node<V>>()
  value: V | undefined = undefined
}

export class TopicTree<V> {
  #root = new Node<V>()
  #size = 0

  get size(): number {
    return this.#size
  }

  get(topic: string): V | undefined {
    let node: Node<V> | undefined = this.#root
    for (const level of topic.split('/')) {
      node = node.children.get(level)
      if (node === undefined) return undefined
    }
    return node.value
  }

  set(topic: string, value: V): void {
    let node = this.#root
    for (const level of topic.split('/')) {
      let next = node.children.get(level)
      if (next === undefined) {
        next = new Node<V>()
        node.children.set(level, next)
      }
      node = next
    }
    if (node.value === undefined) this.#size++
    node.value = value
  }

  delete(topic: string): boolean {
    const levels = topic.split('/')
    const path: Node<V>[] = [this.#root]
    let node = this.#root
    for (const level of levels) {
      const next = node.children.get(level)
      if (next === undefined) return false
      path.push(next)
      node = next
    }
    if (node.value === undefined) return false
    node.value = undefined
    this.#size--
    for (let i = levels.length; i > 0; i--) {
      const n = path[i]!
      if (n.value !== undefined || n.children.size > 0) break
      path[i - 1]!.children.delete(levels[i - 1]!)
    }
    return true
  }

  /** Calls visit for each stored topic matched by the filter ([MQTT-4.7.2-1] honoured). */
  match(filter: string, visit: (value: V) => void): void {
    this.#walk(this.#root, filter.split('/'), 0, visit)
  }

  #walk(node: Node<V>, f: string[], i: number, visit: (value: V) => void): void {
    if (i === f.length) {
      if (node.value !== undefined) visit(node.value)
      return
    }
    const level = f[i]!
    if (level === '#') {
      // '#' also matches the parent level itself [MQTT-4.7.1-2]
      if (node.value !== undefined && i > 0) visit(node.value)
      this.#all(node, i === 0, visit)
      return
    }
    if (level === '+') {
      for (const [name, child] of node.children) {
        if (i === 0 && name.startsWith('$')) continue
        this.#walk(child, f, i + 1, visit)
      }
      return
    }
    const child = node.children.get(level)
    if (child !== undefined) this.#walk(child, f, i + 1, visit)
  }

  #all(node: Node<V>, top: boolean, visit: (value: V) => void): void {
    for (const [name, child] of node.children) {
      if (top && name.startsWith('$')) continue
      if (child.value !== undefined) visit(child.value)
      this.#all(child, false, visit)
    }
  }

  *values(): Generator<V> {
    const stack: Node<V>[] = [this.#root]
    while (stack.length > 0) {
      const node = stack.pop()!
      if (node.value !== undefined) yield node.value
      for (const child of node.children.values()) stack.push(child)
    }
  }
}
