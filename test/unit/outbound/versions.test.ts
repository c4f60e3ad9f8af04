import { Counter, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { deprecationHeaders, headerSafeMessage, MESSAGE_HEADER_LIMIT } from '../../../src/outbound/deprecation-headers.ts';
import { createDeprecationReporter, DEPRECATION_LOG_INTERVAL_MS } from '../../../src/outbound/deprecation-reporter.ts';
import { compileRetirement, retirementAt } from '../../../src/outbound/retirement-windows.ts';
import { callRetirement } from '../../../src/outbound/version-retirement.ts';
import type { VersionConfig } from '../../../src/outbound/versions.ts';
import { compileVersions, pinnedVersion } from '../../../src/outbound/versions.ts';
import { createFakeClock } from '../../helpers/fake-clock.ts';
import { captureLogs } from '../../helpers/log-capture.ts';

const V1: VersionConfig = { name: 'v1', subset: { version: 'v1' }, deprecated: { sunset: '2026-06-30', message: 'v1 goes away; use v2' } };
const V2: VersionConfig = { name: 'v2', subset: { version: 'v2' } };
const LEGACY: VersionConfig = { name: 'legacy', subset: { track: 'legacy' }, deprecated: { sunset: '2026-03-01', since: '2025-12-01', message: 'legacy track' } };

describe('version resolution', () => {
  it('finds versions by their exact name only', () => {
    const table = compileVersions([V1, V2]);
    expect(table.byName('v2')?.subset).toEqual({ version: 'v2' });
    expect(table.byName('V2')).toBeUndefined();
    expect(table.byName('v3')).toBeUndefined();
    expect(table.byName('')).toBeUndefined();
  });

  it('tells which deprecated version an endpoint belongs to from its labels', () => {
    const table = compileVersions([V1, V2, LEGACY]);
    expect(table.anyDeprecated).toBe(true);
    expect(table.deprecatedVersionOf(Object.freeze({ version: 'v1', zone: 'a' }))?.name).toBe('v1');
    expect(table.deprecatedVersionOf(Object.freeze({ version: 'v2' }))).toBeUndefined();
    expect(table.deprecatedVersionOf(Object.freeze({}))).toBeUndefined();
    // In two deprecated subsets: document order decides, unless the caller pinned one of them.
    const both = Object.freeze({ version: 'v1', track: 'legacy' });
    expect(table.deprecatedVersionOf(both)?.name).toBe('v1');
    expect(table.deprecatedVersionOf(both, table.byName('legacy'))?.name).toBe('legacy');
    // Pinned to a version that is not deprecated, on an endpoint that is also in a deprecated one: still deprecated.
    expect(table.deprecatedVersionOf(Object.freeze({ version: 'v2', track: 'legacy' }), table.byName('v2'))?.name).toBe('legacy');
  });

  it('answers the same for the same labels object (cached per endpoint)', () => {
    const table = compileVersions([V1]);
    const labels = Object.freeze({ version: 'v1' });
    expect(table.deprecatedVersionOf(labels)).toBe(table.deprecatedVersionOf(labels));
    const none = Object.freeze({ version: 'v2' });
    expect(table.deprecatedVersionOf(none)).toBeUndefined();
    expect(table.deprecatedVersionOf(none)).toBeUndefined();
  });

  it('names the version an endpoint answered for: the pinned one, else the deprecated one, else the first in document order', () => {
    const table = compileVersions([V2, V1, LEGACY]);
    expect(table.versionOf(Object.freeze({ version: 'v2', zone: 'a' }))?.name).toBe('v2');
    expect(table.versionOf(Object.freeze({ zone: 'a' }))).toBeUndefined();
    // In v2 and the deprecated legacy track: legacy, as the deprecation headers say, unless v2 was pinned.
    const both = Object.freeze({ version: 'v2', track: 'legacy' });
    expect(table.versionOf(both)?.name).toBe('legacy');
    expect(table.versionOf(both, table.byName('v2'))?.name).toBe('v2');
    expect(table.versionOf(both)).toBe(table.versionOf(both)); // cached per labels object
    expect(compileVersions([V2, { name: 'all', subset: {} }]).versionOf(Object.freeze({ version: 'v3' }))?.name).toBe('all');
  });

  it('has nothing to check when no version is deprecated', () => {
    expect(compileVersions([V2]).anyDeprecated).toBe(false);
  });

  it('reads the pinned version from x-meshgate-version; a repeated header names no version', () => {
    expect(pinnedVersion({})).toBeUndefined();
    expect(pinnedVersion({ 'x-meshgate-version': 'v2' })).toBe('v2');
    expect(pinnedVersion({ 'x-meshgate-version': '' })).toBe('');
    expect(pinnedVersion({ 'x-meshgate-version': ['v1', 'v2'] as unknown as string })).toBe('v1, v2');
    expect(compileVersions([V1, V2]).byName(pinnedVersion({ 'x-meshgate-version': 'v1, v2' })!)).toBeUndefined();
  });
});

describe('deprecation header values', () => {
  it('Sunset is an IMF-fixdate, a bare date being midnight UTC (RFC 8594)', () => {
    expect(deprecationHeaders({ sunset: '2026-06-30', message: 'm' }).sunset).toBe('Tue, 30 Jun 2026 00:00:00 GMT');
    expect(deprecationHeaders({ sunset: '2026-06-30T12:30:15.750+02:00', message: 'm' }).sunset).toBe('Tue, 30 Jun 2026 10:30:15 GMT');
  });

  it('Deprecation is a structured-field date of since (RFC 9745), @0 without one', () => {
    expect(deprecationHeaders({ sunset: '2026-06-30', since: '2026-01-15', message: 'm' }).deprecation).toBe(`@${Date.UTC(2026, 0, 15) / 1000}`);
    expect(deprecationHeaders({ sunset: '2026-06-30', since: '2026-01-15T09:00:00.999Z', message: 'm' }).deprecation).toBe(`@${Date.UTC(2026, 0, 15, 9) / 1000}`);
    // Not the sunset: a future date would tell clients the version is not deprecated yet.
    expect(deprecationHeaders({ sunset: '2026-06-30', message: 'm' }).deprecation).toBe('@0');
  });

  it('puts the message on one line of visible ASCII', () => {
    expect(headerSafeMessage('use v2\r\nSet-Cookie: x=1')).toBe('use v2 Set-Cookie: x=1');
    expect(headerSafeMessage('  tabs\tand\u0000nul  and  spaces ')).toBe('tabs and nul and spaces');
    expect(headerSafeMessage('100% done')).toBe('100%25 done');
    expect(headerSafeMessage('bientôt – v2')).toBe('bient%C3%B4t %E2%80%93 v2');
    expect(headerSafeMessage('a\u2028b')).toBe('a b');
    expect(headerSafeMessage('x\ud800y')).toBe('x%EF%BF%BDy'); // a lone surrogate must not throw
    for (const value of [headerSafeMessage('é'.repeat(1024)), headerSafeMessage('a'.repeat(1024) + 'é')]) {
      expect(value.length).toBeLessThanOrEqual(MESSAGE_HEADER_LIMIT);
      expect(value).toMatch(/^[\x20-\x7e]*$/);
      expect(value).not.toMatch(/%[0-9A-F]?$/); // never an escape cut in half
    }
  });
});

describe('deprecation reporter', () => {
  const setup = (start = Date.UTC(2026, 5, 1)) => {
    const clock = createFakeClock(start);
    const { logger, lines } = captureLogs({ name: 't' });
    const registry = new Registry();
    const counter = new Counter({ name: 'meshgate_deprecated_calls_total', help: 'h', labelNames: ['destination_service', 'version'] as const, registers: [registry] });
    const reporter = createDeprecationReporter({ caller: { service: 'frontend', namespace: 'shop' }, counter, clock, logger });
    const count = async (version: string) => (await counter.get()).values.filter((v) => v.labels.version === version).reduce((sum, v) => sum + v.value, 0);
    return { clock, lines, reporter, count };
  };
  const table = compileVersions([V1, V2, LEGACY]);

  it('counts every call and logs once a minute per (destination, version), naming the caller', async () => {
    const { clock, lines, reporter, count } = setup();
    const v1 = table.byName('v1')!;
    for (let i = 0; i < 5; i++) reporter.report('orders.shop', v1);
    reporter.report('payments.shop', v1);
    expect(await count('v1')).toBe(6);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({
      level: 30,
      caller: 'frontend.shop',
      destination: 'orders.shop',
      version: 'v1',
      sunset: '2026-06-30T00:00:00.000Z',
      calls: 1,
      message: 'v1 goes away; use v2',
      msg: 'call to a deprecated version',
    });
    clock.advance(DEPRECATION_LOG_INTERVAL_MS - 1);
    reporter.report('orders.shop', v1);
    expect(lines).toHaveLength(2);
    clock.advance(1);
    reporter.report('orders.shop', v1);
    expect(lines).toHaveLength(3);
    expect(lines[2]).toMatchObject({ destination: 'orders.shop', calls: 6 }); // the calls the quiet minute swallowed, and this one
  });

  it('after the sunset the call still counts and the line is a warning', async () => {
    const { lines, reporter, count } = setup(Date.UTC(2026, 5, 30));
    reporter.report('orders.shop', table.byName('v1')!);
    expect(await count('v1')).toBe(1);
    expect(lines[0]).toMatchObject({ level: 40, version: 'v1', msg: 'call to a version past its sunset date' });
  });

  it('ignores a version that is not deprecated', async () => {
    const { lines, reporter, count } = setup();
    reporter.report('orders.shop', table.byName('v2')!);
    expect(await count('v2')).toBe(0);
    expect(lines).toHaveLength(0);
  });
});

describe('retirement state at an instant', () => {
  const at = (iso: string) => Date.parse(iso);
  const windows = compileRetirement({
    brownouts: [
      { start: '2026-05-05T12:00:00Z', end: '2026-05-05T13:00:00Z' },
      { start: '2026-05-05T10:00:00Z', end: '2026-05-05T12:30:00Z' }, // written out of order, overlapping the other
    ],
  })!;

  it('is open outside every window, and in one until the latest end of those in force', () => {
    expect(retirementAt(windows, at('2026-05-05T09:59:59.999Z'))).toBeUndefined();
    expect(retirementAt(windows, at('2026-05-05T10:00:00Z'))).toEqual({ kind: 'brownout', endMs: at('2026-05-05T12:30:00Z') });
    expect(retirementAt(windows, at('2026-05-05T12:15:00Z'))).toEqual({ kind: 'brownout', endMs: at('2026-05-05T13:00:00Z') });
    expect(retirementAt(windows, at('2026-05-05T13:00:00Z'))).toBeUndefined();
  });

  it('retired wins over any window; a version with neither has nothing to check', () => {
    expect(retirementAt(compileRetirement({ retired: true, brownouts: [{ start: '2030-01-01', end: '2030-01-02' }] })!, 0)).toEqual({ kind: 'retired' });
    expect(compileRetirement({ retired: false, brownouts: [] })).toBeUndefined();
    expect(compileVersions([V1, V2]).anyRetiring).toBe(false);
    const table = compileVersions([V2, { ...V1, retired: true }]);
    expect(table.anyRetiring).toBe(true);
    expect(table.retiringVersionsOf({ version: 'v1', zone: 'a' }).map((v) => v.name)).toEqual(['v1']);
    expect(table.retiringVersionsOf({ zone: 'a' })).toEqual([]);
    expect(table.retiringVersionsOf(undefined)).toEqual([]);
  });

  it('an un-pinned backend within two retiring versions is refused by whichever refuses now', () => {
    const later: VersionConfig = { name: 'later', subset: { version: 'v1' }, brownouts: [{ start: '2030-01-01', end: '2030-01-02' }] };
    const now: VersionConfig = { name: 'now', subset: { version: 'v1' }, brownouts: [{ start: '2026-05-05', end: '2026-05-06' }] };
    const table = compileVersions([later, now, V2]);
    const refused = callRetirement('orders.shop', table, undefined, { version: 'v1' }, Date.parse('2026-05-05T12:00:00Z'));
    expect(refused?.version.name).toBe('now');
    expect(refused?.verdict.code).toBe('route.version_brownout');
    expect(callRetirement('orders.shop', table, undefined, { version: 'v1' }, Date.parse('2026-05-07T00:00:00Z'))).toBeUndefined();
    // Pinned: only the pinned version counts.
    expect(callRetirement('orders.shop', table, table.byName('later'), { version: 'v1' }, Date.parse('2026-05-05T12:00:00Z'))).toBeUndefined();
  });
});
