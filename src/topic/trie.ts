/**
 * A topic trie mapping topic filters to values. It knows nothing about clients: values are
 * stored under a caller-chosen key per filter. Pure and synchronous.
 */
class Node<V> {
  /** Created on first child: most nodes of a large trie are leaves. */
  children: Map<string, Node<V>> | null = null
  /** The first value is held inline (most filters have one subscriber); the rest in a Map. */
  key: string | null = null
  value: V | undefined = undefined
  more: Map<string, V> | null = null

  get empty(): boolean {
    return this.key === null && this.more === null
  }

  getValue(key: string): V | undefined {
    return this.key === key ? this.value : this.more?.get(key)
  }

  /** Sets key's value; returns true if the key was new. */
  setValue(key: string, value: V): boolean {
    if (this.key === key) { this.value = value; return false }
    if (this.key === null && (this.more === null || !this.more.has(key))) { this.key = key; this.value = value; return true }
    const more = (this.more ??= new Map())
    const isNew = !more.has(key)
    more.set(key, value)
    return isNew
  }

  deleteValue(key: string): boolean {
    if (this.key === key) {
      this.key = null
      this.value = undefined
      return true
    }
    if (this.more === null || !this.more.delete(key)) return false
    if (this.more.size === 0) this.more = null
    return true
  }

  visit(fn: (value: V, key: string) => void): void {
    if (this.key !== null) fn(this.value as V, this.key)
    if (this.more !== null) for (const [k, v] of this.more) fn(v, k)
  }
}

export class TopicTrie<V> {
  #root = new Node<V>()
  #size = 0

  get size(): number {
    return this.#size
  }

  /** Adds or replaces the value stored under key for filter. Returns true if it was new. */
  add(filter: string, key: string, value: V): boolean {
    let node = this.#root
    for (const level of filter.split('/')) {
      node.children ??= new Map()
      let next = node.children.get(level)
      if (next === undefined) {
        next = new Node<V>()
        node.children.set(level, next)
      }
      node = next
    }
    const isNew = node.setValue(key, value)
    if (isNew) this.#size++
    return isNew
  }

  /** Removes key from filter; prunes empty nodes. Returns true if something was removed. */
  remove(filter: string, key: string): boolean {
    const levels = filter.split('/')
    const path: Node<V>[] = [this.#root]
    let node = this.#root
    for (const level of levels) {
      const next = node.children?.get(level)
      if (next === undefined) return false
      path.push(next)
      node = next
    }
    if (!node.deleteValue(key)) return false
    this.#size--
    for (let i = levels.length; i > 0; i--) {
      const n = path[i]!
      if (!n.empty || (n.children !== null && n.children.size > 0)) break
      const parent = path[i - 1]!
      parent.children!.delete(levels[i - 1]!)
      if (parent.children!.size === 0) parent.children = null
    }
    return true
  }

  get(filter: string, key: string): V | undefined {
    let node: Node<V> | undefined = this.#root
    for (const level of filter.split('/')) {
      node = node.children?.get(level)
      if (node === undefined) return undefined
    }
    return node.getValue(key)
  }

  /** Calls visit for every value whose filter matches the topic name. */
  match(topic: string, visit: (value: V, key: string) => void): void {
    const levels = topic.split('/')
    // [MQTT-4.7.2-1] a leading wildcard does not match topics that begin with '$'
    this.#walk(this.#root, levels, 0, topic.charCodeAt(0) === 36, visit)
  }

  #walk(node: Node<V>, levels: string[], i: number, dollar: boolean, visit: (value: V, key: string) => void): void {
    const wild = !(dollar && i === 0)
    const children = node.children
    if (children === null) {
      if (i === levels.length) node.visit(visit)
      return
    }
    if (wild) {
      // '#' matches the parent level and every level below [MQTT-4.7.1-2]
      children.get('#')?.visit(visit)
    }
    if (i === levels.length) {
      node.visit(visit)
      return
    }
    const exact = children.get(levels[i]!)
    if (exact !== undefined) this.#walk(exact, levels, i + 1, dollar, visit)
    if (wild) {
      const plus = children.get('+')
      if (plus !== undefined) this.#walk(plus, levels, i + 1, dollar, visit)
    }
  }

  /** Every (filter, key, value) in the trie. */
  *entries(): Generator<[string, string, V]> {
    const stack: [Node<V>, string][] = [[this.#root, '']]
    while (stack.length > 0) {
      const [node, path] = stack.pop()!
      const found: [string, string, V][] = []
      node.visit((v, k) => { found.push([path, k, v]) })
      yield* found
      if (node.children) for (const [level, child] of node.children) stack.push([child, path === '' && node === this.#root ? level : `${path}/${level}`])
    }
  }
}
