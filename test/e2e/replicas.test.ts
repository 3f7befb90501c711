import assert from 'node:assert/strict'
import { before, describe } from 'node:test'
import { startRedis, type RunningRedis } from '../helpers/redis.ts'
import { startS3, s3Env, type RunningS3 } from '../helpers/s3.ts'
import { invoke, statefulTools } from '../helpers/librechat.ts'
import { api, availableDrivers, exec, it, startServer, suiteContext, uploadFile, type RunningServer } from '../helpers/server.ts'

/**
 * Two replicas sharing one Redis (REDIS_URL) and one bucket (STORAGE=s3), each a real server: what one
 * stored or counted, the other sees. Requests go to a chosen replica here; the round-robin cluster test
 * drives them through a proxy.
 */

const ALICE = '6650c0ffee0123456789aaaa'
const HINT = 'v2:user:0123456789abcdef0123456789abcdef'

for (const driver of availableDrivers()) {
  describe(`two replicas on Redis and S3 (${driver})`, () => {
    const suite = suiteContext()
    let redis: RunningRedis
    let s3: RunningS3
    let a: RunningServer
    let b: RunningServer
    before(async () => {
      redis = await startRedis(suite as unknown as { after (fn: () => Promise<void>): void })
      s3 = await startS3(suite as unknown as { after (fn: () => Promise<void>): void })
      const env = { ...s3Env(s3), REDIS_URL: redis.url, REDIS_PREFIX: `t${Date.now()}:`, MAX_CONCURRENT_PER_USER: '1', POOL_MIN: '1', POOL_MAX: '2' }
      const apiKey = `replicas-${Math.random().toString(36).slice(2)}`
      ;[a, b] = await Promise.all([startServer(suite, { driver, env, apiKey }), startServer(suite, { driver, env, apiKey })])
    })

    it('a file uploaded through one replica is read by an execution on the other; its output downloads from the first', async () => {
      const input = await uploadFile(a, 'in.txt', 'from a', 'user-1')
      const ran = await exec(b, { lang: 'py', code: 'open("out.txt", "w").write(open("in.txt").read() + " via b")', files: [{ id: input.fileId, storage_session_id: input.sessionId, name: 'in.txt' }] })
      assert.equal(ran.status, 200, JSON.stringify(ran.body))
      const output = (ran.body.files as Array<{ id: string, name: string, storage_session_id: string }>).find((file) => file.name === 'out.txt')
      assert.ok(output)
      const downloaded = await api(a, `/download/${output.storage_session_id}/${output.id}`)
      assert.equal(downloaded.status, 200)
      assert.equal(await downloaded.text(), 'from a via b')
    })

    it('a stateful session (the LibreChat client) begun on one replica continues on the other, and back', async () => {
      const first = await invoke(statefulTools(a, ALICE, HINT).code, { lang: 'py', code: 'open("/mnt/data/notes.txt", "w").write("kept")\nprint("written")' })
      assert.match(first.content, /written/)
      assert.equal(first.artifact.runtime_status, 'new')
      const second = await invoke(statefulTools(b, ALICE, HINT).code, { lang: 'py', code: 'print(open("/mnt/data/notes.txt").read())\nopen("/mnt/data/more.txt", "w").write("b")' })
      assert.match(second.content, /kept/)
      assert.equal(second.artifact.runtime_status, 'reused')
      assert.equal(second.artifact.runtime_session_id, first.artifact.runtime_session_id)
      const third = await invoke(statefulTools(a, ALICE, HINT).bash, { command: 'cat /mnt/data/more.txt' })
      assert.match(third.content, /stdout:\nb/)
      assert.equal(third.artifact.runtime_session_id, first.artifact.runtime_session_id)
    })

    it('MAX_CONCURRENT_PER_USER holds across replicas: a user running on one gets 429 on the other', async () => {
      const user = `busy-${Date.now()}`
      // sent together, each holding its place for seconds: whichever replica counts second refuses
      const runs = await Promise.all([a, b].map(async (replica) => await exec(replica, { lang: 'py', code: 'import time; time.sleep(5); print("done")', user_id: user })))
      assert.deepEqual(runs.map((run) => run.status).sort(), [200, 429], JSON.stringify(runs.map((run) => run.body)))
      assert.equal(runs.find((run) => run.status === 429)?.body.error, 'rate_limited')
      assert.equal(runs.find((run) => run.status === 200)?.body.stdout, 'done\n')
      assert.equal((await exec(b, { lang: 'py', code: 'print(2)', user_id: user })).status, 200)
      assert.equal((await exec(a, { lang: 'py', code: 'print(2)', user_id: user })).status, 200)
    })

    it('/health and /metrics show the cluster: both replicas alive, each with its own id', async () => {
      const views = async () => await Promise.all([a, b].map(async (replica) => (await (await api(replica, '/health')).json() as { cluster: { replica_id: string, replicas_alive: number, redis_reachable: boolean } }).cluster))
      let seen = await views()
      // the replica that joined first sees the second from its next beat on
      for (let attempt = 0; attempt < 50 && seen.some((view) => view.replicas_alive !== 2); attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 100))
        seen = await views()
      }
      assert.deepEqual(seen.map((view) => [view.replicas_alive, view.redis_reachable]), [[2, true], [2, true]])
      assert.notEqual(seen[0]!.replica_id, seen[1]!.replica_id)
      const metrics = await (await api(a, '/metrics')).text()
      assert.match(metrics, /^warden_cluster_replicas 2$/m)
      assert.match(metrics, /^warden_cluster_redis_up 1$/m)
    })

    it('with Redis away an execution that needs it gets 503 cluster_unavailable in JSON; it works once Redis is back', async () => {
      await redis.stop()
      try {
        const refused = await exec(a, { lang: 'py', code: 'print(1)', user_id: 'redis-away' })
        assert.equal(refused.status, 503, JSON.stringify(refused.body))
        assert.equal(refused.body.error, 'cluster_unavailable')
      } finally {
        await redis.start()
      }
      let status = 0
      for (let attempt = 0; attempt < 100 && status !== 200; attempt++) {
        status = (await exec(a, { lang: 'py', code: 'print(1)', user_id: 'redis-away' })).status
        if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 100))
      }
      assert.equal(status, 200)
    })

    it('a replica killed with SIGKILL drops out of the survivor\'s view within seconds; the survivor keeps serving', async () => {
      const exited = new Promise((resolve) => b.process.once('exit', resolve))
      b.process.kill('SIGKILL')
      await exited
      let alive = 2
      for (let attempt = 0; attempt < 100 && alive !== 1; attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 100))
        alive = (await (await api(a, '/health')).json() as { cluster: { replicas_alive: number } }).cluster.replicas_alive
      }
      assert.equal(alive, 1)
      const ran = await exec(a, { lang: 'py', code: 'print(3)', user_id: 'after-kill' })
      assert.equal(ran.body.stdout, '3\n')
    })
  })
}
