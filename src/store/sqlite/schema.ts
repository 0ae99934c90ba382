import type { Database } from 'bun:sqlite'

/**
 * Schema migrations. Index i migrates from user_version i to i + 1. Never edit a released
 * migration: add a new one. A database with a user_version above MIGRATIONS.length was
 * written by a newer vmqtt and is refused.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: the first schema
  `CREATE TABLE retained (
     topic TEXT PRIMARY KEY,
     payload BLOB NOT NULL,
     qos INTEGER NOT NULL,
     props TEXT,
     expires_at INTEGER NOT NULL
   );
   CREATE TABLE sessions (
     client_id TEXT PRIMARY KEY,
     version INTEGER NOT NULL,
     expiry INTEGER NOT NULL,
     disconnected_at INTEGER NOT NULL,
     subscriptions TEXT NOT NULL
   );
   CREATE TABLE messages (
     id INTEGER PRIMARY KEY,
     topic TEXT NOT NULL,
     payload BLOB NOT NULL,
     qos INTEGER NOT NULL,
     retain INTEGER NOT NULL,
     props TEXT,
     expires_at INTEGER NOT NULL,
     origin TEXT NOT NULL
   );
   CREATE TABLE outbox (
     client_id TEXT NOT NULL,
     seq INTEGER NOT NULL,
     message_id INTEGER NOT NULL,
     qos INTEGER NOT NULL,
     retain INTEGER NOT NULL,
     sub_ids TEXT,
     packet_id INTEGER NOT NULL,
     state INTEGER NOT NULL,
     PRIMARY KEY (client_id, seq)
   ) WITHOUT ROWID;
   CREATE TABLE inbound_qos2 (
     client_id TEXT NOT NULL,
     packet_id INTEGER NOT NULL,
     PRIMARY KEY (client_id, packet_id)
   ) WITHOUT ROWID;`,
  // 2: wills survive restarts; an index to find the messages still referenced
  `ALTER TABLE sessions ADD COLUMN will TEXT;
   CREATE INDEX outbox_message ON outbox (message_id);`,
  // 3: a session belongs to the username that made it (NULL: anonymous)
  'ALTER TABLE sessions ADD COLUMN owner TEXT;',
]

export const SCHEMA_VERSION = MIGRATIONS.length

export class SchemaError extends Error {}

/** Refuses a database written by a newer vmqtt, before anything changes it. */
export function checkVersion(db: Database, path: string): number {
  const found = (db.query('PRAGMA user_version').get() as { user_version: number }).user_version
  if (found > SCHEMA_VERSION) {
    throw new SchemaError(`${path} has schema version ${found}, newer than this vmqtt supports (${SCHEMA_VERSION}): ` +
      'run the vmqtt version that wrote it, or point VMQTT_DATA_DIR elsewhere')
  }
  return found
}

/** Brings the database to SCHEMA_VERSION; refuses a newer one. Returns the version it found. */
export function migrate(db: Database, path: string): number {
  const found = checkVersion(db, path)
  for (let v = found; v < SCHEMA_VERSION; v++) {
    db.transaction(() => {
      db.run(MIGRATIONS[v]!)
      db.run(`PRAGMA user_version = ${v + 1}`)
    })()
  }
  return found
}
