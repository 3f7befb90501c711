import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { before, describe } from 'node:test'
import { bearer, createSigningKey, mintToken, type SigningKey } from '../helpers/jwt.ts'
import { availableDrivers, it, startServer, suiteContext, type RunningServer } from '../helpers/server.ts'

/**
 * Who may use a stored file (README "Pointing LibreChat at Warden"): a `user` upload and an execution's
 * outputs belong to their user, `agent` and `skill` uploads to every user of the tenant, nothing crosses
 * tenants, and a request that names no user acts for its whole tenant. Checked for users named by a
 * LibreChat JWT (`sub`, `tenant_id`) and by the API key plus the hints LibreChat sends (`User-Id` on
 * uploads, `user_id` in /exec, `?kind=user&id=` on file routes), on every route that touches a file.
 */

const ID = /^[A-Za-z0-9_-]{21}$/

/** Someone calling Warden: the credentials, and the user LibreChat names in its hints (or none). */
interface Actor {
  label: string
  auth: () => Promise<Record<string, string>>
  /** sent as `User-Id` on uploads, `user_id` in /exec and `?kind=user&id=` on file routes; null: no hint */
  hint: string | null
}

/** A stored file and the bytes it must hold. */
interface Stored {
  label: string
  sid: string
  fid: string
  name: string
  content: string
}

function secret (label: string): string {
  return `${label}:${randomBytes(12).toString('hex')}\n`
}

/** The pieces of a secret that must not show up in an answer to someone else. */
function assertNothingOf (file: Stored, text: string): void {
  const token = file.content.trim().split(':')[1] as string
  assert.ok(!text.includes(token), `the answer reveals ${file.label}: ${text.slice(0, 500)}`)
}

function scope (actor: Actor): string {
  return actor.hint === null ? '' : `kind=user&id=${encodeURIComponent(actor.hint)}`
}

function withScope (route: string, actor: Actor, extra = ''): string {
  const query = [extra, scope(actor)].filter(Boolean).join('&')
  return query === '' ? route : `${route}?${query}`
}

function client (server: RunningServer) {
  const request = async (actor: Actor, route: string, init: RequestInit = {}) =>
    await fetch(`${server.apiUrl}${route}`, {
      ...init,
      headers: { 'user-agent': 'LibreChat/1.0', ...await actor.auth(), ...(init.headers as Record<string, string> | undefined) },
    })

  const json = async (response: Response) => await response.json() as Record<string, any>

  return {
    /** LibreChat's upload: fields `kind`, `id` (`version` for skills), then `file`; `User-Id` names the user. */
    async upload (actor: Actor, label: string, kind: 'user' | 'agent' | 'skill', resourceId: string): Promise<Stored> {
      const name = `${label.replace(/[^a-z0-9]+/gi, '-')}.txt`
      const content = secret(label)
      const form = new FormData()
      form.append('kind', kind)
      form.append('id', resourceId)
      if (kind === 'skill') form.append('version', '3')
      form.append('file', new Blob([content], { type: 'text/plain' }), name)
      const response = await request(actor, '/upload', { method: 'POST', body: form, headers: actor.hint === null ? {} : { 'User-Id': actor.hint } })
      const body = await json(response)
      assert.equal(response.status, 200, `upload of ${label}: ${JSON.stringify(body)}`)
      assert.match(body.storage_session_id, ID)
      return { label, sid: body.storage_session_id, fid: body.files[0].fileId, name, content }
    },

    async exec (actor: Actor, code: string, files: Stored[] = []) {
      const response = await request(actor, '/exec', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          lang: 'py',
          code,
          ...(actor.hint === null ? {} : { user_id: actor.hint }),
          ...(files.length === 0 ? {} : { files: files.map((file) => ({ id: file.fid, storage_session_id: file.sid, name: file.name, kind: 'user', resource_id: file.fid })) }),
        }),
      })
      return { status: response.status, body: await json(response) }
    },

    /** An execution that writes one output file; returns it as stored. */
    async output (actor: Actor, label: string): Promise<Stored> {
      const name = `${label.replace(/[^a-z0-9]+/gi, '-')}.txt`
      const content = secret(label)
      const { status, body } = await this.exec(actor, `open('/mnt/data/${name}', 'w').write(${JSON.stringify(content)})`)
      assert.equal(status, 200, `execution writing ${label}: ${JSON.stringify(body)}`)
      const file = (body.files as Array<{ id: string, name: string, storage_session_id: string }>).find((entry) => entry.name === name)
      assert.ok(file !== undefined, `no ${name} in ${JSON.stringify(body.files)}`)
      return { label, sid: file.storage_session_id, fid: file.id, name, content }
    },

    /** Mount files via `files[]` and print each one's content. */
    async mount (actor: Actor, files: Stored[]) {
      const code = `for name in ${JSON.stringify(files.map((file) => file.name))}:\n    print(open('/mnt/data/' + name).read(), end='')`
      return await this.exec(actor, code, files)
    },

    async download (actor: Actor, file: Stored, method: 'GET' | 'HEAD' = 'GET') {
      const response = await request(actor, withScope(`/download/${file.sid}/${file.fid}`, actor), { method })
      return { status: response.status, text: await response.text() }
    },

    async probe (actor: Actor, file: Stored) {
      const response = await request(actor, withScope(`/sessions/${file.sid}/objects/${file.fid}`, actor))
      return { status: response.status, body: await json(response) }
    },

    /** `GET /files/:sid?detail=full` (what the SDK's fetchSessionFiles asks for): the ids listed. */
    async list (actor: Actor, sid: string, detail: 'full' | 'simple' | 'summary' | 'normalized' = 'full') {
      const response = await request(actor, withScope(`/files/${sid}`, actor, `detail=${detail}`))
      const body = await response.json() as unknown
      return { status: response.status, body, ids: Array.isArray(body) ? body.map((entry: { id: string }) => entry.id) : [] }
    },

    async remove (actor: Actor, file: Stored, route: 'files' | 'sessions') {
      const path = route === 'files' ? `/files/${file.sid}/${file.fid}` : `/sessions/${file.sid}/objects/${file.fid}`
      const response = await request(actor, withScope(path, actor), { method: 'DELETE' })
      return { status: response.status, body: await json(response) }
    },
  }
}

type Client = ReturnType<typeof client>

/** Everything the owner may do with a file, checked as `actor`. */
async function assertUsable (api: Client, actor: Actor, file: Stored): Promise<void> {
  const downloaded = await api.download(actor, file)
  assert.equal(downloaded.status, 200, `${actor.label} downloading ${file.label}: ${downloaded.status} ${downloaded.text}`)
  assert.equal(downloaded.text, file.content)
  const probed = await api.probe(actor, file)
  assert.equal(probed.status, 200, `${actor.label} probing ${file.label}: ${JSON.stringify(probed.body)}`)
  assert.equal(probed.body.originalFilename, file.name)
  assert.equal(probed.body.size, Buffer.byteLength(file.content))
  const listed = await api.list(actor, file.sid)
  assert.equal(listed.status, 200)
  assert.ok(listed.ids.includes(file.fid), `${actor.label} listing ${file.label}'s session: ${JSON.stringify(listed.body)}`)
  const mounted = await api.mount(actor, [file])
  assert.equal(mounted.status, 200, `${actor.label} mounting ${file.label}: ${JSON.stringify(mounted.body)}`)
  assert.equal(mounted.body.stdout, file.content)
}

async function assertNotFound (response: { status: number, body: Record<string, any> }, what: string, file: Stored): Promise<void> {
  assert.equal(response.status, 404, `${what}: ${response.status} ${JSON.stringify(response.body)}`)
  assert.equal(response.body.error, 'file_not_found', `${what}: ${JSON.stringify(response.body)}`)
  assertNothingOf(file, JSON.stringify(response.body))
}

/** Nothing another user or tenant may do with a file: every route answers as if it did not exist. */
async function assertHidden (api: Client, actor: Actor, file: Stored, owner: Actor): Promise<void> {
  const what = (action: string) => `${actor.label} ${action} ${file.label}`
  const downloaded = await api.download(actor, file)
  assert.equal(downloaded.status, 404, `${what('downloading')}: ${downloaded.status}`)
  await assertNotFound({ status: downloaded.status, body: JSON.parse(downloaded.text) }, what('downloading'), file)
  assert.equal((await api.download(actor, file, 'HEAD')).status, 404, what('HEAD-requesting'))
  await assertNotFound(await api.probe(actor, file), what('probing'), file)

  const listed = await api.list(actor, file.sid)
  assert.equal(listed.status, 200, what('listing the session of'))
  assert.ok(!listed.ids.includes(file.fid), `${what('listing the session of')}: ${JSON.stringify(listed.body)}`)
  assertNothingOf(file, JSON.stringify(listed.body))
  for (const detail of ['simple', 'summary', 'normalized'] as const) {
    const other = await api.list(actor, file.sid, detail)
    assert.equal(other.status, 200)
    assert.ok(!JSON.stringify(other.body).includes(file.fid), `${what(`listing (detail=${detail}) the session of`)}: ${JSON.stringify(other.body)}`)
  }

  const mounted = await api.mount(actor, [file])
  await assertNotFound(mounted, what('mounting'), file)
  assert.equal(mounted.body.stdout, undefined, `${what('mounting')} ran code: ${JSON.stringify(mounted.body)}`)

  await assertNotFound(await api.remove(actor, file, 'files'), what('deleting (DELETE /files/:sid/:fid)'), file)
  await assertNotFound(await api.remove(actor, file, 'sessions'), what('deleting (DELETE /sessions/:sid/objects/:fid)'), file)
  const still = await api.download(owner, file)
  assert.equal(still.status, 200, `${file.label} is gone after ${actor.label} tried to delete it`)
  assert.equal(still.text, file.content)
}

for (const driver of availableDrivers()) {
  describe(`file ownership on ${driver}`, () => {
    let server: RunningServer
    let api: Client
    let key: SigningKey
    const t = suiteContext()
    before(async () => {
      key = await createSigningKey('EdDSA')
      server = await startServer(t, { driver, env: { AUTH: 'api-key,jwt', JWT_PUBLIC_KEYS: key.publicPem } })
      api = client(server)
    })

    /** A LibreChat JWT user, who also sends the hints LibreChat sends (the token must win over them). */
    const jwtUser = (label: string, user: string, tenant: string, hint: string | null = user): Actor =>
      ({ label, hint, auth: async () => bearer(await mintToken(key, { userId: user, tenantId: tenant })) })
    const keyUser = (label: string, user: string | null): Actor =>
      ({ label, hint: user, auth: async () => ({ 'X-API-Key': server.apiKey }) })

    const modes = [
      {
        name: 'LibreChat JWT (sub alice and bob, tenant_id acme)',
        alice: () => jwtUser('alice (JWT)', 'alice', 'acme'),
        bob: () => jwtUser('bob (JWT)', 'bob', 'acme'),
      },
      {
        name: 'API key with User-Id / user_id / ?kind=user&id= naming alice and bob',
        alice: () => keyUser('alice (API key)', 'alice'),
        bob: () => keyUser('bob (API key)', 'bob'),
      },
    ]

    for (const mode of modes) {
      describe(mode.name, () => {
        let alice: Actor
        let bob: Actor
        const files: Record<string, Stored> = {}
        before(async () => {
          alice = mode.alice()
          bob = mode.bob()
          files.aliceUpload = await api.upload(alice, 'alice upload', 'user', 'alice')
          files.aliceOutput = await api.output(alice, 'alice output')
          files.bobUpload = await api.upload(bob, 'bob upload', 'user', 'bob')
          files.bobOutput = await api.output(bob, 'bob output')
        })
        const owned = (who: 'alice' | 'bob') => [files[`${who}Upload`], files[`${who}Output`]] as Stored[]

        it('each user downloads, probes, lists and mounts their own upload and output', async () => {
          for (const file of owned('alice')) await assertUsable(api, alice, file)
          for (const file of owned('bob')) await assertUsable(api, bob, file)
        })

        it('a user mounts their own upload and output together in one execution', async () => {
          const { status, body } = await api.mount(alice, owned('alice'))
          assert.equal(status, 200, JSON.stringify(body))
          assert.equal(body.stdout, owned('alice').map((file) => file.content).join(''))
        })

        for (const [owner, other] of [['alice', 'bob'], ['bob', 'alice']] as const) {
          it(`${other} gets 404 for ${owner}'s upload and output on download, probe, files[] and delete, and no listing shows them`, async () => {
            const actors = { alice, bob }
            for (const file of owned(owner)) await assertHidden(api, actors[other], file, actors[owner])
          })
        }

        it('an execution naming one of its own files and one of another user\'s is refused with 404 and runs nothing', async () => {
          const result = await api.exec(bob, 'print("ran")', [files.bobUpload as Stored, files.aliceUpload as Stored])
          await assertNotFound(result, 'bob mounting his and alice\'s upload', files.aliceUpload as Stored)
          assert.equal(result.body.stdout, undefined)
        })

        it('the owner deletes their upload (DELETE /files) and output (DELETE /sessions/…/objects): 200, then 404', async () => {
          const upload = await api.upload(alice, 'alice deletable upload', 'user', 'alice')
          const output = await api.output(alice, 'alice deletable output')
          const deleted = [await api.remove(alice, upload, 'files'), await api.remove(alice, output, 'sessions')]
          assert.deepEqual(deleted.map((response) => response.status), [200, 200], JSON.stringify(deleted))
          assert.equal(deleted[0]?.body.message, 'success')
          for (const file of [upload, output]) {
            assert.equal((await api.download(alice, file)).status, 404, `${file.label} still downloads after its delete`)
            assert.equal((await api.remove(alice, file, 'files')).status, 404)
          }
        })
      })
    }

    describe('agent and skill files, and tenants (JWT: alice and bob in acme, carol in globex)', () => {
      let alice: Actor
      let bob: Actor
      let carol: Actor
      const files: Record<string, Stored> = {}
      before(async () => {
        alice = jwtUser('alice (acme)', 'alice', 'acme')
        bob = jwtUser('bob (acme)', 'bob', 'acme')
        carol = jwtUser('carol (globex)', 'carol', 'globex')
        files.agent = await api.upload(alice, 'acme agent file', 'agent', 'agent_acme_1')
        files.skill = await api.upload(alice, 'acme skill file', 'skill', 'skill_acme_1')
        files.aliceUpload = await api.upload(alice, 'alice upload', 'user', 'alice')
        files.aliceOutput = await api.output(alice, 'alice output')
      })

      it('kind=agent and kind=skill uploads are usable by their uploader and by another user of the tenant', async () => {
        for (const actor of [alice, bob]) {
          await assertUsable(api, actor, files.agent as Stored)
          await assertUsable(api, actor, files.skill as Stored)
        }
      })

      it('a user of another tenant gets 404 for the tenant\'s agent and skill files everywhere', async () => {
        await assertHidden(api, carol, files.agent as Stored, alice)
        await assertHidden(api, carol, files.skill as Stored, alice)
      })

      it('a user of another tenant with the same sub gets 404 for alice\'s upload and output', async () => {
        const otherAlice = jwtUser('alice (globex)', 'alice', 'globex')
        await assertHidden(api, otherAlice, files.aliceUpload as Stored, alice)
        await assertHidden(api, otherAlice, files.aliceOutput as Stored, alice)
        await assertHidden(api, carol, files.aliceUpload as Stored, alice)
      })

      it('a JWT user cannot claim another user with User-Id, user_id or ?kind=user&id=: the token\'s sub wins', async () => {
        const bobClaimingAlice = jwtUser('bob (acme) naming alice in every hint', 'bob', 'acme', 'alice')
        await assertHidden(api, bobClaimingAlice, files.aliceUpload as Stored, alice)
        await assertHidden(api, bobClaimingAlice, files.aliceOutput as Stored, alice)
      })

      it('a user\'s upload of kind=user with another user in the `id` field still belongs to the uploader', async () => {
        const upload = await api.upload(bob, 'bob upload naming alice', 'user', 'alice')
        await assertUsable(api, bob, upload)
        await assertHidden(api, alice, upload, bob)
      })
    })

    describe('an API-key request naming no user (older LibreChat) acts for its whole tenant', () => {
      let alice: Actor
      let bob: Actor
      let service: Actor
      const files: Record<string, Stored> = {}
      before(async () => {
        alice = keyUser('alice (API key)', 'alice')
        bob = keyUser('bob (API key)', 'bob')
        service = keyUser('the API key naming no user', null)
        files.aliceUpload = await api.upload(alice, 'alice upload', 'user', 'alice')
        files.bobOutput = await api.output(bob, 'bob output')
        files.agent = await api.upload(alice, 'legacy agent file', 'agent', 'agent_legacy_1')
        files.acmeUpload = await api.upload(jwtUser('alice (acme)', 'alice', 'acme'), 'acme alice upload', 'user', 'alice')
      })

      it('it downloads, probes, lists and mounts every user\'s files of its tenant', async () => {
        for (const file of [files.aliceUpload, files.bobOutput, files.agent] as Stored[]) await assertUsable(api, service, file)
      })

      it('its outputs are usable by every user of the tenant', async () => {
        const output = await api.output(service, 'service output')
        await assertUsable(api, alice, output)
        await assertUsable(api, bob, output)
      })

      it('it gets 404 for files of another tenant (a JWT user of acme)', async () => {
        await assertHidden(api, service, files.acmeUpload as Stored, jwtUser('alice (acme)', 'alice', 'acme'))
      })
    })
  })
}
