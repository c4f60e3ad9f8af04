import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import type { Clock } from '../core/clock.ts';
import type { ReasonCode } from '../core/reason-codes.ts';
import type { Logger } from '../telemetry/logger.ts';

type AuditRecord =
  | {
      readonly event: 'issued';
      readonly spiffeId: string;
      readonly serial: string;
      readonly notAfter: string;
      /** How the caller proved the identity. */
      readonly proof: 'token' | 'certificate';
      readonly caller: string;
      readonly keyType: string;
    }
  | {
      readonly event: 'refused';
      readonly reason: ReasonCode<'ca'>;
      readonly message: string;
      /** Known when the refusal came after authentication (bad CSR, rate limit). */
      readonly spiffeId?: string;
      readonly caller: string;
    };

export interface AuditLog {
  /** Resolves once the record is written: the CA replies only after that. */
  record(entry: AuditRecord): Promise<void>;
  close(): Promise<void>;
}

/**
 * One JSON line per issuance and per refusal, to an append-only file
 * (O_APPEND, mode 0600 when created: each line is one write, so concurrent
 * records never interleave) or, without a file, to the log at info with
 * `audit: true`. Records carry identities, serials and reasons, never a
 * token, a CSR or a key.
 */
export async function createAuditLog(opts: { file?: string; logger: Logger; clock: Clock }): Promise<AuditLog> {
  const { logger, clock } = opts;
  const handle: FileHandle | undefined = opts.file ? await open(opts.file, 'a', 0o600) : undefined;
  return {
    async record(entry) {
      if (!handle) {
        // pino stamps its own time.
        logger.info({ audit: true, ...entry }, `audit: ${entry.event}`);
        return;
      }
      await handle.write(`${JSON.stringify({ time: new Date(clock.now()).toISOString(), ...entry })}\n`);
    },
    async close() {
      await handle?.close();
    },
  };
}
