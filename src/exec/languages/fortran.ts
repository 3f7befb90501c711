import type { LanguageDescriptor } from './language.ts'

/** Free-form Fortran (the `.f90` suffix tells gfortran so), Fortran 2018 with GNU extensions. */
export default {
  id: 'fortran',
  aliases: ['f90', 'fortran', 'f95', 'f03', 'f08', 'gfortran'],
  program: {
    runner: 'steps',
    sourceFile: 'main.f90',
    artifacts: ['main'],
    steps: [
      { name: 'compile', argv: ['/usr/bin/gfortran', '-O2', '-pipe', '-o', '{dir}/main', '{source}'] },
      { name: 'run', argv: ['{dir}/main', '{args}'] },
    ],
  },
  requires: ['/usr/bin/gfortran'],
  install: 'gfortran',
} satisfies LanguageDescriptor
