import assert from 'node:assert/strict'
import { accessSync, constants, existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { test } from 'node:test'
import { parse as parseYaml } from 'yaml'
import { LANGUAGES } from '../../src/exec/languages/index.ts'

const repo = path.resolve(import.meta.dirname, '..', '..')
const read = (file: string) => readFileSync(path.join(repo, file), 'utf8')
const dockerfile = read('Dockerfile')
const readme = read('README.md')
const compose = read('deploy/docker-compose.yml')

/** What the jail and its workers call that Docker's default profile allows only with CAP_SYS_ADMIN. */
const JAIL_SYSCALLS = ['clone', 'unshare', 'mount', 'umount2', 'pivot_root', 'setns', 'sethostname']

test('every file the Dockerfile copies from the build context exists', () => {
  const copies = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((match) => (match[1] ?? '').split(/\s+/))
  assert.ok(copies.length >= 8, `found ${copies.length} sources`)
  for (const source of copies) assert.ok(existsSync(path.join(repo, source)), `${source} exists`)
  accessSync(path.join(repo, 'deploy/entrypoint.sh'), constants.X_OK)
  accessSync(path.join(repo, 'bin/warden'), constants.X_OK)
})

test('the image pins nsjail, installs the data stack, runs tini as PID 1 and has a health check', () => {
  assert.match(dockerfile, /ARG NSJAIL_VERSION=\d+\.\d+/)
  assert.match(dockerfile, /--branch "\$\{NSJAIL_VERSION\}"/)
  for (const pkg of ['python3-numpy', 'python3-pandas', 'python3-matplotlib', 'python3-scipy', 'python3-sklearn', 'tini', 'bubblewrap']) {
    assert.match(dockerfile, new RegExp(`\\b${pkg}\\b`), pkg)
  }
  assert.match(dockerfile, /ENTRYPOINT \["\/usr\/bin\/tini", "--"/)
  assert.match(dockerfile, /^HEALTHCHECK [\s\S]*\/health\/ready/m, 'the image is healthy only once ready (self-test passed)')
  assert.match(read('deploy/docker-compose.yml'), /\/health\/ready/, 'compose waits for readiness too')
  assert.match(dockerfile, /MPLCONFIGDIR=\/usr\/local\/share\/warden\/matplotlib/, 'the font cache lands where sandbox/preload.py looks')
  assert.match(read('sandbox/preload.py'), /PREBUILT_MATPLOTLIB_CACHE = "\/usr\/local\/share\/warden\/matplotlib"/)
})

test('the shipped seccomp profile is Docker\'s default plus an unconditional allow of the jail\'s syscalls', () => {
  const profile = JSON.parse(read('deploy/docker-seccomp.json')) as { defaultAction: string, syscalls: Array<{ names: string[], action: string, includes?: unknown }> }
  assert.equal(profile.defaultAction, 'SCMP_ACT_ERRNO')
  const unconditional = profile.syscalls.filter((rule) => rule.action === 'SCMP_ACT_ALLOW' && rule.includes === undefined)
  for (const name of JAIL_SYSCALLS) assert.ok(unconditional.some((rule) => rule.names.includes(name)), `${name} allowed`)
  assert.ok(!unconditional.some((rule) => rule.names.includes('clone3')), 'clone3 stays refused (ENOSYS), so clone flags stay visible')
  assert.ok(profile.syscalls.length > 30, 'the rest of Docker\'s default is there')
})

test('the documented docker run line and the compose file give the same capabilities and options, no privilege and no host cgroups', () => {
  const run = /```sh\ndocker build -t warden \.\n[\s\S]*?^docker run ([^\n]+)\n```/m.exec(readme)?.[1] ?? ''
  assert.notEqual(run, '', 'README has the docker run line')
  const caps = [...run.matchAll(/--cap-add (\w+)/g)].map((match) => match[1]).sort()
  assert.deepEqual(caps, ['CHOWN', 'KILL', 'SETFCAP', 'SETGID', 'SETUID'])
  assert.match(compose, /cap_add: \[SETUID, SETGID, CHOWN, KILL, SETFCAP\]/)
  assert.match(run, /--cap-drop ALL/)
  for (const option of ['seccomp=deploy/docker-seccomp.json', 'systempaths=unconfined', 'apparmor=warden', 'no-new-privileges:true']) {
    assert.ok(run.includes(option), option)
  }
  for (const option of ['seccomp=./docker-seccomp.json', 'systempaths=unconfined', 'apparmor=warden', 'no-new-privileges:true']) {
    assert.ok(compose.includes(option), option)
  }
  const settings = compose.split('\n').filter((line) => !line.trimStart().startsWith('#')).join('\n')
  assert.doesNotMatch(run + settings, /privileged|SYS_ADMIN|\/sys\/fs\/cgroup|cgroupns|cgroup: host|apparmor=unconfined/)
  assert.match(readme, /^apparmor_parser -r -W deploy\/warden\.apparmor/m, 'the README loads the profile it names')
  assert.match(compose, /LIBRECHAT_CODE_BASEURL: http:\/\/warden:8000\/v1/)
  assert.match(compose, /LIBRECHAT_CODE_API_KEY: \$\{WARDEN_API_KEY/)
  assert.match(compose, /CODE_API_KEY: \$\{WARDEN_API_KEY/)
})

test('the container starts the server in a writable view of its own cgroups, and the doctor checks from there', () => {
  assert.match(read('deploy/entrypoint.sh'), /^exec python3 -I "\$\(dirname "\$0"\)\/private-cgroups\.py" "\$@"$/m)
  assert.match(dockerfile, /^COPY deploy\/entrypoint\.sh deploy\/private-cgroups\.py \/app\/deploy\/$/m)
  assert.match(read('bin/warden'), /private-cgroups\.py" node --import "\$loader" "\$repo\/src\/doctor\.ts"/)
})

test('the Kubernetes Deployment gives the container what the docker run line gives it', () => {
  const deployment = read('deploy/k8s/deployment.yaml')
  assert.match(deployment, /drop: \[ALL\]\n\s+#[\s\S]*?add: \[SETUID, SETGID, CHOWN, KILL, SETFCAP\]/)
  assert.match(deployment, /seccompProfile:\n\s+type: Localhost\n\s+localhostProfile: warden-seccomp\.json/)
  assert.match(deployment, /appArmorProfile:\n\s+type: Localhost\n\s+localhostProfile: warden/)
  assert.match(deployment, /procMount: Unmasked/)
  assert.match(deployment, /allowPrivilegeEscalation: false/)
  assert.match(deployment, /readinessProbe:\n\s+httpGet:\n\s+path: \/health\/ready/)
  assert.match(deployment, /livenessProbe:\n\s+httpGet:\n\s+path: \/health\/live/)
  assert.match(deployment, /claimName: warden-data/)
  assert.match(read('deploy/k8s/pvc.yaml'), /name: warden-data/)
  assert.doesNotMatch(deployment, /privileged: true|SYS_ADMIN/)
  for (const file of ['pvc.yaml', 'deployment.yaml', 'service.yaml']) assert.match(read('deploy/k8s/kustomization.yaml'), new RegExp(`- ${file}`))
})

test('the systemd unit delegates its cgroup, survives a worker\'s OOM kill and stops the server gracefully', () => {
  const unit = read('deploy/warden.service')
  const setting = (name: string) => new RegExp(`^${name}=(.*)$`, 'm').exec(unit)?.[1]
  assert.equal(setting('Delegate'), 'yes', 'Warden divides its own cgroup (F1, F5)')
  assert.equal(setting('OOMPolicy'), 'continue', 'a worker OOM kill is an outcome, not a reason to stop')
  assert.equal(setting('KillMode'), 'mixed', 'SIGTERM to the server alone, so it can drain')
  assert.equal(setting('ExecStart'), '/opt/warden/bin/warden start')
  assert.match(readme, /deploy\/warden\.service/, 'README says how to install it')
})

/** The Dockerfile's stages by name: the image each starts from and its lines. */
function dockerfileStages (): Map<string, { from: string, body: string }> {
  const stages = new Map<string, { from: string, body: string }>()
  for (const block of dockerfile.split(/^(?=FROM )/m).slice(1)) {
    const [, from = '', name = ''] = /^FROM (\S+) AS (\S+)/.exec(block) ?? []
    stages.set(name, { from, body: block })
  }
  return stages
}

/** Every line that goes into the image a target builds: its stage and the stages it is built on. */
function imageText (target: string): string {
  const stages = dockerfileStages()
  let text = ''
  for (let stage = stages.get(target); stage !== undefined; stage = stages.get(stage.from)) text = stage.body + text
  assert.ok(text !== '', `no stage ${target}`)
  return text
}

/** What provides each language in the full image and in CI; JavaScript runs on the Node that runs Warden. */
const RUNTIME_PACKAGES: Record<string, { debian: string[], npm?: string }> = {
  python: { debian: ['python3'] },
  bash: { debian: ['bash'] },
  javascript: { debian: [] },
  typescript: { debian: [], npm: 'typescript' },
  c: { debian: ['gcc'] },
  cpp: { debian: ['g++'] },
  java: { debian: ['default-jdk-headless'] },
  php: { debian: ['php-cli'] },
  rust: { debian: ['rustc'] },
  go: { debian: ['golang-go'] },
  d: { debian: ['gdc'] },
  fortran: { debian: ['gfortran'] },
  r: { debian: ['r-base-core'] },
}

test('the full image and CI install every language\'s runtime; the slim image only Python and Bash', () => {
  assert.deepEqual(Object.keys(RUNTIME_PACKAGES).sort(), LANGUAGES.map((language) => language.id).sort(), 'a new language names its packages here')
  const slim = imageText('slim')
  const full = imageText('full')
  const ci = read('.ci/run')
  assert.equal([...dockerfileStages().keys()].at(-1), 'full', 'full is the last stage: the default target')
  for (const [id, { debian, npm }] of Object.entries(RUNTIME_PACKAGES)) {
    for (const pkg of debian) {
      const installed = new RegExp(`[ \\t]${pkg.replace(/[+]/g, '\\+')}(?=[ \\t\\n\\\\])`)
      assert.match(full, installed, `${id}: ${pkg} in the full image`)
      assert.match(ci, installed, `${id}: ${pkg} in .ci/run`)
      if (!['python', 'bash'].includes(id)) assert.doesNotMatch(slim, installed, `${id}: ${pkg} stays out of the slim image`)
    }
    if (npm !== undefined) {
      assert.match(full, new RegExp(`npm install -g [^\\n]*"${npm}@`), `${id}: ${npm} from npm in the full image`)
      assert.match(ci, new RegExp(`npm install -g [^\\n]*"${npm}@`), `${id}: ${npm} from npm in .ci/run`)
    }
  }
})

test('the Helm chart\'s Deployment gives each replica what the Kubernetes Deployment gives its one, and shares a bucket and Redis', () => {
  const deployment = read('deploy/helm/warden/templates/deployment.yaml')
  assert.match(deployment, /drop: \[ALL\]\n\s+#[\s\S]*?add: \[SETUID, SETGID, CHOWN, KILL, SETFCAP\]/)
  assert.match(deployment, /seccompProfile:\n\s+type: Localhost\n\s+localhostProfile: warden-seccomp\.json/)
  assert.match(deployment, /appArmorProfile:\n\s+type: Localhost\n\s+localhostProfile: warden/)
  assert.match(deployment, /procMount: Unmasked/)
  assert.match(deployment, /allowPrivilegeEscalation: false/)
  assert.match(deployment, /hostUsers: false/)
  assert.match(deployment, /readinessProbe:\n\s+httpGet:\n\s+path: \/health\/ready/)
  assert.match(deployment, /livenessProbe:\n\s+httpGet:\n\s+path: \/health\/live/)
  assert.doesNotMatch(deployment, /privileged: true|SYS_ADMIN|persistentVolumeClaim/)
  for (const name of ['STORAGE', 'S3_BUCKET', 'S3_ENDPOINT', 'S3_REGION', 'S3_FORCE_PATH_STYLE', 'S3_PREFIX', 'S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY', 'REDIS_URL', 'REDIS_PREFIX']) {
    assert.match(deployment, new RegExp(`- name: ${name}\\n`), `the chart sets ${name}`)
  }
  assert.match(read('deploy/helm/warden/templates/pdb.yaml'), /kind: PodDisruptionBudget/)
  assert.match(read('deploy/helm/warden/templates/hpa.yaml'), /kind: HorizontalPodAutoscaler/)
  const values = parseYaml(read('deploy/helm/warden/values.yaml')) as { replicaCount: number, s3: { bucket: string }, redis: { url: string }, podDisruptionBudget: { enabled: boolean }, autoscaling: { enabled: boolean } }
  assert.ok(values.replicaCount > 1)
  assert.equal(values.podDisruptionBudget.enabled, true)
  assert.equal(values.autoscaling.enabled, false)
  assert.ok(values.s3.bucket !== '' && values.redis.url.startsWith('redis://'))
})

test('the cluster compose file runs three replicas, each as the single one is run, on one Redis and one bucket behind a balancer', () => {
  type Service = { cap_drop?: string[], cap_add?: string[], security_opt?: string[], environment?: Record<string, string>, volumes?: string[] }
  const single = (parseYaml(compose) as { services: Record<string, Service> }).services.warden!
  const cluster = parseYaml(read('deploy/docker-compose.cluster.yml'), { merge: true }) as { services: Record<string, Service> }
  const replicas = Object.keys(cluster.services).filter((name) => /^warden-\d$/.test(name))
  assert.deepEqual(replicas, ['warden-1', 'warden-2', 'warden-3'])
  for (const name of replicas) {
    const replica = cluster.services[name]!
    assert.deepEqual([replica.cap_drop, replica.cap_add, replica.security_opt], [single.cap_drop, single.cap_add, single.security_opt], name)
    assert.equal(replica.environment?.STORAGE, 's3')
    assert.equal(replica.environment?.REDIS_URL, 'redis://redis:6379/0')
    assert.equal(replica.volumes, undefined, `${name} keeps nothing on its own disk`)
  }
  for (const name of ['redis', 'minio', 'bucket', 'balancer']) assert.ok(cluster.services[name], name)
})
