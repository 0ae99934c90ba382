import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts'
import { runStoreContract } from '../contracts/store.contract.ts'

let dir = ''
runStoreContract('sqlite', {
  make: async () => {
    dir = mkdtempSync(join(tmpdir(), 'vmqtt-store-'))
    return new SqliteStore({ dir, durability: 'fsync', maxSizeMb: 0 })
  },
  reopen: async () => new SqliteStore({ dir, durability: 'fsync', maxSizeMb: 0 }),
  cleanup: () => rmSync(dir, { recursive: true, force: true }),
})
