import { z } from 'zod';
import type { PolicyLimits } from '../limits.ts';
import { documentSchema, mode, schemaParts } from './common.ts';

/*
 * Filter: a check of the user's own, a TypeScript (or JavaScript) module
 * exporting one function over a read-only view of the call and the
 * document's `config`. The source is inline (`source`) or a file of the
 * policy folder (`sourceFile`), which the policy server reads and inlines
 * before serving: a sidecar always gets `source`. Whether the source compiles
 * and exports a function is checked apart from this schema (it needs the
 * sandbox engine, loaded asynchronously): src/policy/filter-sources.ts.
 */

const FILTER_STAGES = ['after-authn', 'after-authz', 'before-validate'] as const;
export type FilterStage = (typeof FILTER_STAGES)[number];

/** Budget bounds: the default fits a check that looks at a few headers; the caps keep one document from costing a sidecar much. */
const FILTER_BUDGET = Object.freeze({ defaultCpuMs: 10, maxCpuMs: 1000, defaultMemoryMiB: 16, maxMemoryMiB: 64 });

/** Longest inline source (characters): within the document size limit, past the limit on other strings. */
export const MAX_FILTER_SOURCE = 200_000;

/** A file name inside the sidecar's secrets folder: no path, no dot files (Kubernetes keeps its own `..data` links there). */
const SECRET_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;
const MAX_FILTER_SECRETS = 8;
const SOURCE_FILE_RE = /^(?!\/)(?!.*(^|\/)\.\.?(\/|$))[A-Za-z0-9._/-]+\.(ts|mts|js|mjs)$/;

function filterSpecSchema(limits: PolicyLimits) {
  const p = schemaParts(limits);
  return z
    .strictObject({
      selector: p.selector,
      mode,
      stage: z
        .enum(FILTER_STAGES)
        .default('after-authz')
        .describe('Where the check runs in the inbound chain: after authn (claims verified), after authz (the caller is allowed), or just before validate (last, before the body is read).'),
      source: z.string().min(1).max(MAX_FILTER_SOURCE).optional().describe('The check: a module whose default export (or export `check`) is `(call, config) => verdict`.'),
      sourceFile: z
        .string()
        .max(255)
        .regex(SOURCE_FILE_RE, 'expected a relative path inside the policy folder ending in .ts, .mts, .js or .mjs, without "." or ".." segments')
        .optional()
        .describe('A file of the policy folder holding the check, relative to it; the policy server reads it and serves it as `source`.'),
      failureMode: z.enum(['deny', 'allow']).default('deny').describe('What a call gets when the check throws, overruns its budget or runs out of memory: deny (filter.user_check_failed) or allow.'),
      config: z
        .record(z.string(), z.unknown())
        .default({})
        .describe("Free-form settings handed to the check as its second argument (frozen); not secret: it is in the policy and the sidecar's config dump."),
      secrets: z
        .array(z.string().regex(SECRET_NAME_RE, 'expected a file name of the sidecar\'s userFilters.secretsDir: letters, digits, "-", "_", "." (not starting with ".")'))
        .max(MAX_FILTER_SECRETS)
        .default([])
        .describe(
          'Secret files of the sidecar (userFilters.secretsDir) this check may sign with, by name, through meshgate.hmacSha256Secret(name, message). The key never enters the sandbox; a name not listed here, or not in the folder, makes the call throw.',
        ),
      budget: z
        .strictObject({
          cpuMs: z.number().int().min(1).max(FILTER_BUDGET.maxCpuMs).default(FILTER_BUDGET.defaultCpuMs).describe('Time one call of the check may run.'),
          memoryMiB: z.number().int().min(1).max(FILTER_BUDGET.maxMemoryMiB).default(FILTER_BUDGET.defaultMemoryMiB).describe("The check's heap."),
        })
        .prefault({})
        .describe('What one check may spend; past it the call gets failureMode.'),
    })
    .refine((spec) => spec.source !== undefined || spec.sourceFile !== undefined, 'expected source (inline) or sourceFile (a file of the policy folder)');
}

export function filterSchema(limits: PolicyLimits) {
  return documentSchema('Filter', schemaParts(limits), filterSpecSchema(limits));
}

export type FilterDocument = z.output<ReturnType<typeof filterSchema>>;
