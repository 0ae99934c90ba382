import { MemoryStore } from '../../src/store/memory.ts'
import { runStoreContract } from '../contracts/store.contract.ts'

runStoreContract('memory', { make: async () => new MemoryStore() })
