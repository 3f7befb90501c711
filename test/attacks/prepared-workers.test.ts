import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { checkLanguages } from '../../src/exec/languages/index.ts'
import { api, availableDrivers, exec, suiteContext, type RunningServer } from '../helpers/server.ts'
import { assertStillServing, code, describeRun, startAttackServer, type Json } from './helpers.ts'

/**
 * Item 1 of issue 21: one user's run must leave nothing for the next user of a prepared interpreter
 * (Node, TypeScript, PHP, R, Java; sandbox/prepared.py) or of the warm worker it was adopted from.
 *
 * Each language runs the same probe three times, as three users, each time in a worker whose
 * interpreter was started ahead (checked on the server's log line): W (the language's first request,
 * whose program the server may remember), A and B. Every run first leaves traces tagged with its user —
 * files in /tmp and /dev/shm, an environment variable, a global or monkey-patched builtin (or a system
 * property), a module loaded from /tmp, an exit hook, a detached background process that prints, an
 * open descriptor, a class of its own (Java) — then looks for the traces of every user. It must find
 * exactly its own (the positive control: the probe works in this very kind of worker) and none of the
 * others'. A scanner in Python, started by the probe, also reads the memory of the worker process (pid
 * 1 of the run's pid namespace, readable to the run's uid) for each user's secret, a string the user's
 * code holds reversed, so only a copy of someone else's code would match: its own must be found.
 */

const SCANNER = code(`
  import json, os, re, sys
  tags = sys.argv[1].split(",")
  secrets = dict(zip(tags, sys.argv[2].split(",")))
  me = os.getpid()
  found = {"files": [], "procs": [], "fds": [], "memory": []}
  def note(kind, text):
      for tag in tags:
          if ("TRACE-" + tag) in text and tag not in found[kind]:
              found[kind].append(tag)
  for root in ("/tmp", "/dev/shm", "/mnt/data"):
      for folder, dirs, files in os.walk(root):
          for name in dirs + files:
              note("files", name)
  for pid in filter(str.isdigit, os.listdir("/proc")):
      if int(pid) == me:
          continue
      try:
          note("procs", open(f"/proc/{pid}/cmdline", "rb").read().decode("utf-8", "replace"))
          for fd in os.listdir(f"/proc/{pid}/fd"):
              note("fds", os.readlink(f"/proc/{pid}/fd/{fd}"))
      except OSError:
          pass
  wanted = {tag: secret[::-1].encode() for tag, secret in secrets.items()}
  with open("/proc/1/mem", "rb") as memory:
      for line in open("/proc/1/maps").read().splitlines():
          match = re.match(r"([0-9a-f]+)-([0-9a-f]+) r", line)
          if match is None:
              continue
          try:
              memory.seek(int(match[1], 16))
              data = memory.read(int(match[2], 16) - int(match[1], 16))
          except (OSError, OverflowError, ValueError):
              continue
          for tag, secret in wanted.items():
              if secret in data and tag not in found["memory"]:
                  found["memory"].append(tag)
  print("SCAN " + json.dumps(found), flush=True)
`)

const TAGS = ['W', 'A', 'B'] as const
type Tag = typeof TAGS[number]

/** A probe: leaves `tag`'s traces, then reports every tag's it sees. argv: scanner, tags, reversed secrets. */
type Probe = (tag: Tag, secret: string) => string

const NODE_PROBE: Probe = (tag, secret) => code(`
  const fs = require('fs')
  const { spawn, execFileSync } = require('child_process')
  const [scanner, tags, secrets] = process.argv.slice(2)
  const tag = '${tag}'
  const secret = '${secret}'
  fs.writeFileSync('/tmp/TRACE-' + tag, secret)
  fs.writeFileSync('/dev/shm/TRACE-' + tag, secret)
  fs.writeFileSync('/tmp/TRACE-' + tag + '-module.js', 'module.exports = 1')
  require('/tmp/TRACE-' + tag + '-module.js')
  process.env['TRACE_' + tag] = '1'
  globalThis['TRACE_' + tag] = 1
  Object.defineProperty(Array.prototype, 'TRACE_' + tag, { value: 1 })
  const parse = JSON.parse
  JSON.parse = function (text) { return parse(text) }
  JSON.parse['TRACE_' + tag] = 1
  const held = fs.openSync('/tmp/TRACE-' + tag, 'r')
  process.on('exit', () => { fs.writeSync(1, 'TRACE-EXIT-' + tag + '\\n') })
  spawn('/bin/sh', ['-c', 'sleep 0.3; while :; do echo TRACE-ECHO-$0 >&2; sleep 0.1; done', 'TRACE-' + tag], { detached: true, stdio: ['ignore', 'ignore', 'inherit'] }).unref()
  const seen = (has) => tags.split(',').filter(has)
  console.log('LANG ' + JSON.stringify({
    env: seen((t) => process.env['TRACE_' + t] !== undefined),
    globals: seen((t) => ('TRACE_' + t) in globalThis && ('TRACE_' + t) in [] && ('TRACE_' + t) in JSON.parse),
    modules: seen((t) => Object.keys(require.cache).some((name) => name.includes('TRACE-' + t))),
    exitHooks: process.listeners('exit').length,
    held: held > 2,
  }))
  fs.writeFileSync('/tmp/scan.py', scanner)
  execFileSync('python3', ['/tmp/scan.py', tags, secrets], { stdio: ['ignore', 'inherit', 'inherit'] })
  if (secret.length === 0) console.log('unreachable')
`)

const R_PROBE: Probe = (tag, secret) => code(`
  argv <- commandArgs(trailingOnly = TRUE)
  tag <- "${tag}"
  secret <- "${secret}"
  writeLines(secret, paste0("/tmp/TRACE-", tag))
  writeLines(secret, paste0("/dev/shm/TRACE-", tag))
  do.call(Sys.setenv, setNames(list("1"), paste0("TRACE_", tag)))
  assign(paste0("TRACE_", tag), 1, envir = globalenv())
  unlockBinding("nchar", baseenv())
  original <- base::nchar
  patched <- function(...) original(...)
  attr(patched, "trace") <- tag
  assign("nchar", patched, envir = baseenv())
  held <- file(paste0("/tmp/TRACE-", tag), "r")
  hook <- new.env()
  reg.finalizer(hook, function(e) cat(paste0("TRACE-EXIT-", tag, "\\n")), onexit = TRUE)
  system(paste0("sh -c 'sleep 0.3; while :; do echo TRACE-ECHO-$0 >&2; sleep 0.1; done' TRACE-", tag), wait = FALSE, ignore.stdout = TRUE)
  tags <- strsplit(argv[2], ",")[[1]]
  seen <- function(has) tags[vapply(tags, has, logical(1))]
  quoted <- function(found) if (length(found) == 0) "[]" else paste0("[", paste0('"', found, '"', collapse = ","), "]")
  cat('LANG {"env":', quoted(seen(function(t) nzchar(Sys.getenv(paste0("TRACE_", t))))),
      ',"globals":', quoted(seen(function(t) exists(paste0("TRACE_", t), envir = globalenv(), inherits = FALSE) || identical(attr(get("nchar", envir = baseenv()), "trace"), t))),
      ',"held":', if (isOpen(held)) "true" else "false", "}\\n", sep = "")
  writeLines(argv[1], "/tmp/scan.py")
  invisible(system2("python3", c("/tmp/scan.py", argv[2], argv[3])))
`)

const PHP_PROBE: Probe = (tag, secret) => code(`
  <?php
  $tag = '${tag}';
  $secret = '${secret}';
  file_put_contents("/tmp/TRACE-$tag", $secret);
  file_put_contents("/dev/shm/TRACE-$tag", $secret);
  file_put_contents("/tmp/TRACE-$tag-include.php", '<?php return 1;');
  include "/tmp/TRACE-$tag-include.php";
  putenv("TRACE_$tag=1");
  $GLOBALS["TRACE_$tag"] = 1;
  ini_set('user_agent', "TRACE-$tag");
  $held = fopen("/tmp/TRACE-$tag", 'r');
  register_shutdown_function(function () use ($tag) { echo "TRACE-EXIT-$tag\\n"; });
  exec("sh -c 'sleep 0.3; while :; do echo TRACE-ECHO-\\$0 >&2; sleep 0.1; done' TRACE-$tag > /dev/null &");
  $tags = explode(',', $argv[2]);
  $seen = fn ($has) => array_values(array_filter($tags, $has));
  echo 'LANG ' . json_encode([
    'env' => $seen(fn ($t) => getenv("TRACE_$t") !== false),
    'globals' => $seen(fn ($t) => array_key_exists("TRACE_$t", $GLOBALS) || ini_get('user_agent') === "TRACE-$t"),
    'includes' => $seen(fn ($t) => count(array_filter(get_included_files(), fn ($f) => str_contains($f, "TRACE-$t"))) > 0),
    'held' => is_resource($held),
  ]) . "\\n";
  file_put_contents('/tmp/scan.py', $argv[1]);
  passthru('python3 /tmp/scan.py ' . escapeshellarg($argv[2]) . ' ' . escapeshellarg($argv[3]));
`)

/** Java: `className` is the public class (the W run names it after its secret, as a user's program names it). */
const javaProbe = (className: string): Probe => (tag, secret) => code(`
  import java.io.FileInputStream;
  import java.nio.file.Files;
  import java.nio.file.Path;
  import java.util.ArrayList;
  import java.util.List;

  class Trace${tag} {}

  public class ${className} {
    static FileInputStream held;
    public static void main(String[] argv) throws Exception {
      String tag = "${tag}";
      String secret = "${secret}";
      Files.writeString(Path.of("/tmp/TRACE-" + tag), secret);
      Files.writeString(Path.of("/dev/shm/TRACE-" + tag), secret);
      System.setProperty("TRACE_" + tag, "1");
      held = new FileInputStream("/tmp/TRACE-" + tag);
      Runtime.getRuntime().addShutdownHook(new Thread(() -> System.out.println("TRACE-EXIT-" + tag)));
      new ProcessBuilder("/bin/sh", "-c", "sleep 0.3; while :; do echo TRACE-ECHO-$0 >&2; sleep 0.1; done", "TRACE-" + tag)
        .redirectOutput(ProcessBuilder.Redirect.DISCARD).redirectError(ProcessBuilder.Redirect.INHERIT).start();
      Thread thread = new Thread(() -> { while (true) { try { Thread.sleep(100); } catch (InterruptedException e) { return; } } });
      thread.setName("TRACE-" + tag);
      thread.setDaemon(true);
      thread.start();
      List<String> properties = new ArrayList<>();
      List<String> classes = new ArrayList<>();
      List<String> threads = new ArrayList<>();
      for (String t : argv[1].split(",")) {
        if (System.getProperty("TRACE_" + t) != null) properties.add('"' + t + '"');
        for (ClassLoader loader : new ClassLoader[] { ClassLoader.getSystemClassLoader(), Thread.currentThread().getContextClassLoader() }) {
          try { Class.forName("Trace" + t, false, loader); if (!classes.contains('"' + t + '"')) classes.add('"' + t + '"'); } catch (ClassNotFoundException e) {}
        }
        for (Thread running : Thread.getAllStackTraces().keySet()) if (running.getName().equals("TRACE-" + t) && !threads.contains('"' + t + '"')) threads.add('"' + t + '"');
      }
      System.out.println("LANG {\\"properties\\":" + properties + ",\\"classes\\":" + classes + ",\\"threads\\":" + threads + "}");
      Files.writeString(Path.of("/tmp/scan.py"), argv[0]);
      new ProcessBuilder("python3", "/tmp/scan.py", argv[1], argv[2]).inheritIO().start().waitFor();
    }
  }
`)

interface Language { lang: string, id: string, probe: (tag: Tag) => Probe, expectLang: (tag: Tag) => Json }

const LANGUAGES: Language[] = [
  { lang: 'js', id: 'javascript', probe: () => NODE_PROBE, expectLang: (tag) => ({ env: [tag], globals: [tag], modules: [tag], exitHooks: 1, held: true }) },
  { lang: 'ts', id: 'typescript', probe: () => NODE_PROBE, expectLang: (tag) => ({ env: [tag], globals: [tag], modules: [tag], exitHooks: 1, held: true }) },
  { lang: 'php', id: 'php', probe: () => PHP_PROBE, expectLang: (tag) => ({ env: [tag], globals: [tag], includes: [tag], held: true }) },
  { lang: 'r', id: 'r', probe: () => R_PROBE, expectLang: (tag) => ({ env: [tag], globals: [tag], held: true }) },
  { lang: 'java', id: 'java', probe: (tag) => javaProbe(tag === 'W' ? 'SecretClass' + NONCE : 'Main'), expectLang: (tag) => ({ properties: [tag], classes: [tag], threads: [tag] }) },
]

/** Fresh for every test process, so no earlier run's text can match. */
const NONCE = randomBytes(6).toString('hex')
/** Each user's secret; the W run of Java names its public class after its own (it is then `SecretClass<nonce>`). */
const secretOf = (lang: Language, tag: Tag): string => lang.id === 'java' && tag === 'W' ? `SecretClass${NONCE}` : `Secret${tag}${lang.id}${NONCE}`
const reversed = (text: string) => [...text].reverse().join('')

/** Whether the run used a prepared interpreter, from the server's log line for its request. */
async function ranPrepared (server: RunningServer, executionId: string): Promise<boolean> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const line = server.logs().split('\n').find((candidate) => candidate.includes(executionId) && candidate.includes('"request completed"'))
    if (line !== undefined) return (JSON.parse(line) as { prepared: boolean }).prepared
    await sleep(100)
  }
  throw new Error(`no "request completed" line for ${executionId}`)
}

/** Until /health counts a prepared worker for the language. */
async function preparedReady (server: RunningServer, id: string): Promise<void> {
  for (let attempt = 0; attempt < 600; attempt++) {
    const health = await (await api(server, '/health')).json() as { pool: { prepared: Record<string, number> } }
    if ((health.pool.prepared[id] ?? 0) > 0) return
    await sleep(50)
  }
  throw new Error(`no prepared worker for ${id} within 30 s`)
}

const installed = new Set<string>(checkLanguages().available.map((language) => language.id))

for (const driver of availableDrivers()) {
  describe(`prepared interpreters keep nothing of one user for the next, on ${driver}`, () => {
    const suite = suiteContext()
    let server: RunningServer

    before(async () => {
      // one prepared worker per language at a time, and the attack limits
      server = await startAttackServer(suite, driver, { PREPARED_MAX: String(LANGUAGES.length), EXEC_TIMEOUT_MS: '30000', POOL_MAX: '6', MAX_CONCURRENT_PER_USER: '0' })
    })

    for (const language of LANGUAGES) {
      test(`${language.id}: W, A and B each see exactly their own traces, in prepared workers`, { skip: !installed.has(language.id) && `${language.id} is not installed` }, async () => {
        const secrets = TAGS.map((tag) => reversed(secretOf(language, tag))).join(',')
        for (const tag of TAGS) {
          // W's run is the language's first: it starts the prepared workers of the ones after it
          if (tag !== 'W') await preparedReady(server, language.id)
          const { status, body } = await exec(server, {
            lang: language.lang,
            code: language.probe(tag)(tag, secretOf(language, tag)),
            args: [SCANNER, TAGS.join(','), secrets],
            user_id: `user-${tag}-${NONCE}`,
          })
          assert.equal(status, 200, JSON.stringify(body).slice(0, 2000))
          assert.equal(body.status, 'ok', describeRun(body))
          if (tag !== 'W') assert.equal(await ranPrepared(server, body.session_id), true, `${tag}'s run did not get a prepared worker`)
          const stdout = String(body.stdout)
          const output = stdout + String(body.stderr)
          const langLine = /^LANG (.*)$/m.exec(stdout)?.[1]
          const scanLine = /^SCAN (.*)$/m.exec(stdout)?.[1]
          assert.ok(langLine !== undefined && scanLine !== undefined, `the probe reported nothing: ${describeRun(body)}`)
          assert.deepEqual(JSON.parse(langLine), language.expectLang(tag), `${tag} saw in its language: ${langLine}`)
          assert.deepEqual(JSON.parse(scanLine), { files: [tag], procs: [tag], fds: [tag], memory: [tag] }, `${tag} saw on its worker: ${scanLine}`)
          assert.match(stdout, new RegExp(`TRACE-EXIT-${tag}`), `${tag}'s own exit hook did not run at its exit`)
          for (const other of TAGS.filter((candidate) => candidate !== tag)) {
            assert.doesNotMatch(output, new RegExp(`TRACE-(EXIT|ECHO)-${other}`), `${other}'s exit hook or background process wrote into ${tag}'s output`)
          }
        }
        await assertStillServing(server)
      })
    }
  })
}
