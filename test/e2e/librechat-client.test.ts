import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { before, describe } from 'node:test'
import { availableDrivers, exec, it, startServer, suiteContext, type RunningServer } from '../helpers/server.ts'
import {
  USER_ID, bashTool, codeTool, downloadAsLibreChat, fetchSessionFiles, injectedFromUpload, invoke, probeAsLibreChat,
  toInjectedFileRef, uploadAsLibreChat, type ArtifactFile, type CodeEnvRef, type ToolResult,
} from '../helpers/librechat.ts'

/**
 * Warden driven by the real LibreChat client (spec §13): the agents SDK's `execute_code` and `bash_tool`
 * invoked as ToolNode invokes them, and LibreChat's own upload, probe and download requests, on every
 * installed jail driver. One server per driver, with short limits so the timeout and memory tests are fast.
 */

const ID = /^[A-Za-z0-9_-]{21}$/
const EXEC_TIMEOUT_MS = 3000
const MEMORY_LIMIT_MB = 256
const TIME_LIMIT_SENTENCE = 'Execution exceeded the time limit of 3 s and was stopped.'
const MEMORY_LIMIT_SENTENCE = `Execution exceeded the memory limit of ${MEMORY_LIMIT_MB} MiB and was stopped.`
const FILE_SUMMARY = /\n\nGenerated files:\nSession files: (\d+) persisted file\(s\) are available in \/mnt\/data, including (\d+) image\(s\)\./

/** The `stdout:` section of a tool's content, when there is nothing after it. */
function onlyStdout (content: string): string {
  assert.ok(content.startsWith('stdout:\n'), `no stdout section in:\n${content}`)
  assert.ok(!content.includes('\nstderr:\n') && !content.includes('\n\nGenerated files:'), `more than stdout in:\n${content}`)
  return content.slice('stdout:\n'.length)
}

/** The `stderr:` section of a tool's content (the SDK writes `stdout:\n…\n` then `stderr:\n…\n`). */
function stderrSection (content: string): string {
  const start = content.indexOf('stderr:\n')
  assert.ok(start >= 0, `no stderr section in:\n${content}`)
  const rest = content.slice(start + 'stderr:\n'.length)
  const summary = rest.indexOf('\n\nGenerated files:')
  return summary >= 0 ? rest.slice(0, summary) : rest
}

/** The one generated file named `name` in an artifact (inherited echoes of inputs do not count). */
function generatedFile (result: ToolResult, name: string): ArtifactFile {
  const matches = (result.artifact.files ?? []).filter((file) => file.name === name && file.inherited !== true)
  assert.equal(matches.length, 1, `expected one generated ${name}, artifact: ${JSON.stringify(result.artifact)}`)
  return matches[0] as ArtifactFile
}

function generatedFiles (result: ToolResult): ArtifactFile[] {
  return (result.artifact.files ?? []).filter((file) => file.inherited !== true)
}

/** Download a generated file the way LibreChat does: from `storage_session_id ?? artifact.session_id`. */
async function downloadGenerated (server: RunningServer, result: ToolResult, file: ArtifactFile): Promise<Buffer> {
  const downloaded = await downloadAsLibreChat(server, file.storage_session_id ?? result.artifact.session_id, file.id)
  assert.equal(downloaded.status, 200, `download of ${file.name} answered ${downloaded.status}`)
  return downloaded.bytes
}

async function downloadUpload (server: RunningServer, ref: CodeEnvRef): Promise<Buffer> {
  const downloaded = await downloadAsLibreChat(server, ref.storage_session_id, ref.file_id, ref)
  assert.equal(downloaded.status, 200, `download of ${ref.filename} answered ${downloaded.status}`)
  return downloaded.bytes
}

interface PngHeader { width: number, height: number }

/** Check the PNG signature, the IHDR chunk that must come first and the IEND chunk that must end it. */
function readPngHeader (bytes: Buffer): PngHeader {
  assert.ok(bytes.length > 8 + 25 + 12, `a PNG of ${bytes.length} bytes is too short`)
  assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature')
  assert.equal(bytes.readUInt32BE(8), 13, 'IHDR length')
  assert.equal(bytes.toString('latin1', 12, 16), 'IHDR', 'first chunk')
  assert.equal(bytes.toString('latin1', bytes.length - 8, bytes.length - 4), 'IEND', 'last chunk')
  return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) }
}

const SALES_CSV = [
  'region,units,price',
  'north,10,2.5',
  'south,4,10',
  'north,6,2.5',
  'west,1,99.99',
].join('\n') + '\n'

for (const driver of availableDrivers()) {
  describe(`the LibreChat client against Warden on ${driver}`, () => {
    let server: RunningServer
    const t = suiteContext()
    before(async () => {
      server = await startServer(t, {
        driver,
        env: { EXEC_TIMEOUT_MS: String(EXEC_TIMEOUT_MS), MEMORY_LIMIT_MB: String(MEMORY_LIMIT_MB) },
      })
    })

    const runPython = async (code: string, extra: Record<string, unknown> = {}, args?: string[]) =>
      await invoke(codeTool(server), { lang: 'py', code, ...(args === undefined ? {} : { args }) }, extra)
    const runBash = async (command: string, extra: Record<string, unknown> = {}, args?: string[]) =>
      await invoke(bashTool(server), { command, ...(args === undefined ? {} : { args }) }, extra)
    const uploadText = async (filename: string, text: string, contentType = 'text/plain') =>
      await uploadAsLibreChat(server, { kind: 'user', id: USER_ID, filename, bytes: text, contentType, userId: USER_ID })

    describe('output', () => {
      it('execute_code print(): the tool content is exactly the stdout and artifact.session_id is a 21-char id', async () => {
        const result = await runPython('print("hello from warden")')
        assert.equal(result.content, 'stdout:\nhello from warden')
        assert.match(result.artifact.session_id, ID)
        assert.equal(result.artifact.files, undefined, 'a run that writes nothing lists no files')
      })

      it('bash_tool echo: the tool content is exactly the stdout and artifact.session_id is a 21-char id', async () => {
        const result = await runBash('echo "hello from bash"')
        assert.equal(result.content, 'stdout:\nhello from bash')
        assert.match(result.artifact.session_id, ID)
      })

      it('every call gets a new execution session id', async () => {
        const first = await runPython('print(1)')
        const second = await runPython('print(1)')
        assert.notEqual(first.artifact.session_id, second.artifact.session_id)
      })
    })

    describe('arguments', () => {
      const args = ['alpha', 'two words', '--flag=x', '$HOME']

      it('execute_code args reach Python as sys.argv[1:] unchanged, after "-c"', async () => {
        const result = await runPython('import sys, json\nprint(json.dumps(sys.argv))', {}, args)
        assert.deepEqual(JSON.parse(onlyStdout(result.content)), ['-c', ...args])
      })

      it('bash_tool args reach bash as "$1".."$N" unchanged (no word splitting or expansion)', async () => {
        const result = await runBash('printf "[%s]" "$@"; echo " $#"', {}, args)
        assert.equal(result.content, `stdout:\n${args.map((arg) => `[${arg}]`).join('')} ${args.length}`)
      })
    })

    describe('files', () => {
      it('a CSV uploaded LibreChat-style and injected as ToolNode does is read by pandas with the right values', async () => {
        const csv = await uploadAsLibreChat(server, { kind: 'user', id: USER_ID, filename: 'sales.csv', bytes: SALES_CSV, contentType: 'text/csv', userId: USER_ID })
        assert.match(csv.storage_session_id, ID)
        assert.match(csv.file_id, ID)
        assert.equal(csv.filename, 'sales.csv')
        const result = await runPython([
          'import json, pandas as pd',
          "df = pd.read_csv('/mnt/data/sales.csv')",
          "df['revenue'] = df['units'] * df['price']",
          "by_region = df.groupby('region')['revenue'].sum().round(2).to_dict()",
          "print(json.dumps({'rows': len(df), 'units': int(df['units'].sum()), 'by_region': by_region}, sort_keys=True))",
        ].join('\n'), { _injected_files: [injectedFromUpload(csv)] })
        assert.deepEqual(JSON.parse(onlyStdout(result.content)), { by_region: { north: 40, south: 40, west: 99.99 }, rows: 4, units: 21 })
        assert.deepEqual(generatedFiles(result), [], 'an input the code did not change is not reported as a generated file')
      })

      it('an upload with a nested name keeps its path: /mnt/data/in/data.csv', async () => {
        const ref = await uploadText('in/data.csv', 'a,b\n1,2\n', 'text/csv')
        assert.equal(ref.filename, 'in/data.csv')
        const result = await runBash('cat /mnt/data/in/data.csv', { _injected_files: [injectedFromUpload(ref)] })
        assert.equal(result.content, 'stdout:\na,b\n1,2')
      })

      it('a matplotlib PNG saved to /mnt/data/plots/fig.png is listed, counted as 1 image and downloads as a figsize*dpi PNG', async () => {
        const result = await runPython([
          'import os',
          'import matplotlib',
          "matplotlib.use('Agg')",
          'import matplotlib.pyplot as plt',
          "os.makedirs('/mnt/data/plots', exist_ok=True)",
          'fig, ax = plt.subplots(figsize=(4, 3), dpi=50)',
          'ax.plot([1, 2, 3], [1, 4, 9])',
          "fig.savefig('/mnt/data/plots/fig.png', dpi=50)",
          "print('saved')",
        ].join('\n'))
        const png = generatedFile(result, 'plots/fig.png')
        assert.match(png.id, ID)
        assert.equal(generatedFiles(result).length, 1, `only the figure is new: ${JSON.stringify(result.artifact.files)}`)
        assert.ok(result.content.startsWith('stdout:\nsaved\n'), result.content)
        const summary = FILE_SUMMARY.exec(result.content)
        assert.ok(summary !== null, `no file summary in:\n${result.content}`)
        assert.deepEqual([summary[1], summary[2]], ['1', '1'], 'one persisted file, one image')

        const downloaded = await downloadAsLibreChat(server, png.storage_session_id ?? result.artifact.session_id, png.id)
        assert.equal(downloaded.status, 200)
        assert.equal(downloaded.headers['content-type'], 'image/png')
        assert.equal(downloaded.headers['content-length'], String(downloaded.bytes.length))
        assert.match(downloaded.headers['content-disposition'] ?? '', /^attachment; filename="fig\.png"/)
        assert.deepEqual(readPngHeader(downloaded.bytes), { width: 4 * 50, height: 3 * 50 })
      })

      it('a modified input comes back with a new id and the same name; its download is the new bytes and the upload is unchanged', async () => {
        const notes = await uploadText('notes.txt', 'draft\n')
        const result = await runPython("with open('/mnt/data/notes.txt', 'a') as f:\n    f.write('edited\\n')\nprint('ok')",
          { _injected_files: [injectedFromUpload(notes)] })
        const edited = generatedFile(result, 'notes.txt')
        assert.notEqual(edited.id, notes.file_id, 'a modified input must get a new id (spec §5)')
        assert.match(edited.id, ID)
        assert.equal((await downloadGenerated(server, result, edited)).toString(), 'draft\nedited\n')
        assert.equal((await downloadUpload(server, notes)).toString(), 'draft\n')
        const probe = await probeAsLibreChat(server, notes)
        assert.equal(probe.status, 200)
        assert.equal(probe.info.size, 'draft\n'.length)
      })

      it('a file made in one call is read in the next when passed back as ToolNode does (resource_id ?? id, storage_session_id ?? session_id)', async () => {
        const first = await runPython("import json\njson.dump({'n': 41}, open('/mnt/data/state.json', 'w'))\nprint('written')")
        const state = generatedFile(first, 'state.json')
        const injected = (first.artifact.files ?? []).map((file) => toInjectedFileRef(file, first.artifact.session_id))
        assert.deepEqual(injected, [{
          id: state.id,
          resource_id: state.id,
          name: 'state.json',
          storage_session_id: state.storage_session_id ?? first.artifact.session_id,
          kind: 'user',
        }])
        const second = await runPython("import json\nprint(json.load(open('/mnt/data/state.json'))['n'] + 1)",
          { session_id: first.artifact.session_id, _injected_files: injected })
        assert.equal(second.content, 'stdout:\n42')
        const third = await runBash('cat state.json', { session_id: second.artifact.session_id, _injected_files: injected })
        assert.equal(third.content, 'stdout:\n{"n": 41}')
      })

      it('an injected input the code deletes is named in artifact.deleted_files', async () => {
        const doomed = await uploadText('doomed.txt', 'bye')
        const result = await runBash('rm doomed.txt && echo removed', { _injected_files: [injectedFromUpload(doomed)] })
        assert.equal(result.content, 'stdout:\nremoved')
        assert.deepEqual(result.artifact.deleted_files, ['doomed.txt'])
      })
    })

    describe('program failures are tool output, not tool errors', () => {
      it('a Python exception returns its traceback in the stderr section; earlier stdout is kept and files written are dropped', async () => {
        const result = await runPython([
          "print('before the error')",
          "open('/mnt/data/partial.txt', 'w').write('half')",
          'def compute():',
          "    raise ValueError('bad value 42')",
          'compute()',
        ].join('\n'))
        assert.ok(result.content.startsWith('stdout:\nbefore the error\n'), result.content)
        const stderr = stderrSection(result.content)
        assert.match(stderr, /Traceback \(most recent call last\):/)
        assert.match(stderr, /in compute\n/)
        assert.match(stderr, /ValueError: bad value 42/)
        assert.match(stderr, /1 file\(s\) written to \/mnt\/data were not kept/)
        assert.deepEqual(generatedFiles(result), [], 'a failed run registers no files')
      })

      it('bash `exit 3` shows stdout and stderr in the tool output; /exec reports status error, exit_code 3', async () => {
        const command = 'echo out; echo err >&2; exit 3'
        const result = await runBash(command)
        assert.ok(result.content.startsWith('stdout:\nout\n'), result.content)
        assert.equal(stderrSection(result.content).trim(), 'err')
        const direct = await exec(server, { lang: 'bash', code: command })
        assert.equal(direct.status, 200)
        assert.equal(direct.body.status, 'error')
        assert.equal(direct.body.exit_code, 3)
        assert.equal(direct.body.stdout, 'out\n')
      })

      it('a failing bash command shows its error message; /exec reports its exit code', async () => {
        const command = 'ls /mnt/data/no-such-dir'
        const result = await runBash(command)
        assert.ok(result.content.startsWith("stdout: Empty. Ensure you're writing output explicitly.\n"), result.content)
        assert.match(stderrSection(result.content), /no-such-dir.*No such file or directory/)
        const direct = await exec(server, { lang: 'bash', code: command })
        assert.equal(direct.body.status, 'error')
        assert.equal(direct.body.exit_code, 2)
      })

      it(`time.sleep(60) is stopped after EXEC_TIMEOUT_MS=${EXEC_TIMEOUT_MS}: the output says so, earlier stdout is kept, and it returns in seconds`, async () => {
        const started = performance.now()
        const result = await runPython("import time\nprint('started', flush=True)\ntime.sleep(60)")
        const elapsedMs = performance.now() - started
        assert.ok(result.content.startsWith('stdout:\nstarted\n'), result.content)
        assert.ok(stderrSection(result.content).includes(TIME_LIMIT_SENTENCE), result.content)
        assert.ok(elapsedMs >= EXEC_TIMEOUT_MS - 100, `returned after ${Math.round(elapsedMs)} ms, before the limit`)
        assert.ok(elapsedMs < 15_000, `returned after ${Math.round(elapsedMs)} ms`)
      })

      it(`a memory bomb is stopped at MEMORY_LIMIT_MB=${MEMORY_LIMIT_MB}: the output says so, and the next execution works`, async () => {
        const result = await runPython("chunks = []\nwhile True:\n    chunks.append(b'x' * 10_000_000)")
        assert.ok(stderrSection(result.content).includes(MEMORY_LIMIT_SENTENCE), result.content)
        const next = await runPython('print(6 * 7)')
        assert.equal(next.content, 'stdout:\n42')
      })
    })

    describe('network', () => {
      it('Python cannot open a socket to 1.1.1.1:53 or fetch an http URL', async () => {
        const result = await runPython([
          'import socket, urllib.request',
          'try:',
          "    socket.create_connection(('1.1.1.1', 53), timeout=3)",
          "    print('socket: CONNECTED')",
          'except OSError as error:',
          "    print('socket: blocked', type(error).__name__)",
          'try:',
          "    urllib.request.urlopen('http://example.com/', timeout=3)",
          "    print('urllib: CONNECTED')",
          'except Exception as error:',
          "    print('urllib: blocked', type(error).__name__)",
        ].join('\n'))
        assert.match(result.content, /^stdout:\nsocket: blocked \w+\nurllib: blocked \w+/)
        assert.doesNotMatch(result.content, /CONNECTED/)
      })

      it('bash cannot resolve example.com or reach 1.1.1.1 with curl', async () => {
        const result = await runBash([
          'getent hosts example.com && echo "getent: RESOLVED" || echo "getent: failed"',
          'if command -v curl >/dev/null; then',
          '  curl -sS -m 3 -o /dev/null http://example.com/ && echo "curl name: CONNECTED" || echo "curl name: failed"',
          '  curl -sS -m 3 -o /dev/null http://1.1.1.1/ && echo "curl ip: CONNECTED" || echo "curl ip: failed"',
          'fi',
        ].join('\n'))
        assert.match(result.content, /getent: failed/)
        assert.doesNotMatch(result.content, /CONNECTED|RESOLVED/)
      })
    })

    describe('legacy shapes', () => {
      it('an input ref with the legacy session_id instead of storage_session_id is mounted', async () => {
        const ref = await uploadText('legacy.txt', 'old client')
        const result = await runBash('cat legacy.txt', {
          _injected_files: [{ id: ref.file_id, session_id: ref.storage_session_id, name: 'legacy.txt' }],
        })
        assert.equal(result.content, 'stdout:\nold client')
      })

      it('fetchSessionFiles (GET /files/:sid?detail=full) returns the upload with its original name, usable as an input', async () => {
        const ref = await uploadText('in/report.csv', 'x\n7\n', 'text/csv')
        const files = await fetchSessionFiles(server.apiUrl, ref.storage_session_id, { kind: 'user', id: USER_ID }, { 'X-API-Key': server.apiKey })
        assert.deepEqual(files, [{
          storage_session_id: ref.storage_session_id,
          kind: 'user',
          id: ref.file_id,
          resource_id: USER_ID,
          name: 'in/report.csv',
        }])
        const result = await runBash('tail -n 1 in/report.csv', { _injected_files: files })
        assert.equal(result.content, 'stdout:\n7')
      })
    })

    describe('concurrent users', () => {
      it('four users running at once each read back only their own file of the same name', async () => {
        const users = ['0000000000000000000000a1', '0000000000000000000000b2', '0000000000000000000000c3', '0000000000000000000000d4']
        await Promise.all(users.map(async (user) => {
          for (let round = 0; round < 3; round++) {
            const tool = codeTool(server, user)
            const written = await invoke(tool, { lang: 'py', code: `open('/mnt/data/mine.txt', 'w').write('${user}:${round}')\nprint('ok')` })
            const file = generatedFile(written, 'mine.txt')
            const read = await invoke(tool, { lang: 'py', code: "print(open('/mnt/data/mine.txt').read())" },
              { _injected_files: [toInjectedFileRef(file, written.artifact.session_id)] })
            assert.equal(read.content, `stdout:\n${user}:${round}`)
          }
        }))
      })
    })

    // last: it restarts the shared server
    describe('restart', () => {
      it('an upload survives a server restart: the probe answers 200 with lastModified, the download is byte-identical, /exec reads it', async () => {
        const bytes = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 31 + 7) % 256))
        const ref = await uploadAsLibreChat(server, { kind: 'user', id: USER_ID, filename: 'blob.bin', bytes, contentType: 'application/octet-stream', userId: USER_ID })
        await server.restart()
        const probe = await probeAsLibreChat(server, ref)
        assert.equal(probe.status, 200)
        assert.equal(probe.info.originalFilename, 'blob.bin')
        assert.ok(typeof probe.info.lastModified === 'string' && !Number.isNaN(Date.parse(probe.info.lastModified)),
          `lastModified: ${probe.info.lastModified}`)
        assert.ok(Date.now() - Date.parse(probe.info.lastModified) < 23 * 3_600_000, 'LibreChat reuses only files younger than 23 h')
        assert.deepEqual(await downloadUpload(server, ref), bytes)
        const result = await runPython("import hashlib\nprint(hashlib.sha256(open('/mnt/data/blob.bin', 'rb').read()).hexdigest())",
          { _injected_files: [injectedFromUpload(ref)] })
        assert.equal(result.content, `stdout:\n${createHash('sha256').update(bytes).digest('hex')}`)
      })
    })
  })
}
