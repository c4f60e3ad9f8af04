import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { findExecutable, firstOutputLine, freePorts } from './processes.ts';
import type { OnRowStarted } from './row-processes.ts';
import type { StartedTarget, Target, TargetContext } from './target.ts';
import { keepaliveUpstream, NGINX_MISSING, nginxMainConfig, startNginx } from './target-nginx.ts';

/*
 * The C data plane on the mesh's path: two nginx instances (one worker each),
 * chained over mutual TLS as two sidecars would be.
 *
 *   load -> front (plain HTTP, like an outbound listener) -> mTLS 1.3, upstream
 *   keep-alive, client certificate (proxy_ssl_certificate), server verified
 *   -> back (ssl_verify_client on, like an inbound listener) -> app, keep-alive
 *
 * Certificates (ECDSA P-256, as the mesh's) come from openssl in the row's
 * temp dir: a CA, a server certificate for the back, a client one for the
 * front. No identity checks beyond chain verification: nginx has no SPIFFE.
 */

function openssl(binary: string, dir: string, args: readonly string[]): void {
  const result = spawnSync(binary, args, { cwd: dir, encoding: 'utf8', timeout: 10_000 });
  if (result.status !== 0) throw new Error(`openssl ${args[0]}: ${(result.stderr || result.stdout || 'failed').trim().split('\n')[0]}`);
}

/** CA, server (back) and client (front) certificates for a day, in `dir`. */
function makeCertificates(binary: string, dir: string): void {
  const key = (name: string) => openssl(binary, dir, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`]);
  key('ca');
  openssl(binary, dir, [
    'req',
    '-x509',
    '-new',
    '-key',
    'ca.key',
    '-subj',
    '/CN=bench-mtls-ca',
    '-days',
    '1',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
    '-out',
    'ca.pem',
  ]);
  const leaf = (name: string, extensions: string) => {
    key(name);
    openssl(binary, dir, ['req', '-new', '-key', `${name}.key`, '-subj', `/CN=${name}`, '-out', `${name}.csr`]);
    writeFileSync(join(dir, `${name}.ext`), extensions);
    openssl(binary, dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', `${name}.ext`, '-out', `${name}.pem`]);
  };
  leaf('orders', 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:orders\n');
  leaf('frontend', 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=DNS:frontend\n');
}

/**
 * The pair's certificates in a temp dir of the row (`prefix`): its path, or why
 * the row is skipped. The Node pipe pair (./target-node-pipes.ts) uses the same.
 */
export function pairCertificates(context: TargetContext, prefix: string): string | { readonly ok: false; readonly reason: string } {
  const opensslBinary = findExecutable('openssl', context.pathEnv);
  if (opensslBinary === undefined) return { ok: false, reason: 'openssl not installed (apt-get install -y openssl)' };
  const certs = context.group.tempDir(prefix);
  makeCertificates(opensslBinary, certs);
  return certs;
}

function backConfig(dir: string, certs: string, port: number, upstreamPort: number): string {
  return nginxMainConfig(
    dir,
    `
${keepaliveUpstream('app', upstreamPort)}

  server {
    listen 127.0.0.1:${port} ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate ${certs}/orders.pem;
    ssl_certificate_key ${certs}/orders.key;
    ssl_client_certificate ${certs}/ca.pem;
    ssl_verify_client on;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
`,
  );
}

function frontConfig(dir: string, certs: string, port: number, backPort: number): string {
  return nginxMainConfig(
    dir,
    `
${keepaliveUpstream('orders', backPort)}

  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass https://orders;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_certificate ${certs}/frontend.pem;
      proxy_ssl_certificate_key ${certs}/frontend.key;
      proxy_ssl_trusted_certificate ${certs}/ca.pem;
      proxy_ssl_verify on;
      proxy_ssl_name orders;
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
    }
  }
`,
  );
}

export function createNginxMtlsPairTarget(onStarted: OnRowStarted): Target {
  return {
    id: 'nginx-mtls-pair',
    label: 'two nginx over mTLS (1 worker each)',
    start: async (context: TargetContext) => {
      const nginx = findExecutable('nginx', context.pathEnv);
      if (nginx === undefined) return { ok: false, reason: NGINX_MISSING };
      const certs = pairCertificates(context, 'meshgate-bench-nginx-mtls-');
      if (typeof certs !== 'string') return certs;
      const [frontPort, backPort] = (await freePorts(2)) as [number, number];
      // Each instance has its own dir (pid file, temp paths, error log); both read the certificates from `certs`.
      const backDir = context.group.tempDir('meshgate-bench-nginx-back-');
      const frontDir = context.group.tempDir('meshgate-bench-nginx-front-');
      // The back only answers mTLS: it is ready when the whole chain answers through the front.
      const back = await startNginx(context, nginx, 'nginx-back', backDir, backConfig(backDir, certs, backPort, context.upstreamPort), undefined);
      if (!back.ok) return back;
      const url = `http://127.0.0.1:${frontPort}/`;
      const front = await startNginx(context, nginx, 'nginx-front', frontDir, frontConfig(frontDir, certs, frontPort, backPort), url);
      if (!front.ok) {
        const backSays = firstOutputLine(back.child);
        await back.child.stop(1000);
        return { ok: false, reason: `${front.reason}${backSays ? ` (nginx-back: ${backSays})` : ''}` };
      }
      const stop = async (): Promise<void> => {
        await Promise.all([front.child.stop(), back.child.stop()]);
      };
      await onStarted([
        { name: 'nginx-front', pgid: front.child.process.pid!, role: 'proxy' },
        { name: 'nginx-back', pgid: back.child.process.pid!, role: 'proxy' },
      ]);
      const started: StartedTarget = { url, headers: {}, stop };
      return { ok: true, started };
    },
  };
}
