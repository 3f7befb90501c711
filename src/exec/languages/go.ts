import type { LanguageDescriptor } from './language.ts'

/**
 * `go build` of one file outside any module. Debian's Go 1.19 ships the standard library compiled
 * (GOROOT/pkg), so a build compiles only the user's package; the build cache it still writes is the run's
 * own (under /tmp, from XDG_CACHE_HOME), never shared. No module downloads: the jail has no network.
 */
export default {
  id: 'go',
  aliases: ['go', 'golang'],
  program: ({ limits }) => ({
    runner: 'steps',
    sourceFile: 'main.go',
    env: {
      GOPATH: '/tmp/go',
      GOCACHE: '/tmp/.cache/go-build',
      GOPROXY: 'off',
      GOSUMDB: 'off',
      GOTOOLCHAIN: 'local',
      GOTELEMETRY: 'off',
      // the Go runtime sees the host's cores and memory, not the cgroup's: run on the CPU rate, and
      // collect garbage harder near the memory limit rather than be killed at it
      GOMAXPROCS: String(Math.max(1, Math.ceil(limits.cpus))),
      GOMEMLIMIT: String(Math.floor(limits.memoryBytes * 0.9)),
    },
    steps: [
      { name: 'compile', argv: ['/usr/bin/go', 'build', '-o', '{dir}/main', '{source}'] },
      { name: 'run', argv: ['{dir}/main', '{args}'] },
    ],
  }),
  requires: ['/usr/bin/go'],
  install: 'golang-go',
} satisfies LanguageDescriptor
