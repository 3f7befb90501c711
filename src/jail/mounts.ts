/**
 * The one table of what a jail shows of the host: read-only binds, symlinks and synthetic /etc files. The
 * bubblewrap driver builds its arguments from it; `nsjail.cfg` states the same mounts as commented data,
 * and test/unit/jail/mounts.test.ts holds the two together. Per-run tmpfs (/tmp, /mnt/data), /proc and
 * /dev are each driver's own way of doing the same thing and are not listed here.
 */

export type SystemMount =
  /** a host path bound read-only at the same path; `optional`: skipped where the host lacks it */
  | { kind: 'ro-bind', path: string, optional?: boolean }
  | { kind: 'symlink', path: string, target: string, optional?: boolean }
  /** a file the jail gets from the server instead of the host */
  | { kind: 'file', path: string, content: string }

const SYNTHETIC = {
  passwd: 'root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/tmp:/usr/sbin/nologin\n',
  group: 'root:x:0:\nnogroup:x:65534:\n',
  hosts: '127.0.0.1 localhost sandbox\n::1 localhost\n',
  'nsswitch.conf': 'passwd: files\ngroup: files\nhosts: files\n',
}

export const SYSTEM_MOUNTS: readonly SystemMount[] = [
  // programs and libraries: the whole of /usr, nothing writable
  { kind: 'ro-bind', path: '/usr' },
  { kind: 'symlink', path: '/bin', target: 'usr/bin' },
  { kind: 'symlink', path: '/sbin', target: 'usr/sbin' },
  { kind: 'symlink', path: '/lib', target: 'usr/lib' },
  { kind: 'symlink', path: '/lib64', target: 'usr/lib64', optional: true },
  // only leaf files and folders of /etc that programs need: all of /etc would bring the host's secrets
  // and, in Docker, writable sub-mounts (/etc/hosts, /etc/resolv.conf)
  { kind: 'ro-bind', path: '/etc/ld.so.cache' },
  { kind: 'ro-bind', path: '/etc/alternatives' },
  { kind: 'ro-bind', path: '/etc/localtime', optional: true },
  { kind: 'ro-bind', path: '/etc/matplotlibrc', optional: true },
  { kind: 'ro-bind', path: '/etc/fonts', optional: true },
  { kind: 'ro-bind', path: '/etc/python3', optional: true },
  { kind: 'ro-bind', path: '/etc/python3.11', optional: true },
  { kind: 'ro-bind', path: '/etc/mime.types', optional: true },
  // language runtimes' own configuration (src/exec/languages/): the JVM's jvm.cfg and security files,
  // R's Renviron and ldpaths (R_HOME/etc links here), php.ini with the extensions it loads
  { kind: 'ro-bind', path: '/etc/java-17-openjdk', optional: true },
  { kind: 'ro-bind', path: '/etc/R', optional: true },
  { kind: 'ro-bind', path: '/etc/php', optional: true },
  ...Object.entries(SYNTHETIC).map(([name, content]): SystemMount => ({ kind: 'file', path: `/etc/${name}`, content })),
]

/** The synthetic /etc files by name, as the runtime directory writes them for bubblewrap's fds. */
export const SYNTHETIC_ETC: Readonly<Record<string, string>> = SYNTHETIC
