/**
 * A topic trie mapping topic filters to values. It knows nothing about clients: values are
 * stored under a caller-chosen key per filter. Pure and synchronous.
 */
class Node<V> {
  /** Created on first child: most nodes of a large trie are leaves. */
  children: Map<string, Node<V>> | null = null
  values: Map<string, V> | null = null
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
    node.values ??= new Map()
    const isNew = !node.values.has(key)
    node.values.set(key, value)
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
    if (node.values === null || !node.values.delete(key)) return false
    this.#size--
    if (node.values.size === 0) node.values = null
    for (let i = levels.length; i > 0; i--) {
      const n = path[i]!
      if (n.values !== null || (n.children !== null && n.children.size > 0)) break
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
    return node.values?.get(key)
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
      if (i === levels.length && node.values) for (const [k, v] of node.values) visit(v, k)
      return
    }
    if (wild) {
      // '#' matches the parent level and every level below [MQTT-4.7.1-2]
      const hash = children.get('#')
      if (hash?.values) for (const [k, v] of hash.values) visit(v, k)
    }
    if (i === levels.length) {
      if (node.values) for (const [k, v] of node.values) visit(v, k)
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
      if (node.values) for (const [k, v] of node.values) yield [path, k, v]
      if (node.children) for (const [level, child] of node.children) stack.push([child, path === '' && node === this.#root ? level : `${path}/${level}`])
    }
  }
}
