import { EventEmitter } from 'node:events';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { BodyRead } from '../../../src/core/call-context.ts';
import { createValidateFilter } from '../../../src/filters/validate/validate-filter.ts';
import { createBodyBudget } from '../../../src/proxy/body-budget.ts';
import type { DownstreamRequest } from '../../../src/proxy/listener.ts';
import { createRequestBody } from '../../../src/proxy/request-body.ts';
import { validateRuntime } from '../../helpers/filter-runtimes.ts';
import { policyDoc } from '../../helpers/static-policy.ts';
import { testCall } from '../filters/validate/validate-fixtures.ts';

function chunkedRequest(size: number): DownstreamRequest {
  const source = Readable.from([Buffer.alloc(size / 2, 0x61), Buffer.alloc(size / 2, 0x62)]);
  return Object.assign(source, { headers: { 'transfer-encoding': 'chunked' }, httpVersion: '1.1' }) as unknown as DownstreamRequest;
}

async function drain(stream: Readable | null): Promise<number> {
  let n = 0;
  for await (const chunk of stream ?? []) n += (chunk as Buffer).length;
  return n;
}

describe('sidecar-wide budget for buffered request bodies', () => {
  it('refuses a read that would cross the budget, and gives the bytes back when the holding call ends', async () => {
    const budget = createBodyBudget(100);
    const ends = [new EventEmitter(), new EventEmitter(), new EventEmitter()];

    const first = createRequestBody(chunkedRequest(80), budget, ends[0]);
    expect(await first.read(1000)).toMatchObject({ kind: 'complete' });
    expect(budget.inUse()).toBe(80);

    const second = createRequestBody(chunkedRequest(40), budget, ends[1]);
    expect(await second.read(1000)).toEqual({ kind: 'over_budget' });
    // Nothing is lost if the call goes on anyway (e.g. only shadow rules wanted the body).
    expect(await drain(second.forwardable())).toBe(40);

    ends[0]!.emit('close');
    ends[1]!.emit('close');
    expect(budget.inUse()).toBe(0);
    const third = createRequestBody(chunkedRequest(40), budget, ends[2]);
    expect(await third.read(1000)).toMatchObject({ kind: 'complete' });
    expect(budget.inUse()).toBe(40);
  });

  it('an enforcing body rule fails closed with a retryable 503 sidecar.overloaded; shadow rules let the call pass unchecked', async () => {
    const spec = (mode: string) => ({ mode, rules: [{ name: 'create', match: { paths: ['/orders'] }, jsonSchema: { type: 'object' } }] });
    const overBudget = (input: ReturnType<typeof testCall>) => ({
      ...input.call,
      body: { present: true, declaredLength: undefined, read: (): Promise<BodyRead> => Promise.resolve({ kind: 'over_budget' }) },
    });
    const enforce = createValidateFilter([policyDoc('ValidationPolicy', 'orders', spec('enforce'))], validateRuntime({ maxBodyBuffer: 1024 }));
    expect(await enforce.onRequest(overBudget(testCall({ headers: { 'content-type': 'application/json' }, body: '{}', chunked: true })))).toMatchObject({
      kind: 'respond',
      code: 'sidecar.overloaded',
      headers: { 'retry-after': '1' },
    });
    const shadow = createValidateFilter([policyDoc('ValidationPolicy', 'orders', spec('shadow'))], validateRuntime({ maxBodyBuffer: 1024 }));
    expect(await shadow.onRequest(overBudget(testCall({ headers: { 'content-type': 'application/json' }, body: '{}', chunked: true })))).toEqual({ kind: 'continue' });
  });
});
