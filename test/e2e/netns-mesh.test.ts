import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { mintToken } from '../../src/ca/token-mint.ts';
import { createCaMaterialDir } from '../helpers/ca-fixture.ts';
import { eventually } from '../helpers/eventually.ts';
import { FRONTEND } from '../helpers/mesh.ts';
import { netnsUnavailable, sweepNetns } from '../helpers/netns.ts';
import type { OtlpReceiver } from '../helpers/otlp-receiver.ts';
import { startOtlpReceiver } from '../helpers/otlp-receiver.ts';
import { tcpPayloads } from '../helpers/pcap.ts';
import type { Pod, PodNetwork, PodProcess } from '../helpers/pod-network.ts';
import { createPodNetwork, POD_NET_PREFIX } from '../helpers/pod-network.ts';
import { policyYaml } from '../helpers/policy-yaml.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';

/*
 * Pods as network namespaces, end to end: each pod has a veth on a bridge,
 * its own app (uid 1000, no proxy settings, no meshgate port anywhere) and its
 * own sidecar (uid 1337) behind the real `meshgate iptables` rules; the CA and
 * the policy server run in a control-plane namespace; names resolve through
 * each namespace's hosts file. Needs root, `ip netns`, iptables and tcpdump
 * (CI has them); elsewhere it says why it is skipped.
 *
 *   cp       10.254.1.2  meshgate ca :15012, meshgate policy-server :15010, OTLP relay :4318
 *   frontend 10.254.1.3  app + sidecar
 *   orders   10.254.1.4  app (:8080 and :9090, probe port :8081) + sidecar; tcpdump on eth0
 *   external 10.254.1.5  outside the mesh: HTTP :80, a client-first TCP service :5432, a server-first one :3306
 *   payments 10.254.1.6  app + sidecar
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MESHGATE = `${ROOT}bin/meshgate.js`;
const POD_APP = `${ROOT}test/fixtures/pod-app.ts`;
const APP_UID = 1000;
const PROXY_UID = 1337;
const HOSTS = '10.254.1.4 orders.shop orders-admin.shop\n10.254.1.6 payments.shop\n10.254.1.5 external.example\n';

const skip = await netnsUnavailable(['iptables', 'iptables-restore', 'tcpdump', 'setpriv']);
if (skip) console.log(`netns-mesh.test.ts skipped: ${skip}`);

const policies = {
  'shop/orders.yaml': [
    policyYaml('AuthorizationPolicy', 'frontend-to-orders', {
      selector: { services: ['orders'] },
      action: 'ALLOW',
      rules: [{ name: 'reads', from: [{ principals: [FRONTEND] }], to: [{ methods: ['GET'], paths: ['/orders/*', '/limited/*'] }] }],
    }),
    policyYaml('RateLimitPolicy', 'orders-limits', {
      selector: { services: ['orders'] },
      rules: [{ name: 'limited', match: { paths: ['/limited/*'] }, key: ['source.principal'], limit: { requests: 2, per: '1h' } }],
    }),
  ].join('---\n'),
  'shop/payments.yaml': policyYaml('AuthorizationPolicy', 'frontend-to-payments', {
    selector: { services: ['payments'] },
    action: 'ALLOW',
    rules: [{ name: 'any', from: [{ principals: [FRONTEND] }] }],
  }),
};

interface HttpReply {
  status?: number;
  headers?: Record<string, string>;
  body?: string;
  error?: string;
}

describe.skipIf(skip !== undefined)('pods as network namespaces: interception end to end', () => {
  let net0: PodNetwork;
  let work: string;
  let receiver: OtlpReceiver;
  let otlpRelay: net.Server;
  const sidecars = new Map<string, PodProcess>();
  let tcpdump: PodProcess;
  const pods = {} as { cp: Pod; frontend: Pod; orders: Pod; external: Pod; payments: Pod };
  const started = performance.now();

  const controls = new Map<string, Client>();
  /** Asks the app of `pod` (over its control socket) to make a call from inside its namespace. */
  const control = async <T>(pod: string, what: 'http' | 'h2' | 'tcp', body: object): Promise<T> => {
    let client = controls.get(pod);
    if (!client) controls.set(pod, (client = new Client('http://app', { socketPath: path.join(work, 'sockets', `${pod}.sock`) })));
    const res = await client.request({ path: `/${what}`, method: 'POST', body: JSON.stringify(body) });
    return (await res.body.json()) as T;
  };
  const appHttp = (pod: string, url: string, headers: Record<string, string> = {}) => control<HttpReply>(pod, 'http', { url, headers });
  const appTcp = (pod: string, host: string, port: number, send: string | undefined, waitMs: number, until?: string) =>
    control<{ received: string; closed?: boolean; error?: string }>(pod, 'tcp', { host, port, send, waitMs, until });
  const step = (what: string) => console.log(`${((performance.now() - started) / 1000).toFixed(1)} s: ${what}`);
  /** A pod's sidecar metrics, read by its app over loopback (never captured). */
  const metricsOf = async (pod: string) => parsePrometheusText((await appHttp(pod, 'http://127.0.0.1:15000/metrics')).body ?? '');

  beforeAll(async () => {
    await sweepNetns(POD_NET_PREFIX, 10 * 60_000);
    work = await mkdtemp(path.join(tmpdir(), 'meshgate-netns-'));
    await chmod(work, 0o755);
    await mkdir(path.join(work, 'sockets'), { mode: 0o777 });
    await chmod(path.join(work, 'sockets'), 0o777);
    receiver = await startOtlpReceiver();
    // The receiver listens on the test's loopback; a relay in the control-plane namespace reaches it through a file socket.
    const receiverPort = Number(new URL(receiver.httpUrl).port);
    otlpRelay = net.createServer((conn) => {
      const upstream = net.connect(receiverPort, '127.0.0.1');
      conn.pipe(upstream).pipe(conn);
      conn.on('error', () => upstream.destroy());
      upstream.on('error', () => conn.destroy());
    });
    await new Promise<void>((resolve) => otlpRelay.listen(path.join(work, 'otlp.sock'), resolve));

    net0 = await createPodNetwork();
    pods.cp = await net0.addPod('cp', 2, HOSTS);
    pods.frontend = await net0.addPod('fe', 3, HOSTS);
    pods.orders = await net0.addPod('or', 4, HOSTS);
    pods.external = await net0.addPod('ext', 5, HOSTS);
    pods.payments = await net0.addPod('pay', 6, HOSTS);

    // Control plane: the CA and the policy server, each the real CLI.
    step('namespaces ready');
    const caDir = await createCaMaterialDir();
    await chmod(caDir, 0o755);
    await chmod(path.join(caDir, 'trust-bundle.pem'), 0o644);
    const tokenKeyPem = await readFile(path.join(caDir, 'token-signing.key'), 'utf8');
    const token = async (ns: string, sa: string): Promise<string> => {
      const file = path.join(work, `${sa}.token`);
      await writeFile(
        file,
        await mintToken({
          keyPem: tokenKeyPem,
          namespace: ns,
          serviceAccount: sa,
          ttlMs: 3_600_000,
          issuer: 'meshgate',
          audience: 'meshgate-ca',
          clock: { now: () => Date.now(), monotonic: () => performance.now() },
        }),
        { mode: 0o644 },
      );
      return file;
    };
    const ca = net0.spawn(pods.cp, process.execPath, [MESHGATE, 'ca', '--config', path.join(caDir, 'ca.yaml')]);
    const caUp = ca.line((l) => l.includes('meshgate ca listening'), 60_000).then(() => step('CA listening'));
    const policyFolder = path.join(work, 'policies');
    for (const [file, text] of Object.entries(policies)) {
      await mkdir(path.dirname(path.join(policyFolder, file)), { recursive: true });
      await writeFile(path.join(policyFolder, file), text);
    }
    const trust = { address: '10.254.1.2:15012', trustBundleFile: path.join(caDir, 'trust-bundle.pem'), serverName: 'meshgate-ca' };
    const psConfig = path.join(work, 'policy-server.yaml');
    await writeFile(
      psConfig,
      stringify({
        identity: { trustDomain: 'cluster.local', ca: trust, tokenFile: await token('meshgate-system', 'policy-server') },
        listen: { address: '0.0.0.0', port: 15010 },
        admin: { address: '127.0.0.1', port: 15014 },
        policies: { folder: policyFolder },
        push: { debounce: '20ms' },
        adminApi: { audit: { file: path.join(work, 'audit.jsonl') } },
        log: { level: 'info' },
      }),
    );
    const relay = net0.spawn(pods.cp, process.execPath, [`${ROOT}test/fixtures/unix-relay.ts`, '10.254.1.2', '4318', path.join(work, 'otlp.sock')]);
    // Everything starts at once (node start-up is the slow part): the policy server and the
    // sidecars retry the CA (from 200 ms, backing off) until it answers, as in a real cluster.
    const psUp = net0
      .spawn(pods.cp, process.execPath, [MESHGATE, 'policy-server', '--config', psConfig])
      .line((l) => l.includes('meshgate policy-server listening'), 60_000)
      .then(() => step('policy server listening'));

    // The pod outside the mesh: no rules, no sidecar.
    const external = net0.spawn(pods.external, process.execPath, [POD_APP, '--http', '80', '--tcp-echo', '5432', '--tcp-greet', '3306', '--control', path.join(work, 'sockets', 'external.sock')]);

    const meshPod = async (name: string, pod: Pod): Promise<void> => {
      // The init container's job: the rules, as root, before the app or the sidecar starts.
      const appPorts = name === 'orders' ? [8080, 9090] : [8080];
      const rules = net0.spawn(pod, process.execPath, [
        MESHGATE,
        'iptables',
        '--inbound-port',
        '15006',
        '--outbound-port',
        '15001',
        '--proxy-uid',
        String(PROXY_UID),
        '--app-ports',
        appPorts.join(','),
        '--exclude-inbound-ports',
        '8081',
      ]);
      await rules.line((l) => l.includes('rules installed'));
      step(`${name}: rules installed`);
      const stateDir = path.join(work, `state-${name}`);
      await mkdir(stateDir);
      await chown(stateDir, PROXY_UID, PROXY_UID);
      const config = path.join(work, `${name}.yaml`);
      await writeFile(
        config,
        stringify({
          workload: { service: name, namespace: 'shop', address: `${pod.ip}:8080` }, // peers dial the app port; the rules bring them to :15006
          mtls: { mode: 'STRICT' },
          identity: { ca: trust, tokenFile: await token('shop', name) },
          policy: { servers: ['10.254.1.2:15010'], stateDir, reconnect: { base: '50ms', max: '200ms' } },
          inbound: { app: 'http://127.0.0.1:8080' },
          // As injected pods bind it, so the kubelet and Prometheus reach it from the pod network.
          ...(name === 'orders' ? { listeners: { admin: { address: '0.0.0.0', port: 15000 } } } : {}),
          interception: { appPorts, protocolDetectionTimeout: '300ms', outboundTrafficPolicy: name === 'payments' ? 'REGISTRY_ONLY' : 'ALLOW_ANY' },
          telemetry: { tracing: { exporter: 'otlp-http', endpoint: 'http://10.254.1.2:4318', batch: { scheduledDelay: '20ms' } } },
          log: { level: 'info', accessLog: false },
          // The orders app's second port, known to frontend as a service of its own (the registry has one address per workload).
          services: name === 'frontend' ? [{ name: 'orders-admin', namespace: 'shop', endpoints: [{ address: '10.254.1.4:9090' }], identities: ['spiffe://cluster.local/ns/shop/sa/orders'] }] : [],
        }),
      );
      await chmod(config, 0o644);
      const app = net0.spawn(pod, process.execPath, [POD_APP, '--http', '8080,8081,9090', '--control', path.join(work, 'sockets', `${name}.sock`)], { uid: APP_UID });
      const sidecar = net0.spawn(pod, process.execPath, [MESHGATE, 'sidecar', '--config', config], { uid: PROXY_UID });
      sidecars.set(name, sidecar);
      await Promise.all([app.line((l) => l === 'ready'), sidecar.line((l) => l.includes('"sidecar listening"'), 60_000)]);
      step(`${name}: app and sidecar up`);
    };
    await Promise.all([
      meshPod('frontend', pods.frontend),
      meshPod('orders', pods.orders),
      meshPod('payments', pods.payments),
      external.line((l) => l === 'ready'),
      relay.line((l) => l === 'ready'),
      caUp,
      psUp,
    ]);

    tcpdump = net0.spawn(pods.orders, 'tcpdump', ['-i', 'eth0', '-U', '-s', '0', '-Z', 'root', '-w', path.join(work, 'orders.pcap'), 'tcp']);
    await tcpdump.line((l) => l.includes('listening on'));

    // The registry push (orders' endpoint) and the policies reach the sidecars asynchronously.
    await eventually(() => appHttp('frontend', 'http://orders.shop/orders/0'), { until: (reply) => reply.status === 200, timeoutMs: 20_000, intervalMs: 100, what: 'frontend to reach orders' }).catch(
      (err: Error) => {
        throw new Error(`${err.message}\n${sidecars.get('frontend')!.output().slice(-3000)}`);
      },
    );
    step('frontend reaches orders: mesh up');
  }, 150_000);

  afterAll(async () => {
    for (const client of controls.values()) await client.close().catch(() => {});
    await net0?.close(); // every process, namespace, veth and rule: the rules live and die with the namespaces
    await new Promise<void>((resolve) => (otlpRelay ? otlpRelay.close(() => resolve()) : resolve()));
    await receiver?.close();
    if (work) await rm(work, { recursive: true, force: true });
    console.log(`netns mesh suite took ${((performance.now() - started) / 1000).toFixed(1)} s`);
  });

  it('an app calls http://orders.shop/orders/42 on port 80 with no proxy settings: the call crosses both sidecars under mTLS', async () => {
    const reply = await appHttp('frontend', 'http://orders.shop/orders/42');
    expect(reply.status).toBe(200);
    const seen = JSON.parse(reply.body!) as { port: number; url: string; headers: Record<string, string>; remote: string };
    expect(seen).toMatchObject({ port: 8080, url: '/orders/42' });
    // The orders app is told who called, by the orders sidecar that verified the client certificate.
    expect(seen.headers['x-forwarded-client-cert']).toBe(`By=spiffe://cluster.local/ns/shop/sa/orders;URI=${FRONTEND}`);
    expect(seen.remote).toBe('127.0.0.1'); // from its own sidecar, not from the network
  });

  it("an h2c caller is routed as well, and a call for the app's second port reaches that port", async () => {
    const reply = await control<HttpReply>('frontend', 'h2', { url: 'http://orders-admin.shop/orders/h2' });
    expect(reply.status).toBe(200);
    const seen = JSON.parse(reply.body!) as { port: number; headers: Record<string, string> };
    expect(seen.port).toBe(9090); // the original destination port, read back through the HTTP/2 session's TLS socket
    expect(seen.headers['x-forwarded-client-cert']).toContain(`URI=${FRONTEND}`);
  });

  it('a policy denies another path, and a rate limit answers 429', async () => {
    const denied = await appHttp('frontend', 'http://orders.shop/admin');
    expect(denied.status).toBe(403);
    expect(JSON.parse(denied.body!)).toMatchObject({ code: 'authz.denied' });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await appHttp('frontend', `http://orders.shop/limited/${i}`)).status!);
    expect(statuses).toEqual([200, 200, 429]);
  });

  it('a trace reaches the OTLP receiver with the client span of one sidecar and the server span of the other', async () => {
    const traceId = randomBytes(16).toString('hex');
    const reply = await appHttp('frontend', 'http://orders.shop/orders/7', { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` });
    expect(reply.status).toBe(200);
    const spans = (await receiver.waitFor((all) => all.filter((s) => s.traceId === traceId).length >= 2, 10_000)).filter((s) => s.traceId === traceId);
    const client = spans.find((s) => s.resource['service.name'] === 'frontend.shop');
    const server = spans.find((s) => s.resource['service.name'] === 'orders.shop');
    expect(client).toMatchObject({ kind: 3 });
    expect(server).toMatchObject({ kind: 2, parentSpanId: client!.spanId });
  });

  it('HTTP to a host outside the mesh, and non-HTTP traffic, pass through to the original destination and are counted', async () => {
    const before = await metricsOf('frontend');
    const external = await appHttp('frontend', 'http://external.example/v1/prices');
    expect(external.status).toBe(200);
    expect(JSON.parse(external.body!)).toMatchObject({ port: 80, url: '/v1/prices', headers: { host: 'external.example' } });
    // A client-first protocol that is not HTTP (a database): relayed byte for byte.
    expect(await appTcp('frontend', '10.254.1.5', 5432, 'ping', 5_000, 'echo:ping')).toMatchObject({ received: 'echo:ping' });
    // A server-first one: the client says nothing, so after the detection timeout it is relayed too.
    expect((await appTcp('frontend', '10.254.1.5', 3306, undefined, 5_000, '\n')).received).toBe('greeting\n');
    const after = await metricsOf('frontend');
    const passed = (reason: string) => sumOf(after, 'meshgate_outbound_passthrough_total', { reason }) - sumOf(before, 'meshgate_outbound_passthrough_total', { reason });
    expect([passed('unregistered_host'), passed('not_http'), passed('server_first')]).toEqual([1, 1, 1]);
    expect(sumOf(after, 'meshgate_interception_refusals_total', { reason: 'loop' })).toBe(0);
  });

  it('under REGISTRY_ONLY, HTTP to a host outside the registry gets 404 route.not_found and other protocols are closed, each counted', async () => {
    const before = sumOf(await metricsOf('payments'), 'meshgate_interception_refusals_total', { direction: 'outbound', reason: 'registry_only' });
    const http = await appHttp('payments', 'http://external.example/v1/prices');
    expect(http.status).toBe(404);
    expect(JSON.parse(http.body!)).toMatchObject({ code: 'route.not_found' });
    const tcp = await appTcp('payments', '10.254.1.5', 5432, 'ping', 5_000);
    expect(tcp).toMatchObject({ received: '' });
    expect(tcp.closed === true || tcp.error !== undefined).toBe(true);
    const after = await metricsOf('payments');
    expect(sumOf(after, 'meshgate_interception_refusals_total', { direction: 'outbound', reason: 'registry_only' }) - before).toBe(2);
    expect(sumOf(after, 'meshgate_outbound_passthrough_total')).toBe(0);
  });

  it('the app port is reachable only through the sidecar; the excluded probe port reaches the app from the node side', async () => {
    // From outside the mesh (no client certificate), the app port is captured and STRICT mTLS closes the connection.
    const plain = await appHttp('external', 'http://10.254.1.4:8080/orders/1');
    expect(plain.status).toBeUndefined();
    expect(plain.error).toMatch(/ECONNRESET|socket hang up/);
    // The probe port (--exclude-inbound-ports 8081) is not captured: a kubelet probe gets the app itself.
    const probe = await appHttp('external', 'http://10.254.1.4:8081/healthz');
    expect(probe.status).toBe(200);
    expect(JSON.parse(probe.body!)).toMatchObject({ port: 8081, remote: '10.254.1.5' });
    // Any other port is captured and refused by the sidecar, with a reason and a count.
    const before = sumOf(await metricsOf('orders'), 'meshgate_interception_refusals_total', { direction: 'inbound', reason: 'not_app_port' });
    const other = await appTcp('external', '10.254.1.4', 9999, 'hello', 2_000);
    expect(other.received).toBe('');
    const after = sumOf(await metricsOf('orders'), 'meshgate_interception_refusals_total', { direction: 'inbound', reason: 'not_app_port' });
    expect(after - before).toBe(1);
  });

  it('an admin listener bound for probes answers /live and /metrics to the pod network, /config_dump and /bans only on loopback', async () => {
    expect((await appHttp('external', 'http://10.254.1.4:15000/live')).status).toBe(200);
    expect((await appHttp('external', 'http://10.254.1.4:15000/metrics')).status).toBe(200);
    for (const adminPath of ['/config_dump', '/bans']) {
      const remote = await appHttp('external', `http://10.254.1.4:15000${adminPath}`);
      expect(remote.status, adminPath).toBe(403);
      expect(JSON.parse(remote.body!), adminPath).toMatchObject({ code: 'admin.local_only' });
    }
    const local = await appHttp('orders', 'http://127.0.0.1:15000/config_dump');
    expect(local.status).toBe(200);
    expect(JSON.parse(local.body!)).toMatchObject({ workload: { service: 'orders' } });
  });

  it('a capture on the orders veth shows TLS records only: no request line or Host header in plaintext', async () => {
    const reply = await appHttp('frontend', 'http://orders.shop/orders/99');
    expect(reply.status).toBe(200);
    const meshPackets = async () =>
      tcpPayloads(await readFile(path.join(work, 'orders.pcap'))).filter((p) => (p.src === '10.254.1.3' && p.dstPort === 8080) || (p.dst === '10.254.1.3' && p.srcPort === 8080));
    // tcpdump -U writes each packet as it goes, but a busy machine may lag: wait for the call's packets before stopping it.
    await expect.poll(async () => (await meshPackets()).length, { timeout: 5_000, interval: 50 }).toBeGreaterThan(0);
    await tcpdump.kill('SIGTERM'); // flushes the file
    const payloads = await meshPackets();
    expect(payloads.length).toBeGreaterThan(0);
    // Case-sensitive on purpose: the TLS client hello names ALPN "http/1.1" in the clear, which is fine.
    const text = Buffer.concat(payloads.map((p) => p.data)).toString('latin1');
    const plaintext = /GET \/orders|\/orders\/\d|HTTP\/1\.1 \d|[Hh]ost: |orders\.shop|x-request-id|x-forwarded-client-cert/.exec(text);
    expect(plaintext?.[0], 'plaintext HTTP on the wire').toBeUndefined();
    const recordTypes = new Set(payloads.map((p) => p.data[0]));
    expect(recordTypes.has(0x16)).toBe(true); // handshake
    expect(recordTypes.has(0x17)).toBe(true); // application data
  });

  it('a sidecar killed in one pod leaves the others working, and its own app fails closed', async () => {
    await sidecars.get('orders')!.kill('SIGKILL');
    const toOrders = await appHttp('frontend', 'http://orders.shop/orders/1');
    expect(toOrders.status).toBeGreaterThanOrEqual(502);
    const toPayments = await appHttp('frontend', 'http://payments.shop/pay/1');
    expect(toPayments.status).toBe(200);
    // Nothing bypasses a dead sidecar: the orders app's outbound calls still go to :15001, where nobody listens.
    const fromOrders = await appHttp('orders', 'http://payments.shop/pay/1');
    expect(fromOrders.error).toBe('ECONNREFUSED');
  });
});
