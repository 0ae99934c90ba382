import { describe, expect, test } from 'bun:test'
import { cgroupLimit, memoryBudgetBytes, parseLimit, parseProcCgroup, type ReadText } from '../../src/broker/memory-limit.ts'
import { loadConfig } from '../../src/config/load.ts'

const GiB = 1024 ** 3
/** A fake filesystem: path -> content. */
const fs = (files: Record<string, string>): ReadText => (p) => files[p] ?? null

describe('limits.memory = auto', () => {
  test('cgroup v2: the smallest memory.max from the process cgroup up to the root ("max" = no limit)', () => {
    const read = fs({
      '/proc/self/cgroup': '0::/system.slice/vmqtt.service\n',
      '/sys/fs/cgroup/system.slice/vmqtt.service/memory.max': 'max\n',
      '/sys/fs/cgroup/system.slice/memory.max': `${2 * GiB}\n`,
      '/sys/fs/cgroup/memory.max': 'max\n',
    })
    expect(cgroupLimit(read)).toBe(2 * GiB)
    expect(memoryBudgetBytes('auto', read, 16 * GiB)).toBe(GiB / 2)
  })

  test('cgroup v2 in a container (its own cgroup mounted as the root): /sys/fs/cgroup/memory.max', () => {
    const read = fs({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/memory.max': '536870912\n' })
    expect(memoryBudgetBytes('auto', read, 16 * GiB)).toBe(128 * 1024 * 1024)
  })

  test('cgroup v1: memory.limit_in_bytes of the memory controller; its "unlimited" value means no limit', () => {
    const v1 = '12:pids:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n'
    const limited = fs({ '/proc/self/cgroup': v1, '/sys/fs/cgroup/memory/memory.limit_in_bytes': `${GiB}\n` })
    expect(memoryBudgetBytes('auto', limited, 8 * GiB)).toBe(GiB / 4)
    const unlimited = fs({ '/proc/self/cgroup': v1, '/sys/fs/cgroup/memory/memory.limit_in_bytes': '9223372036854771712\n' })
    expect(cgroupLimit(unlimited)).toBeNull()
    expect(memoryBudgetBytes('auto', unlimited, 8 * GiB)).toBe(2 * GiB)
  })

  test('no cgroup information, or a cgroup limit above the RAM: a quarter of the RAM', () => {
    expect(memoryBudgetBytes('auto', fs({}), 8 * GiB)).toBe(2 * GiB)
    const big = fs({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/memory.max': `${64 * GiB}\n` })
    expect(memoryBudgetBytes('auto', big, 8 * GiB)).toBe(2 * GiB)
  })

  test('parsing: limit files and /proc/self/cgroup lines', () => {
    expect(parseLimit('max\n')).toBeNull()
    expect(parseLimit('garbage')).toBeNull()
    expect(parseLimit(null)).toBeNull()
    expect(parseLimit('0')).toBeNull()
    expect(parseLimit(' 1073741824 \n')).toBe(GiB)
    expect(parseProcCgroup('5:cpu,memory:/a/b\n0::/c\n')).toEqual({ v1: '/a/b', v2: '/c' })
    expect(parseProcCgroup('')).toEqual({ v1: null, v2: null })
  })

  test('an explicit setting wins; 0 = no budget; sizes with units', () => {
    expect(memoryBudgetBytes(123_456, fs({}), 8 * GiB)).toBe(123_456)
    expect(memoryBudgetBytes(0, fs({}), 8 * GiB)).toBe(0)
    const at = (v: string) => loadConfig({ env: { VMQTT_LIMITS_MEMORY: v } }).limits.memory
    expect(at('auto')).toBe('auto')
    expect(at('512MiB')).toBe(512 * 1024 * 1024)
    expect(at('2GB')).toBe(2_000_000_000)
    expect(at('1g')).toBe(GiB)
    expect(at('0')).toBe(0)
    expect(() => at('lots')).toThrow(/VMQTT_LIMITS_MEMORY.*"lots" is invalid.*512MiB/)
    expect(at('AUTO')).toBe('auto')
    expect(at(' Auto ')).toBe('auto')
    expect(at('1MiB')).toBe(1024 * 1024)
    // a budget under 1 MiB is a unit mistake (512 meant as MiB is 512 bytes)
    for (const small of ['1', '512', '4096', '1023KiB']) expect(() => at(small)).toThrow(new RegExp(`VMQTT_LIMITS_MEMORY.*"${small}" is invalid.*at least 1 MiB`))
  })
})
