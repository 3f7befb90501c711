import type { LanguageDescriptor } from './language.ts'

/**
 * In a prepared worker (sandbox/prepared.py) PHP is started ahead on main.php as a FIFO, with this file as
 * its `auto_prepend_file`. PHP opens its script at start but reads it only after the prepend file ran
 * (PHP 8.2's CLI), so the prepend file signals `L` and waits on the same FIFO for the first line the
 * worker writes, the args as a JSON array; it takes them as `$argv`/`$argc`, signals `S`, leaves no
 * variable of its own behind, and PHP then reads the rest, the code, as its script: the shebang line,
 * `declare(strict_types=1)`, line numbers and stack traces are as for `php main.php args`. The line is
 * read a byte at a time so that nothing of the code is taken with it (args are small: `[]` for most).
 */
const PREPARE = `<?php
$__warden_signal = fopen('/tmp/.warden/signal', 'w');
fwrite($__warden_signal, 'L');
fflush($__warden_signal);
$__warden_feed = fopen('/tmp/.warden/main.php', 'r');
stream_set_read_buffer($__warden_feed, 0);
$__warden_line = '';
while (($__warden_byte = fread($__warden_feed, 1)) !== false && $__warden_byte !== '' && $__warden_byte !== "\\n") $__warden_line .= $__warden_byte;
fclose($__warden_feed);
$argv = array_merge([$argv[0]], array_map('strval', (array) json_decode($__warden_line, true)));
$argc = count($argv);
$_SERVER['argv'] = $argv;
$_SERVER['argc'] = $argc;
fwrite($__warden_signal, 'S');
fclose($__warden_signal);
unset($__warden_signal, $__warden_feed, $__warden_line, $__warden_byte);
`

/** The PHP CLI: code outside `<?php … ?>` is printed as is, as `php main.php` would. Errors go to stderr. */
export default {
  id: 'php',
  aliases: ['php'],
  program: {
    runner: 'steps',
    sourceFile: 'main.php',
    steps: [{ name: 'run', argv: ['/usr/bin/php', '{source}', '{args}'] }],
    prepare: {
      key: 'php',
      argv: ['/usr/bin/php', '-d', 'auto_prepend_file=/tmp/.warden/prepare.php', '{source}'],
      handoff: 'source',
      sourceFile: 'main.php',
      files: { 'prepare.php': PREPARE },
      prefix: '[{args_items}]\n',
    },
  },
  requires: ['/usr/bin/php'],
  install: 'php-cli',
} satisfies LanguageDescriptor
