import type { Target } from './target.ts';

/** The baseline every ratio is relative to: the load generator straight to the upstream. */
export function createDirectTarget(): Target {
  return {
    id: 'direct',
    label: 'direct (no proxy)',
    start: async (context) => ({
      ok: true,
      started: { url: `${context.upstreamUrl}/`, headers: {}, stop: async () => {} },
    }),
  };
}
