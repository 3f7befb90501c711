import type { LanguageDescriptor } from './language.ts'

/** The PHP CLI: code outside `<?php … ?>` is printed as is, as `php main.php` would. Errors go to stderr. */
export default {
  id: 'php',
  aliases: ['php'],
  program: { runner: 'steps', sourceFile: 'main.php', steps: [{ name: 'run', argv: ['/usr/bin/php', '{source}', '{args}'] }] },
  requires: ['/usr/bin/php'],
  install: 'php-cli',
} satisfies LanguageDescriptor
