/**
 * Reads a child's stdout as JSON log lines (a line that is not JSON becomes { raw }), pushing
 * each onto `lines` and calling `onChunk` after every chunk and once at the end of the stream.
 */
export async function readLogLines(stream: ReadableStream<Uint8Array>, lines: Record<string, unknown>[], onChunk: () => void): Promise<void> {
  const decoder = new TextDecoder()
  let buf = ''
  for await (const chunk of stream) {
    buf += decoder.decode(chunk, { stream: true })
    let nl: number
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      try { lines.push(JSON.parse(line) as Record<string, unknown>) } catch { lines.push({ raw: line }) }
    }
    onChunk()
  }
  onChunk()
}
