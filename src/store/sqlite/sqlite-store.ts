import { Database, type Statement } from 'bun:sqlite'
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { Message } from '../../codec/message.ts'
import type { QoS } from 'mqtt-packet'
import { TopicTree } from '../../topic/topic-tree.ts'
import { retainedSize, StoreError, type OutboxEntry, type QueuedSummary, type Restored, type SessionRecord, type Store } from '../types.ts'
import { messageFromRow, propsToJson, subsFromJson, subsToJson, willFromJson, willToJson, type MessageRow } from './rows.ts'
import { checkVersion, migrate, SchemaError } from './schema.ts'

export interface SqliteOptions {
  dir: string
  /** fsync: synchronous=FULL (survives power loss); process: NORMAL (survives a crash of vmqtt). */
  durability: 'fsync' | 'process'
  /** Largest database size in MiB; 0 = unlimited. When reached, writes fail as "full". */
  maxSizeMb: number
}

const STATES = ['queued', 'publish', 'pubrel'] as const
/** A message row goes with its last outbox entry (trigger outbox_gc); this sweep only catches strays. */
const GC_INTERVAL_MS = 600_000
const CHECKPOINT_INTERVAL_MS = 60_000

type Op = () => void

/**
 * bun:sqlite in WAL mode. Writes are buffered as operations and applied in one transaction by
 * commit() (group commit). Retained messages are also indexed in memory for matching.
 */
export class SqliteStore implements Store {
  readonly kind = 'sqlite'
  readonly path: string
  #opts: SqliteOptions
  #db: Database | null = null
  #ops: Op[] = []
  #retained = new TopicTree<Message>()
  #msgIds = new WeakMap<Message, number>()
  /** Message ids whose row exists at the current end of #ops (no outbox delete since). */
  #written = new Set<number>()
  #nextMsgId = 1
  /** Writes dropped (store full) by a commit that pageQueued made: reported by the next commit(). */
  #droppedCarry = 0
  /** Clients with a queued outbox entry written since the last commit (pageQueued must see it). */
  #queuedPuts = new Set<string>()
  #lastGc = 0
  #lastCheckpoint = Date.now()
  #s!: Record<string, Statement>

  constructor(opts: SqliteOptions) {
    this.#opts = opts
    this.path = join(resolve(opts.dir), 'vmqtt.db')
  }

  get pending(): boolean {
    return this.#ops.length > 0 || this.#droppedCarry > 0
  }

  async open(): Promise<void> {
    const dir = resolve(this.#opts.dir)
    try {
      mkdirSync(dir, { recursive: true })
      if (!statSync(dir).isDirectory()) throw new Error('not a directory')
    } catch (e) {
      const why = (e as { code?: string }).code === 'EEXIST' ? 'it exists and is not a directory' : (e as Error).message
      throw new StoreError('data-dir', `cannot use data directory ${dir}: ${why}. ` +
        'Create it with write permission for vmqtt, or set VMQTT_DATA_DIR to another directory.')
    }
    let db: Database
    try {
      // readable by its owner only, whatever the umask; SQLite gives -wal and -shm the same mode
      if (!existsSync(this.path)) {
        closeSync(openSync(this.path, 'a', 0o600))
        chmodSync(this.path, 0o600)
      }
      db = new Database(this.path, { create: true, strict: true })
    } catch (e) {
      throw this.#openError(e)
    }
    try {
      db.run('PRAGMA busy_timeout = 0')
      db.run('PRAGMA locking_mode = EXCLUSIVE')
      checkVersion(db, this.path)
      const mode = (db.query('PRAGMA journal_mode = WAL').get() as { journal_mode: string }).journal_mode
      if (mode !== 'wal') throw new StoreError('wal', `${this.path}: cannot switch to WAL mode (got ${mode})`)
      // take the exclusive lock now: a second vmqtt on the same directory fails here
      db.run('BEGIN IMMEDIATE')
      db.run('COMMIT')
      db.run(`PRAGMA synchronous = ${this.#opts.durability === 'fsync' ? 'FULL' : 'NORMAL'}`)
      if (this.#opts.maxSizeMb > 0) {
        const pageSize = (db.query('PRAGMA page_size').get() as { page_size: number }).page_size
        db.run(`PRAGMA max_page_count = ${Math.floor((this.#opts.maxSizeMb * 1024 * 1024) / pageSize)}`)
      }
      migrate(db, this.path)
      // delete a message row with the last outbox entry that references it, in the same
      // transaction: a periodic sweep of all rows blocked the event loop ~1 s under load.
      // REPLACE of an outbox row (a state change) must not fire it: recursive_triggers off
      db.run('PRAGMA recursive_triggers = OFF')
      db.run(`CREATE TEMP TRIGGER outbox_gc AFTER DELETE ON main.outbox BEGIN
        DELETE FROM main.messages WHERE id = OLD.message_id AND NOT EXISTS (SELECT 1 FROM main.outbox WHERE message_id = OLD.message_id);
      END`)
    } catch (e) {
      db.close()
      throw this.#openError(e)
    }
    this.#db = db
    this.#prepare(db)
    for (const row of db.query('SELECT topic, payload, qos, 1 AS retain, props, expires_at, \'\' AS origin FROM retained').all() as MessageRow[]) {
      const msg = messageFromRow(row)
      this.#retained.set(row.topic, msg)
      this.#retainedBytes += retainedSize(msg)
    }
    const max = db.query('SELECT MAX(id) AS m FROM messages').get() as { m: number | null }
    this.#nextMsgId = (max.m ?? 0) + 1
  }

  #openError(e: unknown): Error {
    if (e instanceof StoreError) return e
    if (e instanceof SchemaError) return new StoreError('schema', e.message)
    const code = (e as { code?: string }).code ?? ''
    const msg = (e as Error).message
    if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') {
      return new StoreError('locked', `${this.path} is locked by another running vmqtt (${msg}). ` +
        'Stop the other broker or give this one its own VMQTT_DATA_DIR.')
    }
    if (code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT') {
      return new StoreError('corrupt', `${this.path} is not a valid vmqtt database or is corrupt (${msg}). ` +
        'vmqtt does not delete or re-create it: move it aside (keep a copy) or restore a backup, then start again.')
    }
    if (code === 'SQLITE_CANTOPEN' || code === 'SQLITE_READONLY' || code === 'SQLITE_PERM' || code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
      return new StoreError('not-writable', `cannot open ${this.path} for writing (${msg}). ` +
        'Give vmqtt write permission on the data directory or set VMQTT_DATA_DIR.')
    }
    return new StoreError('open', `cannot open ${this.path}: ${msg}`)
  }

  #prepare(db: Database): void {
    const q = (sql: string) => db.prepare(sql)
    this.#s = {
      setRetained: q('INSERT OR REPLACE INTO retained (topic, payload, qos, props, expires_at) VALUES (?, ?, ?, ?, ?)'),
      delRetained: q('DELETE FROM retained WHERE topic = ?'),
      saveSession: q('INSERT OR REPLACE INTO sessions (client_id, version, expiry, disconnected_at, subscriptions, will, owner) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      delSession: q('DELETE FROM sessions WHERE client_id = ?'),
      delSessionOutbox: q('DELETE FROM outbox WHERE client_id = ?'),
      delSessionQos2: q('DELETE FROM inbound_qos2 WHERE client_id = ?'),
      insMessage: q('INSERT OR IGNORE INTO messages (id, topic, payload, qos, retain, props, expires_at, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      putOutbox: q('INSERT OR REPLACE INTO outbox (client_id, seq, message_id, qos, retain, sub_ids, packet_id, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      delOutbox: q('DELETE FROM outbox WHERE client_id = ? AND seq = ?'),
      pageQueued: q(`SELECT o.seq, o.message_id, o.qos AS dqos, o.retain AS dretain, o.sub_ids,
          m.topic, m.payload, m.qos, m.retain, m.props, m.expires_at, m.origin
        FROM outbox o JOIN messages m ON m.id = o.message_id
        WHERE o.client_id = ? AND o.seq > ? AND o.state = 0 ORDER BY o.seq LIMIT ?`),
      addQos2: q('INSERT OR IGNORE INTO inbound_qos2 (client_id, packet_id) VALUES (?, ?)'),
      delQos2: q('DELETE FROM inbound_qos2 WHERE client_id = ? AND packet_id = ?'),
      gc: q('DELETE FROM messages WHERE id NOT IN (SELECT message_id FROM outbox)'),
    }
  }

  async close(): Promise<void> {
    const db = this.#db
    if (db === null) return
    try {
      if (this.pending) this.commit()
      db.run('PRAGMA wal_checkpoint(TRUNCATE)')
    } finally {
      // finalize prepared statements, or close() leaves the handle (and its lock) open
      for (const s of Object.values(this.#s)) s.finalize()
      db.close()
      this.#db = null
    }
  }

  #retainedBytes = 0

  retainedBytes(): number {
    return this.#retainedBytes
  }

  getRetained(topic: string): Message | undefined {
    return this.#retained.get(topic)
  }

  setRetained(msg: Message): void {
    const old = this.#retained.get(msg.topic)
    this.#retainedBytes += retainedSize(msg) - (old === undefined ? 0 : retainedSize(old))
    this.#retained.set(msg.topic, msg)
    const s = this.#s.setRetained!
    const args = [msg.topic, msg.payload, msg.qos, propsToJson(msg.props), msg.expiresAt] as const
    this.#ops.push(() => s.run(...args))
  }

  deleteRetained(topic: string): void {
    const old = this.#retained.get(topic)
    if (old === undefined || !this.#retained.delete(topic)) return
    this.#retainedBytes -= retainedSize(old)
    const s = this.#s.delRetained!
    this.#ops.push(() => s.run(topic))
  }

  retainedCount(): number {
    return this.#retained.size
  }

  allRetained(): Iterable<Message> {
    return this.#retained.values()
  }

  matchRetained(filter: string, visit: (msg: Message) => void): void {
    this.#retained.match(filter, visit)
  }

  saveSession(rec: SessionRecord): void {
    const s = this.#s.saveSession!
    const args = [rec.clientId, rec.version, rec.expiryInterval, rec.disconnectedAt, subsToJson(rec.subscriptions), willToJson(rec.will, rec.willAt), rec.owner ?? null] as const
    this.#ops.push(() => s.run(...args))
  }

  deleteSession(clientId: string): void {
    const { delSession, delSessionOutbox, delSessionQos2 } = this.#s
    this.#written.clear()
    this.#ops.push(() => {
      delSession!.run(clientId)
      delSessionOutbox!.run(clientId)
      delSessionQos2!.run(clientId)
    })
  }

  putOutbox(clientId: string, e: OutboxEntry): void {
    const msg = e.delivery.msg
    let id = this.#msgIds.get(msg)
    if (id === undefined) {
      id = this.#nextMsgId++
      this.#msgIds.set(msg, id)
    }
    if (!this.#written.has(id)) {
      // (re)insert: a message used again (a retained one) may have lost its row with its last outbox entry
      this.#written.add(id)
      const ins = this.#s.insMessage!
      const margs = [id, msg.topic, msg.payload, msg.qos, msg.retain ? 1 : 0, propsToJson(msg.props), msg.expiresAt, msg.origin] as const
      this.#ops.push(() => ins.run(...margs))
    }
    if (e.state === 'queued') this.#queuedPuts.add(clientId)
    const d = e.delivery
    const put = this.#s.putOutbox!
    const args = [clientId, e.seq, id, d.qos, d.retain ? 1 : 0, d.subIds === null ? null : JSON.stringify(d.subIds), e.packetId, STATES.indexOf(e.state)] as const
    this.#ops.push(() => put.run(...args))
  }

  removeOutbox(clientId: string, seq: number): void {
    const s = this.#s.delOutbox!
    this.#written.clear()
    this.#ops.push(() => s.run(clientId, seq))
  }

  pageQueued(clientId: string, afterSeq: number, limit: number): OutboxEntry[] {
    // read what was queued so far: commit the buffered writes first (a StoreError keeps them buffered)
    if (this.#queuedPuts.has(clientId)) this.#droppedCarry += this.commit()
    const rows = this.#s.pageQueued!.all(clientId, afterSeq, limit) as OutboxRow[]
    const out: OutboxEntry[] = []
    for (const r of rows) out.push(this.#entry(r, this.#message(r, null)))
    return out
  }

  /** A message row as a Message, remembered by id so that writing it again reuses the row. */
  #message(r: OutboxRow, cache: Map<number, Message> | null): Message {
    let msg = cache?.get(r.message_id)
    if (msg === undefined) {
      msg = messageFromRow(r)
      cache?.set(r.message_id, msg)
      this.#msgIds.set(msg, r.message_id)
    }
    return msg
  }

  #entry(r: OutboxRow, msg: Message): OutboxEntry {
    return {
      seq: r.seq, packetId: r.packet_id ?? 0, state: STATES[r.state ?? 0] ?? 'queued',
      delivery: { msg, qos: r.dqos as QoS, retain: r.dretain === 1, subIds: r.sub_ids === null ? null : JSON.parse(r.sub_ids) as number[], seq: r.seq },
    }
  }

  addInboundQos2(clientId: string, packetId: number): void {
    const s = this.#s.addQos2!
    this.#ops.push(() => s.run(clientId, packetId))
  }

  removeInboundQos2(clientId: string, packetId: number): void {
    const s = this.#s.delQos2!
    this.#ops.push(() => s.run(clientId, packetId))
  }

  commit(): number {
    const db = this.#db
    const carried = this.#droppedCarry
    this.#droppedCarry = 0
    if (db === null || this.#ops.length === 0) return carried
    const now = Date.now()
    if (now - this.#lastGc > GC_INTERVAL_MS) {
      this.#lastGc = now
      const gc = this.#s.gc!
      this.#ops.push(() => gc.run())
    }
    const ops = this.#ops
    this.#ops = []
    this.#written.clear()
    let dropped = 0
    try {
      db.transaction(() => { for (const op of ops) op() })()
    } catch (e) {
      if (!isFull(e)) {
        this.#ops = ops.concat(this.#ops)
        throw new StoreError((e as { code?: string }).code ?? 'io', `commit to ${this.path} failed: ${(e as Error).message}`)
      }
      // full: keep every write that fits (deletes free space), drop the ones that do not.
      // SQLite may roll back the whole transaction on SQLITE_FULL, so savepoints inside one
      // transaction do not work: each write gets its own transaction here.
      for (let i = 0; i < ops.length; i++) {
        try {
          db.transaction(ops[i]!)()
        } catch (e2) {
          if (isFull(e2)) { dropped++; continue }
          this.#ops = ops.slice(i).concat(this.#ops)
          throw new StoreError((e2 as { code?: string }).code ?? 'io', `commit to ${this.path} failed: ${(e2 as Error).message}`)
        }
      }
    }
    // every buffered write is applied (or dropped as full): nothing queued is left unread
    this.#queuedPuts.clear()
    if (now - this.#lastCheckpoint > CHECKPOINT_INTERVAL_MS) {
      this.#lastCheckpoint = now
      try { db.run('PRAGMA wal_checkpoint(PASSIVE)') } catch { /* retried next time */ }
    }
    return dropped + carried
  }

  load(): Restored {
    const db = this.#db!
    const sessions: SessionRecord[] = []
    for (const r of db.query('SELECT client_id, version, expiry, disconnected_at, subscriptions, will, owner FROM sessions').all() as {
      client_id: string; version: number; expiry: number; disconnected_at: number; subscriptions: string; will: string | null; owner: string | null
    }[]) {
      const w = willFromJson(r.will)
      sessions.push({
        clientId: r.client_id, owner: r.owner ?? undefined, version: r.version as 3 | 4 | 5, expiryInterval: r.expiry, disconnectedAt: r.disconnected_at,
        subscriptions: subsFromJson(r.subscriptions), will: w?.will ?? null, willAt: w?.at ?? 0,
      })
    }
    // only the inflight entries are read: queued ones stay in the store until pageQueued reads them
    const messages = new Map<number, Message>()
    const outbox = new Map<string, OutboxEntry[]>()
    const rows = db.query(`SELECT o.client_id, o.seq, o.message_id, o.qos AS dqos, o.retain AS dretain, o.sub_ids, o.packet_id, o.state,
        m.topic, m.payload, m.qos, m.retain, m.props, m.expires_at, m.origin
      FROM outbox o JOIN messages m ON m.id = o.message_id WHERE o.state <> 0 ORDER BY o.client_id, o.seq`).all() as (OutboxRow & { client_id: string })[]
    for (const r of rows) {
      let list = outbox.get(r.client_id)
      if (list === undefined) outbox.set(r.client_id, (list = []))
      list.push(this.#entry(r, this.#message(r, messages)))
    }
    const queued = new Map<string, QueuedSummary>()
    for (const r of db.query(`SELECT o.client_id, COUNT(*) AS n, SUM(LENGTH(CAST(m.topic AS BLOB)) + LENGTH(m.payload)) AS bytes, MAX(o.seq) AS last
      FROM outbox o JOIN messages m ON m.id = o.message_id WHERE o.state = 0 GROUP BY o.client_id`).all() as { client_id: string; n: number; bytes: number; last: number }[]) {
      queued.set(r.client_id, { count: r.n, bytes: r.bytes, lastSeq: r.last })
    }
    const inboundQos2 = new Map<string, number[]>()
    for (const r of db.query('SELECT client_id, packet_id FROM inbound_qos2 ORDER BY client_id, packet_id').all() as { client_id: string; packet_id: number }[]) {
      let list = inboundQos2.get(r.client_id)
      if (list === undefined) inboundQos2.set(r.client_id, (list = []))
      list.push(r.packet_id)
    }
    return { sessions, outbox, queued, inboundQos2 }
  }
}

type OutboxRow = MessageRow & {
  seq: number; message_id: number; dqos: number; dretain: number; sub_ids: string | null; packet_id?: number; state?: number
}

function isFull(e: unknown): boolean {
  const code = (e as { code?: string }).code
  return code === 'SQLITE_FULL'
}
