import { defineConfig } from 'vitest/config';

// Two projects: `vitest run test/unit` (fast, the `npm test` script) and
// `vitest run test/browser` (the browser tests, `npm run test:browser`: drive Chromium
// against real servers; slow, one file at a time).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.{ts,tsx}'],
          // The codec and client tests need only Node; the React tests choose jsdom
          // with a `// @vitest-environment happy-dom` line.
          environment: 'node',
        },
      },
      {
        test: {
          name: 'browser',
          include: ['test/browser/**/*.test.ts'],
          environment: 'node',
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
