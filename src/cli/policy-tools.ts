import { parseArgs } from 'node:util';
import { readTextFile } from '../config/text-file.ts';
import { checkFilterDocuments } from '../policy/filter-sources.ts';
import { parsePolicyFolder } from '../policy/parse-documents.ts';
import { formatPolicyError } from '../policy/policy-error.ts';
import type { PolicyDocument } from '../policy/types.ts';
import { createSandboxLoader } from '../sandbox/quickjs-sandbox.ts';

/*
 * `meshgate policy explain` and `meshgate policy diff` (logic: src/policy-tools/explain.ts
 * and src/policy-tools/diff.ts). A usage problem is one line on stderr and exit 2.
 */

function usage(command: string, message: string): number {
  process.stderr.write(`meshgate policy ${command}: ${message}\n`);
  return 2;
}

/** Thrown for a problem the user fixes (missing folder): one line, exit 2. */
class ToolUsage extends Error {}

/** The valid documents of DIR; invalid ones are reported on stderr (they do not apply, as on the sidecar). */
async function loadPolicies(flag: string, dir: string): Promise<PolicyDocument[]> {
  let parsed: Awaited<ReturnType<typeof parsePolicyFolder>>;
  try {
    parsed = await parsePolicyFolder(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code !== 'string') throw err;
    throw new ToolUsage(`--${flag} ${dir}: ${code === 'ENOENT' ? 'no such folder' : code === 'ENOTDIR' ? 'not a folder' : `cannot read (${code})`}`);
  }
  parsed = await checkFilterDocuments(parsed, { sandbox: createSandboxLoader(), folder: dir });
  for (const error of parsed.errors) process.stderr.write(`${formatPolicyError(error)}\n`);
  return parsed.documents.map((d) => d.document);
}

export async function runPolicyExplain(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      policies: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      method: { type: 'string', default: 'GET' },
      path: { type: 'string' },
      authority: { type: 'string' },
      header: { type: 'string', multiple: true, default: [] },
      claims: { type: 'string' },
      jwt: { type: 'string' },
      ip: { type: 'string' },
      at: { type: 'string' },
      'allow-when-no-policy': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const fail = (message: string) => usage('explain', message);
  if (!values.policies) return fail('missing --policies DIR');
  if (!values.to) return fail('missing --to SERVICE[.NS]');
  if (!values.path) return fail('missing --path P');
  if (values.claims !== undefined && values.jwt !== undefined) return fail('--claims and --jwt exclude each other');
  const [{ explainCall, parseWorkload, verdictLine, formatTrail }, { isIP }] = await Promise.all([import('../policy-tools/explain.ts'), import('node:net')]);
  const to = parseWorkload(values.to);
  if (!to) return fail(`--to: expected SERVICE or SERVICE.NAMESPACE (lower-case DNS labels), got "${values.to}"`);
  if (!values.path.startsWith('/')) return fail(`--path: expected a path starting with /, got "${values.path}"`);
  if (!/^[A-Za-z][A-Za-z0-9-]{0,31}$/.test(values.method)) return fail(`--method: expected an HTTP method, got "${values.method}"`);
  if (values.ip !== undefined && isIP(values.ip) === 0) return fail(`--ip: expected an IPv4 or IPv6 address, got "${values.ip}"`);
  const at = values.at === undefined ? undefined : parseInstant(values.at);
  if (Number.isNaN(at)) return fail(`--at: expected an ISO 8601 date like 2026-06-30 or 2026-06-30T10:00:00Z, got "${values.at}"`);
  const headers: Record<string, string> = {};
  for (const h of values.header) {
    const eq = h.indexOf('=');
    if (eq <= 0) return fail(`--header: expected k=v, got "${h}"`);
    headers[h.slice(0, eq).trim().toLowerCase()] = h.slice(eq + 1);
  }
  let claims: Record<string, unknown> | undefined;
  if (values.claims !== undefined) {
    try {
      claims = JSON.parse(values.claims) as Record<string, unknown>;
    } catch {
      claims = undefined;
    }
    if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) return fail('--claims: expected a JSON object, e.g. {"iss":"https://idp.example","sub":"alice"}');
  }
  let documents: PolicyDocument[];
  try {
    documents = await loadPolicies('policies', values.policies);
  } catch (err) {
    if (err instanceof ToolUsage) return fail(err.message);
    throw err;
  }
  const from = values.from === undefined || values.from === '' || values.from === 'none' ? undefined : values.from;
  const explanation = await explainCall(
    documents,
    {
      from,
      to,
      method: values.method,
      path: values.path,
      headers,
      ...(values.authority !== undefined ? { authority: values.authority } : {}),
      ...(values.ip !== undefined ? { address: values.ip } : {}),
      ...(claims ? { claims } : {}),
      ...(values.jwt !== undefined ? { jwt: values.jwt } : {}),
    },
    { allowWhenNoPolicy: values['allow-when-no-policy'], ...(at !== undefined ? { at } : {}) },
  );
  if (values.json) process.stdout.write(`${JSON.stringify({ verdict: verdictLine(explanation), ...explanation, code: explanation.code ?? null, rule: explanation.rule ?? null }, null, 2)}\n`);
  else process.stdout.write(`${[verdictLine(explanation), ...formatTrail(explanation.trail)].join('\n')}\n`);
  return explanation.allow ? 0 : 1;
}

/** An instant as Route dates are written (a bare date is midnight UTC); NaN for anything else. */
function parseInstant(text: string): number {
  if (!/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?$/.test(text)) return Number.NaN;
  return Date.parse(text.length === 10 ? `${text}T00:00:00Z` : text);
}

export async function runPolicyDiff(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      old: { type: 'string' },
      new: { type: 'string' },
      requests: { type: 'string' },
      'allow-when-no-policy': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const fail = (message: string) => usage('diff', message);
  if (!values.old) return fail('missing --old DIR');
  if (!values.new) return fail('missing --new DIR');
  if (!values.requests) return fail('missing --requests ACCESS_LOG');
  // Not readFile: a FIFO would block it forever and /dev/zero never ends. 256 MiB of log is far more than one replay needs.
  const requests = await readTextFile(values.requests, 256 * 1_048_576);
  if (!requests.ok) return fail(`--requests ${values.requests}: ${requests.reason}`);
  const text = requests.text;
  let oldDocs: PolicyDocument[];
  let newDocs: PolicyDocument[];
  try {
    oldDocs = await loadPolicies('old', values.old);
    newDocs = await loadPolicies('new', values.new);
  } catch (err) {
    if (err instanceof ToolUsage) return fail(err.message);
    throw err;
  }
  const { parseAccessLog, diffPolicies, formatChange, summaryLine } = await import('../policy-tools/diff.ts');
  const log = parseAccessLog(text);
  const diff = await diffPolicies(oldDocs, newDocs, log.calls, { allowWhenNoPolicy: values['allow-when-no-policy'] });
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ replayed: diff.replayed, changed: diff.changed, skipped: { notJson: log.notJson, notInbound: log.notInbound } }, null, 2)}\n`);
  } else {
    for (const change of diff.changed) process.stdout.write(`${formatChange(change)}\n`);
    process.stdout.write(`${summaryLine(diff, log)}\n`);
  }
  return diff.changed.length > 0 ? 1 : 0;
}
