/**
 * How much the fuzz properties run: bounded for `npm test` (a few minutes in all, both drivers), longer
 * under `npm run fuzz` (FUZZ_RUNS scales every property). The seed is fixed unless FUZZ_SEED is given, so
 * a failure replays; fast-check names the seed and the shrunk case when one fails.
 */
const scale = Number(process.env.FUZZ_RUNS ?? 1)

export const FUZZ = {
  seed: Number(process.env.FUZZ_SEED ?? 20_261_207),
  routeRuns: Math.round(250 * scale),
  frameRuns: Math.round(40 * scale),
  timeoutMs: Math.round(10 * 60_000 * Math.max(1, scale)),
} as const
