import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { checkLanguages } from '../../src/exec/languages/index.ts'
import { newId } from '../../src/storage/ids.ts'
import { authed, inProcessApp, type InProcessApp } from '../helpers/app.ts'

/** Upload, download, probe, list and delete in process: each route's answers and error cases. */

type Json = Record<string, any>

function multipart (parts: Array<{ name: string, value?: string, filename?: string, content?: string }>) {
  const boundary = '----warden' + Math.random().toString(16).slice(2)
  const body = parts.map((part) => part.filename === undefined
    ? `--${boundary}\r\nContent-Disposition: form-data; name="${part.name}"\r\n\r\n${part.value ?? ''}\r\n`
    : `--${boundary}\r\nContent-Disposition: form-data; name="${part.name}"; filename="${part.filename}"\r\nContent-Type: text/plain\r\n\r\n${part.content ?? ''}\r\n`).join('') + `--${boundary}--\r\n`
  return { payload: body, headers: authed({ 'content-type': `multipart/form-data; boundary=${boundary}` }) }
}

describe('file routes in process', () => {
  let harness: InProcessApp
  before(async () => { harness = await inProcessApp({ env: { MAX_UPLOAD_MB: '1' } }) })
  after(async () => { await harness.close() })

  async function upload (parts: Parameters<typeof multipart>[0]) {
    const response = await harness.app.inject({ method: 'POST', url: '/v1/upload', ...multipart(parts) })
    return { status: response.statusCode, body: response.json() as Json }
  }

  async function get (url: string, headers: Record<string, string> = authed()) {
    const response = await harness.app.inject({ method: 'GET', url, headers })
    return { status: response.statusCode, body: response.body, json: () => response.json() as Json, headers: response.headers }
  }

  test('an upload answers success with both session id fields and the file\'s id', async () => {
    const answer = await upload([{ name: 'kind', value: 'user' }, { name: 'id', value: 'alice' }, { name: 'file', filename: 'data/a.csv', content: 'a,b\n1,2\n' }])
    assert.equal(answer.status, 200, JSON.stringify(answer.body))
    assert.equal(answer.body.message, 'success')
    assert.equal(answer.body.storage_session_id, answer.body.session_id)
    assert.deepEqual(answer.body.files.map((file: Json) => file.filename), ['data/a.csv'])
  })

  test('upload errors: not multipart 415, no file 400, unknown kind 400, bad version 400, bad name 400, over the limit 413', async () => {
    const json = await harness.app.inject({ method: 'POST', url: '/upload', headers: authed({ 'content-type': 'application/json' }), payload: '{}' })
    assert.equal(json.statusCode, 415)
    assert.equal((await upload([{ name: 'kind', value: 'user' }])).body.error, 'invalid_request')
    assert.equal((await upload([{ name: 'kind', value: 'robot' }, { name: 'file', filename: 'a.txt' }])).body.error, 'invalid_request')
    assert.equal((await upload([{ name: 'kind', value: 'skill' }, { name: 'version', value: '-1' }, { name: 'file', filename: 'a.txt' }])).body.error, 'invalid_request')
    const badName = await upload([{ name: 'file', filename: '../escape.txt', content: 'x' }])
    assert.equal(badName.status, 400)
    assert.equal(badName.body.error, 'invalid_file_name')
    const tooBig = await upload([{ name: 'file', filename: 'big.bin', content: 'x'.repeat((1 << 20) + 1) }])
    assert.equal(tooBig.status, 413)
    assert.equal(tooBig.body.error, 'payload_too_large')
    assert.match(tooBig.body.message, /1 MiB/)
    assert.equal((await upload([{ name: 'attachment', filename: 'a.txt', content: 'x' }])).status, 400)
    assert.equal(harness.store.files.size, 1, 'no refused upload left a file behind')
  })

  test('download, probe, listing and delete: 200 for the owner, 404 for another user, unknown ids and ids that cannot exist', async () => {
    const up = await upload([{ name: 'kind', value: 'user' }, { name: 'id', value: 'alice' }, { name: 'file', filename: 'n.txt', content: 'hello' }])
    const sid = up.body.storage_session_id as string
    const fid = up.body.files[0].fileId as string
    const mine = await get(`/download/${sid}/${fid}?kind=user&id=alice`)
    assert.equal(mine.status, 200)
    assert.equal(mine.body, 'hello')
    assert.match(String(mine.headers['content-disposition']), /filename="n.txt"/)
    assert.equal((await get(`/download/${sid}/${fid}?kind=user&id=bob`)).status, 404)
    assert.equal((await get(`/download/${sid}/${newId()}`)).status, 404)
    assert.equal((await get(`/download/${sid}/not-an-id`)).status, 404, 'an id that cannot exist is not found, like an unknown one')
    const probe = await get(`/sessions/${sid}/objects/${fid}?kind=user&id=alice`)
    assert.equal(probe.status, 200)
    assert.equal(probe.json().originalFilename, 'n.txt')
    assert.equal((await get(`/sessions/${sid}/objects/${fid}?kind=user&id=bob`)).status, 404)
    assert.deepEqual((await get(`/files/${newId()}?detail=summary`)).json(), [])
    assert.equal((await get(`/files/${sid}?detail=full&kind=user&id=alice`)).json().length, 1)
    assert.deepEqual((await get(`/files/${sid}?detail=full&kind=user&id=bob`)).json(), [])
    assert.deepEqual((await get('/files/bad')).json(), [])
    const otherDelete = await harness.app.inject({ method: 'DELETE', url: `/files/${sid}/${fid}?kind=user&id=bob`, headers: authed() })
    assert.equal(otherDelete.statusCode, 404)
    const ownDelete = await harness.app.inject({ method: 'DELETE', url: `/files/${sid}/${fid}?kind=user&id=alice`, headers: authed() })
    assert.equal(ownDelete.statusCode, 200)
    assert.equal((await get(`/download/${sid}/${fid}?kind=user&id=alice`)).status, 404)
  })

  test('every file route needs the key: 401 without it', async () => {
    for (const url of [`/download/${newId()}/${newId()}`, `/sessions/${newId()}/objects/${newId()}`, `/files/${newId()}`]) {
      const answer = await get(url, {})
      assert.equal(answer.status, 401, url)
      assert.equal(answer.json().error, 'unauthorized')
    }
  })
})

describe('health, readiness, metrics and unknown routes in process', () => {
  let harness: InProcessApp
  before(async () => { harness = await inProcessApp({ env: { METRICS_TOKEN: 'm-token' } }) })
  after(async () => { await harness.close() })

  test('/health/ready is 503 starting before the self-test passed, 200 ready after, 503 draining during a shutdown', async () => {
    harness.state.ready = false
    let ready = await harness.app.inject({ method: 'GET', url: '/health/ready' })
    assert.equal(ready.statusCode, 503)
    assert.deepEqual(ready.json(), { status: 'starting' })
    const health = await harness.app.inject({ method: 'GET', url: '/health' })
    assert.equal(health.statusCode, 200, '/health itself answers while starting, with the detail')
    assert.equal(health.json().status, 'starting')
    harness.state.ready = true
    ready = await harness.app.inject({ method: 'GET', url: '/v1/health/ready' })
    assert.equal(ready.statusCode, 200)
    harness.state.draining = true
    ready = await harness.app.inject({ method: 'GET', url: '/health/ready' })
    assert.deepEqual([ready.statusCode, ready.json()], [503, { status: 'draining' }])
    const live = await harness.app.inject({ method: 'GET', url: '/health/live' })
    assert.deepEqual([live.statusCode, live.json()], [200, { status: 'alive' }])
    harness.state.draining = false
  })

  test('/health lists the languages this host runs', async () => {
    const report = (await harness.app.inject({ method: 'GET', url: '/health' })).json() as Json
    const installed = checkLanguages().available.map((language) => language.id).sort()
    assert.deepEqual(report.languages.available.map((language: Json) => language.id).sort(), installed)
    assert.ok(installed.includes('python') && installed.includes('bash'))
  })

  test('/metrics needs its token when one is set', async () => {
    assert.equal((await harness.app.inject({ method: 'GET', url: '/metrics' })).statusCode, 401)
    const scraped = await harness.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: 'Bearer m-token' } })
    assert.equal(scraped.statusCode, 200)
    assert.match(scraped.body, /warden_executions_total|warden_pool_workers/)
  })

  test('an unknown route answers 404 not_found in the error shape', async () => {
    const answer = await harness.app.inject({ method: 'GET', url: '/nope', headers: authed() })
    assert.equal(answer.statusCode, 404)
    assert.equal(answer.json().error, 'not_found')
  })
})
