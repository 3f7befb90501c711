import assert from 'node:assert/strict'
import { before, describe } from 'node:test'
import { api, availableDrivers, exec, it, startServer, suiteContext, uploadFile, type RunningServer } from '../helpers/server.ts'
import { invoke, statefulTools, uploadAsLibreChat } from '../helpers/librechat.ts'

/**
 * Sessions that persist: LibreChat's stateful profile through the real client (a runtime session whose
 * /mnt/data persists between calls, each call a fresh process), and execution ids named again as working
 * directories over plain HTTP.
 */

const ALICE = '6650c0ffee0123456789aaaa'
const BOB = '6650c0ffee0123456789bbbb'
const HINT = 'v2:user:0123456789abcdef0123456789abcdef'

for (const driver of availableDrivers()) {
  describe(`sessions that persist (${driver})`, () => {
    let server: RunningServer
    const suite = suiteContext()
    before(async () => { server = await startServer(suite, { driver, env: { SESSION_MAX_FILES: '3' } }) })

    it('stateful profile: new then reused; a file of call 1 is read in call 2; variables and background processes are gone; a restart keeps the workspace', async () => {
      const { code, bash } = statefulTools(server, ALICE, HINT)
      const first = await invoke(code, { lang: 'py', code: 'import subprocess\nopen("/mnt/data/notes.txt", "w").write("kept")\nsecret = 41\nsubprocess.Popen(["sleep", "300"])\nprint("written")' })
      assert.match(first.content, /written/)
      assert.equal(first.artifact.runtime_status, 'new')
      assert.match(first.artifact.runtime_session_id ?? '', /^[A-Za-z0-9_-]{21}$/)

      const second = await invoke(code, { lang: 'py', code: 'import os\nprint(open("/mnt/data/notes.txt").read(), "secret" in globals(), len([p for p in os.listdir("/proc") if p.isdigit()]))' })
      assert.match(second.content, /kept False 1/, 'the file is there; the variable and the background process are not')
      assert.equal(second.artifact.runtime_status, 'reused')
      assert.equal(second.artifact.runtime_session_id, first.artifact.runtime_session_id)

      const third = await invoke(bash, { command: 'ls /mnt/data; echo more >> /mnt/data/notes.txt; ls /tmp' })
      assert.match(third.content, /notes\.txt/)
      assert.equal(third.artifact.runtime_status, 'reused')

      await server.restart()
      const after = statefulTools(server, ALICE, HINT)
      const fourth = await invoke(after.code, { lang: 'py', code: 'print(open("/mnt/data/notes.txt").read().split())' })
      assert.match(fourth.content, /\['keptmore'\]/, 'the workspace survived the restart, with the bash call\'s change')
    })

    it('the same hint from another user sees nothing of the first user\'s workspace; another hint gets another workspace', async () => {
      const alice = statefulTools(server, ALICE, 'v2:user:shared-hint')
      const bob = statefulTools(server, BOB, 'v2:user:shared-hint')
      await invoke(alice.code, { lang: 'py', code: 'open("/mnt/data/alice.txt", "w").write("private")' })
      const seen = await invoke(bob.code, { lang: 'py', code: 'import os\nprint(sorted(os.listdir("/mnt/data")))' })
      assert.match(seen.content, /\[\]/)
      assert.equal(seen.artifact.runtime_status, 'new')
      const other = statefulTools(server, ALICE, 'v2:user:another-hint')
      assert.match((await invoke(other.code, { lang: 'py', code: 'import os\nprint(sorted(os.listdir("/mnt/data")))' })).content, /\[\]/)
    })

    it('injected files arrive on every call and replace a workspace file of the same name; outputs come back with new ids', async () => {
      const { code } = statefulTools(server, ALICE, 'v2:user:inputs')
      await invoke(code, { lang: 'py', code: 'open("/mnt/data/data.csv", "w").write("old")' })
      const ref = await uploadAsLibreChat(server, { kind: 'user', id: ALICE, filename: 'data.csv', bytes: 'new', userId: ALICE })
      const injected = [{ id: ref.file_id, resource_id: ALICE, name: 'data.csv', storage_session_id: ref.storage_session_id, kind: 'user' }]
      const result = await invoke(code, { lang: 'py', code: 'print(open("/mnt/data/data.csv").read())\nopen("/mnt/data/out.txt", "w").write("x")' }, { _injected_files: injected })
      assert.match(result.content, /new/)
      const out = result.artifact.files?.find((file) => file.name === 'out.txt')
      assert.ok(out !== undefined, JSON.stringify(result.artifact))
      assert.notEqual(out.id, ref.file_id)
    })

    it('working directory: naming an earlier execution\'s session_id brings its inputs and outputs back; another user naming it starts fresh', async () => {
      const upload = await uploadFile(server, 'in.txt', 'input bytes', 'wd-user')
      const first = await exec(server, { lang: 'py', code: 'open("out.txt", "w").write("from run 1")', user_id: 'wd-user', files: [{ id: upload.fileId, storage_session_id: upload.sessionId, name: 'in.txt' }] })
      assert.equal(first.status, 200)
      const sessionId = first.body.session_id as string
      const second = await exec(server, { lang: 'py', code: 'import os\nprint(sorted(os.listdir()))\nopen("more.txt", "w").write("run 2")', user_id: 'wd-user', session_id: sessionId })
      assert.equal(second.body.stdout, "['in.txt', 'out.txt']\n")
      assert.equal(second.body.session_id, sessionId, 'the session continues under its id')
      assert.deepEqual(second.body.files.map((file: { name: string, storage_session_id: string }) => [file.name, file.storage_session_id]), [['more.txt', sessionId]])
      const stranger = await exec(server, { lang: 'py', code: 'import os\nprint(sorted(os.listdir()))', user_id: 'someone-else', session_id: sessionId })
      assert.equal(stranger.body.stdout, '[]\n')
      assert.notEqual(stranger.body.session_id, sessionId, 'another user gets a new session, not the shared one')
      const unknown = await exec(server, { lang: 'py', code: 'print(1)', user_id: 'wd-user', session_id: 'A'.repeat(21) })
      assert.equal(unknown.status, 200)
      assert.notEqual(unknown.body.session_id, 'A'.repeat(21))
    })

    it('a continued session keeps at most SESSION_MAX_FILES files and says what it did not keep', async () => {
      const first = await exec(server, { lang: 'py', code: 'for i in range(2):\n    open(f"f{i}.txt", "w").write("x")', user_id: 'cap-user' })
      const second = await exec(server, { lang: 'py', code: 'for i in range(2, 5):\n    open(f"f{i}.txt", "w").write("x")', user_id: 'cap-user', session_id: first.body.session_id })
      assert.equal(second.body.files.length, 3, 'every output is returned')
      assert.match(second.body.stderr, /2 file\(s\) were not kept in this session: it holds at most 3 files/)
      const third = await exec(server, { lang: 'py', code: 'import os\nprint(len(os.listdir()))', user_id: 'cap-user', session_id: first.body.session_id })
      assert.equal(third.body.stdout, '3\n')
    })

    it('files[] entries carry url and type; a read-only input the code changed is echoed inherited, not a new output', async () => {
      const form = new FormData()
      form.append('kind', 'skill')
      form.append('id', 'skill-1')
      form.append('version', '2')
      form.append('read_only', 'true')
      form.append('file', new Blob(['# skill']), 'SKILL.md')
      form.append('file', new Blob(['x']), '../bad.md')
      const batch = await (await api(server, '/upload/batch', { method: 'POST', body: form })).json() as Record<string, any>
      assert.equal(batch.message, 'partial_success')
      assert.equal(batch.succeeded, 1)
      assert.equal(batch.failed, 1)
      assert.equal(batch.files[1].status, 'error')
      const skill = batch.files[0]
      const result = await exec(server, {
        lang: 'py',
        code: 'open("SKILL.md", "a").write("changed")\nopen("plot.png", "wb").write(b"png")',
        files: [{ id: skill.fileId, storage_session_id: batch.storage_session_id, name: 'SKILL.md', kind: 'skill', version: 2 }],
      })
      const byName = Object.fromEntries(result.body.files.map((file: Record<string, unknown>) => [file.name, file]))
      assert.deepEqual(byName['SKILL.md'], {
        id: skill.fileId,
        name: 'SKILL.md',
        storage_session_id: batch.storage_session_id,
        path: '/mnt/data/SKILL.md',
        url: `/api/files/code/download/${batch.storage_session_id}/${skill.fileId}`,
        type: 'text/markdown; charset=utf-8',
        inherited: true,
      })
      assert.equal(byName['plot.png'].type, 'image/png')
      assert.equal(byName['plot.png'].url, `/api/files/code/download/${result.body.session_id}/${byName['plot.png'].id}`)
      const listed = await (await api(server, `/files/${batch.storage_session_id}?detail=full`)).json() as Array<Record<string, any>>
      assert.deepEqual(listed[0]?.metadata, { 'content-type': 'text/markdown; charset=utf-8', 'original-filename': 'SKILL.md' })
    })

    it('upload/batch with every file failing answers 400; PROFILES=default refuses the stateful profile with 409', async () => {
      const form = new FormData()
      form.append('file', new Blob(['x']), '../one')
      form.append('file', new Blob(['y']), '../two')
      assert.equal((await api(server, '/upload/batch', { method: 'POST', body: form })).status, 400)
      const defaultOnly = await startServer(suite, { driver, env: { PROFILES: 'default' } })
      const refused = await api(defaultOnly, '/exec', { method: 'POST', headers: { 'content-type': 'application/json', 'x-codeapi-expected-profile': 'stateful' }, body: '{"lang":"py","code":"print(1)"}' })
      assert.equal(refused.status, 409)
      assert.equal((await refused.json() as Record<string, unknown>).error, 'execution_profile_mismatch')
    })
  })
}
