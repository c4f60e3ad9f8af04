import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The attack catalogue prints its case count after every run that includes it.
    reporters: ['default', './test/security/catalogue-reporter.ts'],
    // Integration tests start real servers; two cores, so keep parallelism modest.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
