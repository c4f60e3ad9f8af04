import { ConfigError } from '../config/load.ts';
import { nodeUtil } from '../core/node-builtins.ts';
import { INJECT_HELP } from './inject-help.ts';
import { IPTABLES_HELP } from './iptables-help.ts';
import { CA_ROLE, POLICY_SERVER_ROLE, SIDECAR_ROLE } from './roles.ts';
import { runRole, untilSignal } from './run-role.ts';
import { UsageError } from './usage-error.ts';

const { parseArgs } = nodeUtil;

const HELP: Record<string, string> = {
  '': `meshgate: a service-mesh sidecar proxy and its control plane

Usage: meshgate <command> [options]

Commands:
  sidecar --config FILE   run the sidecar (outbound :15001, inbound :15006, admin :15000)
  ca --config FILE        run the certificate authority (gRPC :15012, admin :15013)
  policy-server --config FILE
                          serve policies and the service registry to sidecars (gRPC :15010, admin :15014)
  certs init [--out DIR]  create a root CA, token-signing key and ca.yaml for a new trust domain (in ./certs)
  certs webhook           the injector's HTTPS certificate, signed by that CA
  token --sa NAME --ns NS mint a bootstrap token for a workload outside Kubernetes
  inject -f FILE          add the sidecar to Kubernetes manifests (to stdout)
  injector --config FILE  run the Kubernetes admission webhook that adds the sidecar (HTTPS :15017)
  policy check DIR        validate policy documents offline (exit 1 when one is invalid)
  policy explain ...      allow or deny for one call, with the trail of rules (exit 1 on deny)
  iptables [--dry-run|--cleanup]
                          install (or print, or remove) a pod's redirect rules to the sidecar
  policy diff ...         replay an access log against two policy folders; list changed outcomes
  demo                    run a local mesh on loopback and print calls as they happen
  help [command]          show help

Run 'meshgate <command> --help' for a command's options.`,
  sidecar: `Usage: meshgate sidecar --config FILE [--workload-host HOST]

Runs one sidecar next to a workload. FILE is YAML; see "Configuration reference"
in the README. Relative paths in it resolve against FILE's folder.
A bad file exits with status 2 and one line per problem: file, field, problem.
SIGTERM or SIGINT drains: no new calls, in-flight calls finish (drain.timeout), exit 0.

Options:
  --workload-host HOST  address peers dial to reach this workload (workload.address
                        becomes HOST:<inbound port>); injected pods pass their pod IP`,
  ...INJECT_HELP,
  ca: `Usage: meshgate ca --config FILE

Runs the meshgate CA: signs workload CSRs over gRPC + TLS for callers that
prove who they are with a bootstrap token (or, to renew, their current
certificate), and serves the trust bundle. FILE is YAML; relative paths in it
resolve against FILE's folder. See "Workload identity (CA)" in the README.
A bad file exits with status 2 and one line per problem: file, field, problem.
SIGTERM or SIGINT stops it (in-flight signings finish, exit 0).`,
  'policy-server': `Usage: meshgate policy-server --config FILE

Runs the policy server: loads and validates the policy documents of a folder
(watched: a change reaches subscribed sidecars in well under a second),
streams each sidecar the snapshot of its workload over mutual TLS (the
workload is the SPIFFE ID of the sidecar's client certificate), records its
ACKs and NACKs, and serves the service registry (sidecars register their
endpoint while subscribed; static entries for the rest). The server is a mesh
workload itself: it gets and renews its certificate from 'meshgate ca' as
spiffe://<trust-domain>/ns/meshgate-system/sa/policy-server. Replicas pointed
at one folder serve the same versions; replicas that share no disk (pods) use
'store: redis' for the registry and admin writes. The admin listener has /live, /ready,
/metrics, /config_dump and the admin API (/api/v1/...).
FILE is YAML; relative paths in it resolve against FILE's folder.
A bad file exits with status 2 and one line per problem: file, field, problem.
SIGTERM or SIGINT stops it: streams end with UNAVAILABLE (sidecars fail over), exit 0.`,
  certs: `Usage: meshgate certs init [--out DIR] [options]
       meshgate certs webhook [--dir DIR] [options]

init creates the CA material of a new trust domain in DIR (default ./certs): root-ca.pem/.key,
intermediate-ca.pem/.key (with --intermediate), token-signing.key and
token-signing.pub.pem (ES256, for 'meshgate token'), trust-bundle.pem and a
ready-to-use ca.yaml. Private keys are written with mode 0600. An existing
file stops the run (exit 2) unless --force is given.

Options:
  --out DIR                     output folder (created if missing; default certs)
  --trust-domain NAME           SPIFFE trust domain (default cluster.local)
  --key-type ecdsa-p256|rsa-2048  CA key type (default ecdsa-p256)
  --intermediate                sign workloads with an intermediate, so the root key can go offline
  --root-ttl DURATION           root lifetime, e.g. 87600h (default, ten years)
  --force                       overwrite existing files

webhook writes injector.pem and injector.key into DIR (default ./certs): the
HTTPS certificate of 'meshgate injector' for the DNS names of its Service,
signed by DIR's CA (the intermediate when there is one). The webhook's
caBundle is then DIR/trust-bundle.pem.

Options:
  --dir DIR                     a 'certs init' folder (default certs)
  --service NAME                Service of the injector (default meshgate-injector)
  --namespace NS                its namespace (default meshgate-system)
  --ttl DURATION                lifetime (default 8760h, never past the CA's)
  --force                       overwrite existing files`,
  token: `Usage: meshgate token --sa NAME --ns NAMESPACE [options]

Prints a bootstrap token (a JWT shaped like a Kubernetes service-account token)
for the workload spiffe://<trust-domain>/ns/NAMESPACE/sa/NAME. A sidecar outside
Kubernetes presents it once; afterwards it renews with its certificate.

Options:
  --key FILE           token-signing private key (default ./certs/token-signing.key)
  --ttl DURATION       token lifetime (default 24h)
  --issuer NAME        iss claim; must be in the CA's tokens.issuers (default meshgate)
  --audience NAME      aud claim; must be in the CA's tokens.audiences (default meshgate-ca)`,
  policy: `Usage: meshgate policy check DIR|FILE

Validates policy documents offline, with the checks the policy server runs:
every *.yaml / *.yml under DIR (recursively, in sorted path order; names that
start with "." are skipped), or one FILE. Each problem is one line on stderr:
  FILE: document N (kind/namespace/name): field.path: reason
where N counts the documents of a file from 0. An invalid document is
rejected alone; a key defined twice keeps its first copy. Exits 1 when any
document is invalid, otherwise prints "N documents valid" and exits 0.
A missing or unreadable DIR or FILE (or one that is not a regular file) exits 2.

Also: meshgate policy explain --help, meshgate policy diff --help.`,
  'policy explain': `Usage: meshgate policy explain --policies DIR --from PRINCIPAL --to SERVICE[.NS]
         --method M --path P [--header k=v]... [--claims JSON | --jwt TOKEN] [--ip ADDR]
         [--at DATE]

Evaluates one inbound call against the policy documents of DIR with the code
the sidecar runs: the documents that apply to the workload SERVICE.NS (NS
defaults to "default"), the path normalized as the sidecar does, then IP
access (only with --ip), authentication (--jwt: verified by the
RequestAuthentication rules; --claims: taken as verified, request principal
iss/sub) and authorization. Invalid documents are reported on stderr and do
not apply. Prints "ALLOW" or "DENY (code) by rule", then one line per rule
that matched or did not. Exits 0 on allow, 1 on deny, 2 on a usage error.

Options:
  --from PRINCIPAL        peer SPIFFE ID (omit, or "none", for a caller without one)
  --method M              HTTP method (default GET)
  --authority HOST        authority as sent (default SERVICE.NS)
  --header k=v            request header, repeatable (x-meshgate-version=v1 pins a
                          version: the caller's Route, read from --from, decides first)
  --at DATE               the instant of the call, ISO 8601 (default now): brown-out
                          windows, retired versions and token expiry are judged at it
  --allow-when-no-policy  the sidecar's authorization.allowWhenNoPolicy switch
  --json                  print the decision and the trail as JSON`,
  'policy diff': `Usage: meshgate policy diff --old DIR --new DIR --requests ACCESS_LOG

Replays the inbound calls of a sidecar access log (its JSON lines) against two
policy folders, each evaluated as 'meshgate policy explain' does, and lists
the calls whose outcome changes (allow -> deny, deny -> allow) with the rule
on each side, then "N calls replayed, M changed". Lines that are not JSON or
not inbound calls are counted and skipped. The log keeps no credentials:
replayed calls carry no request principal. Exits 0 when nothing changed,
1 when something did, 2 on a usage error.

Options:
  --allow-when-no-policy  the sidecar's authorization.allowWhenNoPolicy switch
  --json                  print the replay count and the changed calls as JSON`,
  iptables: IPTABLES_HELP,
  demo: `Usage: meshgate demo [--calls N]

Starts two echo services, each behind its own sidecar on 127.0.0.1, and sends
calls between them through both sidecars, printing each as it happens.

Options:
  --calls N  how many calls to play, 1 to 1000 (default 8)`,
};

type Command = (args: string[]) => Promise<number>;

const COMMANDS: Record<string, Command> = {
  sidecar: (args) => runRole(SIDECAR_ROLE, args),
  ca: (args) => runRole(CA_ROLE, args),
  'policy-server': (args) => runRole(POLICY_SERVER_ROLE, args),
  certs: runCerts,
  token: runToken,
  policy: runPolicy,
  iptables: async (args) => (await import('./iptables.ts')).runIptables(args),
  inject: async (args) => (await import('./inject-commands.ts')).runInject(args),
  injector: async (args) => {
    const running = await (await import('./inject-commands.ts')).startInjectorCommand(args);
    return untilSignal(running.logger, running.stop);
  },
  demo: async (args) => {
    const calls = demoCalls(args);
    return (await import('../demo/demo.ts')).runDemo(calls);
  },
  help: async (args) => {
    process.stdout.write(`${HELP[args[0] ?? ''] ?? HELP['']!}\n`);
    return 0;
  },
};

async function runCerts(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'webhook') return (await import('./inject-commands.ts')).runCertsWebhook(rest);
  if (sub !== 'init') throw new UsageError(`meshgate certs: expected "init" or "webhook", got ${sub === undefined ? 'nothing' : `"${sub}"`} (try meshgate certs --help)`);
  const { values } = parseArgs({
    args: rest,
    options: {
      out: { type: 'string', default: 'certs' },
      'trust-domain': { type: 'string', default: 'cluster.local' },
      'key-type': { type: 'string', default: 'ecdsa-p256' },
      intermediate: { type: 'boolean', default: false },
      'root-ttl': { type: 'string', default: '87600h' },
      force: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const keyType = values['key-type'];
  if (keyType !== 'ecdsa-p256' && keyType !== 'rsa-2048') throw new UsageError(`meshgate certs init: --key-type: expected ecdsa-p256 or rsa-2048, got "${keyType}"`);
  const [{ isValidTrustDomain }, rootTtlMs] = await Promise.all([import('../core/spiffe-id.ts'), parseDurationFlag('certs init', 'root-ttl', values['root-ttl'])]);
  if (!isValidTrustDomain(values['trust-domain'])) {
    throw new UsageError(`meshgate certs init: --trust-domain: expected lower-case letters, digits, dots and dashes, got "${values['trust-domain']}"`);
  }
  const [{ writeCertsInit }, { FileExistsError }, { systemClock }] = await Promise.all([import('../ca/certs-init.ts'), import('../ca/material-files.ts'), import('../core/clock.ts')]);
  let written: string[];
  try {
    written = await writeCertsInit({
      outDir: values.out,
      trustDomain: values['trust-domain'],
      keyType,
      intermediate: values.intermediate,
      rootTtlMs,
      force: values.force,
      clock: systemClock,
    });
  } catch (err) {
    if (err instanceof FileExistsError) throw new UsageError(`meshgate certs init: ${err.message}`);
    throw err;
  }
  for (const file of written) process.stdout.write(`wrote ${file}\n`);
  return 0;
}

async function runToken(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      sa: { type: 'string' },
      ns: { type: 'string' },
      key: { type: 'string', default: './certs/token-signing.key' },
      ttl: { type: 'string', default: '24h' },
      issuer: { type: 'string', default: 'meshgate' },
      audience: { type: 'string', default: 'meshgate-ca' },
    },
    strict: true,
  });
  if (!values.sa) throw new UsageError('meshgate token: missing --sa NAME');
  if (!values.ns) throw new UsageError('meshgate token: missing --ns NAMESPACE');
  const ttlMs = await parseDurationFlag('token', 'ttl', values.ttl);
  const [{ readTextFile }, { mintToken, MintTokenError }, { systemClock }] = await Promise.all([import('../config/text-file.ts'), import('../ca/token-mint.ts'), import('../core/clock.ts')]);
  // A PEM key is a few KiB: the cap only stops a wrong path (a device, a huge file) from being read whole.
  const key = await readTextFile(values.key, 65_536);
  if (!key.ok) throw new UsageError(`meshgate token: ${values.key}: ${key.reason}`);
  const keyPem = key.text;
  try {
    const token = await mintToken({ keyPem, namespace: values.ns, serviceAccount: values.sa, ttlMs, issuer: values.issuer, audience: values.audience, clock: systemClock });
    process.stdout.write(`${token}\n`);
  } catch (err) {
    if (err instanceof MintTokenError) throw new UsageError(`meshgate token: ${err.message === 'not a PEM private key' ? `${values.key}: ${err.message}` : err.message}`);
    throw err;
  }
  return 0;
}

async function runPolicy(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'check') return runPolicyCheck(rest);
  if (sub === 'explain') return (await import('./policy-tools.ts')).runPolicyExplain(rest);
  if (sub === 'diff') return (await import('./policy-tools.ts')).runPolicyDiff(rest);
  throw new UsageError(`meshgate policy: expected "check", "explain" or "diff", got ${sub === undefined ? 'nothing' : `"${sub}"`} (try meshgate policy --help)`);
}

async function runPolicyCheck(args: string[]): Promise<number> {
  const { positionals } = parseArgs({ args, options: {}, allowPositionals: true, strict: true });
  const [target, extra] = positionals;
  if (target === undefined) throw new UsageError('meshgate policy check: missing DIR');
  if (extra !== undefined) throw new UsageError(`meshgate policy check: expected one DIR or FILE, got ${positionals.length}`);
  const [{ stat }, { parsePolicyFolder, parsePolicyText }, { formatPolicyError }, { readTextFile }, { DEFAULT_POLICY_LIMITS }] = await Promise.all([
    import('node:fs/promises'),
    import('../policy/parse-documents.ts'),
    import('../policy/policy-error.ts'),
    import('../config/text-file.ts'),
    import('../policy/limits.ts'),
  ]);
  let result: Awaited<ReturnType<typeof parsePolicyFolder>>;
  try {
    if ((await stat(target)).isDirectory()) result = await parsePolicyFolder(target);
    else {
      // Not readFile: a FIFO would block it forever and /dev/zero never ends.
      const read = await readTextFile(target, DEFAULT_POLICY_LIMITS.maxFileBytes);
      if (!read.ok) throw new UsageError(`meshgate policy check: ${target}: ${read.reason}`);
      result = parsePolicyText(read.text, target);
    }
  } catch (err) {
    if (err instanceof UsageError) throw err;
    // Only file-system errors are the user's to fix; anything else is a bug and keeps its stack.
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code !== 'string') throw err;
    throw new UsageError(`meshgate policy check: ${target}: ${code === 'ENOENT' ? 'no such file or folder' : `cannot read (${code})`}`);
  }
  // Filter sources: read from the folder and compiled in the sandbox, as the policy server does (loaded only for a Filter).
  const [{ checkFilterDocuments }, { createSandboxLoader }, { dirname }] = await Promise.all([import('../policy/filter-sources.ts'), import('../sandbox/quickjs-sandbox.ts'), import('node:path')]);
  const folder = (await stat(target)).isDirectory() ? target : dirname(target);
  result = await checkFilterDocuments(result, { sandbox: createSandboxLoader(), folder });
  for (const error of result.errors) process.stderr.write(`${formatPolicyError(error)}\n`);
  if (result.errors.length > 0) return 1;
  const count = result.documents.length;
  process.stdout.write(`${count} ${count === 1 ? 'document' : 'documents'} valid\n`);
  return 0;
}

/** `demo --calls N`: a bad count is a usage error, not a silent default. */
function demoCalls(args: string[]): number {
  const { values } = parseArgs({ args, options: { calls: { type: 'string', default: '8' } }, strict: true });
  const calls = Number(values.calls);
  if (!Number.isInteger(calls) || calls < 1 || calls > 1000) throw new UsageError(`meshgate demo: --calls: expected a whole number from 1 to 1000, got "${values.calls}"`);
  return calls;
}

async function parseDurationFlag(command: string, flag: string, text: string): Promise<number> {
  const { duration } = await import('../config/durations.ts');
  const parsed = duration.safeParse(text);
  if (!parsed.success || parsed.data <= 0) throw new UsageError(`meshgate ${command}: --${flag}: expected a duration like 30m, 24h or 87600h, got "${text}"`);
  return parsed.data;
}

export async function main(argv: string[]): Promise<number> {
  // A worker of a sidecar with `workers: N` runs this same entry point (node:cluster forks it); the variable is
  // src/sidecar/workers/protocol.ts's WORKER_ENV, read here without importing it so no other command loads it.
  if (process.env.MESHGATE_SIDECAR_WORKER !== undefined) return (await import('./run-worker.ts')).runSidecarWorker();
  const [command = 'help', ...rest] = argv;
  if (command === '--help' || command === '-h') return COMMANDS.help!([]);
  if (command === '--version') {
    process.stdout.write('meshgate 0.1.0\n');
    return 0;
  }
  const run = COMMANDS[command];
  try {
    if (!run) throw new UsageError(`meshgate: unknown command "${command}" (try meshgate --help)`);
    if (rest.includes('--help') || rest.includes('-h')) return COMMANDS.help!([HELP[`${command} ${rest[0]}`] ? `${command} ${rest[0]}` : command]);
    return await run(rest);
  } catch (err) {
    if (err instanceof ConfigError || err instanceof UsageError) {
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`meshgate ${command}: ${(err as Error).message.split('\n')[0]}\n`);
      return 2;
    }
    if ((err as { code?: string }).code === 'EADDRINUSE') {
      process.stderr.write(`meshgate ${command}: address in use: ${(err as { address?: string; port?: number }).address}:${(err as { port?: number }).port}\n`);
      return 1;
    }
    throw err;
  }
}
