import type { Message } from '../codec/message.ts'
import type { Subscription } from '../session/types.ts'

/** What survives of a persistent session between connections. */
export interface SessionRecord {
  clientId: string
  version: 3 | 4 | 5
  expiryInterval: number
  disconnectedAt: number
  subscriptions: Subscription[]
}

/**
 * The one storage interface. The broker keeps the live state in memory and writes through
 * to the store; a durable store lets that state survive a restart. Both implementations run
 * test/contracts/store.contract.ts.
 */
export interface Store {
  readonly kind: string
  open(): Promise<void>
  close(): Promise<void>

  getRetained(topic: string): Message | undefined
  setRetained(msg: Message): void
  deleteRetained(topic: string): void
  retainedCount(): number
  allRetained(): Iterable<Message>
  /** Visits the retained messages whose topics match a filter. */
  matchRetained(filter: string, visit: (msg: Message) => void): void

  saveSession(rec: SessionRecord): void
  deleteSession(clientId: string): void
  loadSessions(): SessionRecord[]
}
