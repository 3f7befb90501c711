import assert from 'node:assert/strict'
import { before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { availableDrivers, suiteContext, type RunningServer } from '../helpers/server.ts'
import { assertStillServing, code, describeRun, run, startAttackServer, type Json } from './helpers.ts'

/**
 * The network: a worker has its own network namespace with only `lo`, so the server, the internet,
 * DNS and other executions are all out of reach.
 */

function lastJson (body: Json): Json {
  return JSON.parse(String(body.stdout).trim().split('\n').at(-1) ?? '') as Json
}

for (const driver of availableDrivers()) {
  describe(`network attacks on ${driver}`, () => {
    const suite = suiteContext()
    let server: RunningServer
    let port: number

    before(async () => {
      server = await startAttackServer(suite, driver)
      port = Number(new URL(server.baseUrl).port)
    })

    test('from Python, TCP to the server\'s own port on 127.0.0.1 and ::1, TCP to 1.1.1.1:53 and 169.254.169.254:80, UDP to 8.8.8.8:53 and DNS for example.com all fail', async () => {
      const { body } = await run(server, 'py', code(`
        import errno, json, socket
        def attempt(fn):
            try:
                fn()
                return "CONNECTED"
            except socket.gaierror as error:
                return f"gaierror {error.errno}"
            except OSError as error:
                return errno.errorcode.get(error.errno, str(error))
        def tcp(host, port, family=socket.AF_INET):
            def connect():
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.settimeout(2)
                    s.connect((host, port))
            return connect
        def udp():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"\\0" * 12, ("8.8.8.8", 53))
                s.settimeout(1)
                s.recv(512)
        print(json.dumps({
            "server 127.0.0.1": attempt(tcp("127.0.0.1", ${port})),
            "server ::1": attempt(tcp("::1", ${port}, socket.AF_INET6)),
            "tcp 1.1.1.1:53": attempt(tcp("1.1.1.1", 53)),
            "metadata 169.254.169.254:80": attempt(tcp("169.254.169.254", 80)),
            "udp 8.8.8.8:53": attempt(udp),
            "dns example.com": attempt(lambda: socket.getaddrinfo("example.com", 80)),
        }))
      `))
      assert.equal(body.status, 'ok', describeRun(body))
      const results = lastJson(body)
      assert.equal(Object.keys(results).length, 6)
      assert.equal(results['server 127.0.0.1'], 'ECONNREFUSED')
      assert.equal(results['server ::1'], 'ECONNREFUSED')
      assert.equal(results['tcp 1.1.1.1:53'], 'ENETUNREACH')
      assert.equal(results['metadata 169.254.169.254:80'], 'ENETUNREACH')
      assert.equal(results['udp 8.8.8.8:53'], 'ENETUNREACH')
      assert.match(results['dns example.com'], /^gaierror -[0-9]+$/)
      await assertStillServing(server)
    })

    test('from Bash, curl to the server\'s /health, /dev/tcp to 1.1.1.1:53 and getent hosts example.com all fail', async () => {
      const { body } = await run(server, 'bash', code(`
        curl -sS -m 2 http://127.0.0.1:${port}/health; echo "curl rc=$?"
        (exec 3<>/dev/tcp/1.1.1.1/53) 2>&1; echo "dev-tcp rc=$?"
        getent hosts example.com; echo "getent rc=$?"
      `))
      assert.equal(body.status, 'ok', describeRun(body))
      assert.match(body.stdout, /^curl rc=7$/m)
      assert.match(body.stderr, /curl: \(7\) Failed to connect to 127\.0\.0\.1 port \d+/)
      assert.match(body.stdout, /Network is unreachable\ndev-tcp rc=1$/m)
      assert.match(body.stdout, /^getent rc=2$/m)
      assert.doesNotMatch(body.stdout, /"status"/, 'the server answered the jail')
      await assertStillServing(server)
    })

    test('only the loopback interface exists (/proc/net/dev)', async () => {
      const { body } = await run(server, 'py', code(`
        lines = open("/proc/net/dev").read().splitlines()[2:]
        print(" ".join(sorted(line.split(":")[0].strip() for line in lines)))
      `))
      assert.equal(body.stdout, 'lo\n', describeRun(body))
      await assertStillServing(server)
    })

    test('the control: loopback works inside one execution (listen and connect on 127.0.0.1)', async () => {
      const { body } = await run(server, 'py', code(`
        import socket
        server = socket.create_server(("127.0.0.1", 40123))
        client = socket.create_connection(("127.0.0.1", 40123), 1)
        peer, _ = server.accept()
        client.sendall(b"ping")
        print(peer.recv(4).decode())
      `))
      assert.equal(body.stdout, 'ping\n', describeRun(body))
    })

    test('two concurrent executions cannot reach each other over 127.0.0.1 TCP or an abstract Unix socket: refused', async () => {
      const listener = run(server, 'py', code(`
        import json, socket, time
        tcp = socket.create_server(("127.0.0.1", 40124))
        tcp.settimeout(3)
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind("\\0warden-attack-neighbour")
        unix.listen()
        unix.settimeout(0.1)
        print("listening", time.time(), flush=True)
        accepted = []
        deadline = time.time() + 3
        while time.time() < deadline:
            for s, name in ((tcp, "tcp"), (unix, "unix")):
                s.settimeout(0.05)
                try:
                    s.accept()
                    accepted.append(name)
                except OSError:
                    pass
        print(json.dumps({"accepted": accepted, "until": time.time()}))
      `))
      await sleep(500)
      const dialer = run(server, 'py', code(`
        import errno, json, socket, time
        results = []
        started = time.time()
        for _ in range(10):
            for family, address in ((socket.AF_INET, ("127.0.0.1", 40124)), (socket.AF_UNIX, "\\0warden-attack-neighbour")):
                try:
                    with socket.socket(family, socket.SOCK_STREAM) as s:
                        s.settimeout(0.5)
                        s.connect(address)
                    results.append("CONNECTED")
                except OSError as error:
                    results.append(errno.errorcode.get(error.errno, str(error)))
            time.sleep(0.1)
        print(json.dumps({"results": sorted(set(results)), "from": started, "to": time.time()}))
      `))
      const [listened, dialed] = await Promise.all([listener, dialer])
      assert.equal(listened.body.status, 'ok', describeRun(listened.body))
      assert.equal(dialed.body.status, 'ok', describeRun(dialed.body))
      const listening = Number(/^listening ([\d.]+)$/m.exec(listened.body.stdout)?.[1])
      const heard = lastJson(listened.body)
      const tried = lastJson(dialed.body)
      // the attempts really overlapped the listening window
      assert.ok(tried.from >= listening - 0.5 && tried.to <= heard.until, `listening ${listening}–${heard.until}, dialing ${tried.from}–${tried.to}`)
      assert.deepEqual(tried.results, ['ECONNREFUSED'])
      assert.deepEqual(heard.accepted, [])
      await assertStillServing(server)
    })
  })
}
