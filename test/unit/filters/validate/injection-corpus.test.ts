import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import type { InjectionFinding, InjectionSettings } from '../../../../src/filters/validate/injection.ts';
import { InjectionScan } from '../../../../src/filters/validate/injection.ts';
import type { InjectionClass } from '../../../../src/filters/validate/injection-signatures.ts';
import { INJECTION_CLASSES } from '../../../../src/filters/validate/injection-signatures.ts';

/*
 * Detection measured, not assumed. Payloads (test/fixtures/injection/<class>.txt,
 * one per line, as an attacker types them) are placed where an API receives
 * them: a query parameter (percent-encoded by the client) and a JSON string
 * value. Benign items (benign.jsonl) are values (placed the same two ways) or
 * whole requests (query, path, headers, JSON body). The test prints each
 * class's detection rate and the false-positive rate, and holds the floors.
 *
 * Honest about what these numbers are: the main corpora were written first and
 * the signatures tuned against them (they pass in full). The holdout files
 * were written after that tuning; their first run, before any change, found
 * 77 of 80 payloads (SQL 17/20) and flagged 3 of 165 benign items (1.8%). The
 * causes were then fixed in general terms (a subquery needs its parenthesis,
 * a `select *` snippet is not a probe, a quote then a SQL keyword weighs 3),
 * so they are no longer unseen either. A third-party corpus would say more.
 */

const dir = new URL('../../../fixtures/injection/', import.meta.url);
const read = (file: string) => readFileSync(new URL(file, dir), 'utf8');
const lines = (file: string) =>
  read(file)
    .split('\n')
    .filter((line) => line !== '');

const settings: InjectionSettings = {
  mode: 'block',
  threshold: 5,
  classes: new Set(INJECTION_CLASSES),
  path: true,
  query: true,
  body: true,
  headers: ['user-agent', 'referer', 'cookie', 'x-forwarded-for', 'accept-language'],
  maxInspectBytes: 65_536,
};

type BenignItem = string | { query?: string; path?: string; headers?: Record<string, string>; body?: unknown };

function score(fill: (scan: InjectionScan) => void): InjectionFinding | undefined {
  const scan = new InjectionScan(settings, true);
  fill(scan);
  const verdict = scan.verdict;
  return verdict.kind === 'scored' ? verdict.finding : undefined;
}

const inQuery = (value: string) => score((s) => s.pairs(`q=${encodeURIComponent(value)}`, 'query'));
const inJson = (value: string) => score((s) => s.json({ data: { comment: value } }));
const flagged = (f: InjectionFinding | undefined) => (f?.score ?? 0) >= settings.threshold;

function benignFindings(item: BenignItem): (InjectionFinding | undefined)[] {
  if (typeof item === 'string') return [inQuery(item), inJson(item)];
  return [
    score((s) => {
      s.head({ path: item.path ?? '/', query: item.query ?? '', headers: item.headers ?? {} });
      if (item.body !== undefined) s.json(item.body);
    }),
  ];
}

const report: string[] = [];
const pct = (n: number, of: number) => `${((100 * n) / of).toFixed(1)}%`;

afterAll(() => {
  console.log(`injection detection (threshold ${settings.threshold}):\n${report.map((r) => `  ${r}`).join('\n')}`);
});

describe('injection corpora: detection and false positives', () => {
  it.each(INJECTION_CLASSES.map((cls) => [cls] as [InjectionClass]))('%s payloads: at least 95% detected, in a query parameter and in a JSON string', (cls) => {
    const payloads = lines(`${cls}.txt`);
    const missedQuery = payloads.filter((p) => !flagged(inQuery(p)));
    const missedJson = payloads.filter((p) => !flagged(inJson(p)));
    report.push(
      `${cls.padEnd(9)} ${payloads.length} payloads: query ${pct(payloads.length - missedQuery.length, payloads.length)}, JSON ${pct(payloads.length - missedJson.length, payloads.length)}${missedQuery.length + missedJson.length ? `; missed: ${JSON.stringify([...new Set([...missedQuery, ...missedJson])])}` : ''}`,
    );
    expect(payloads.length).toBeGreaterThanOrEqual(50);
    expect(missedQuery.length / payloads.length).toBeLessThanOrEqual(0.05);
    expect(missedJson.length / payloads.length).toBeLessThanOrEqual(0.05);
  });

  it('each payload is found as its own class (the heaviest class of the score)', () => {
    const wrong: string[] = [];
    for (const cls of INJECTION_CLASSES) {
      for (const p of lines(`${cls}.txt`)) {
        const found = inJson(p);
        // A payload may carry two classes (`; cat /etc/passwd`): its own must be among them.
        if (found && !found.signatures.some((id) => id.startsWith(`${cls}.`))) wrong.push(`${cls}: ${p}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('benign API traffic: under 1% false positives', () => {
    const items = lines('benign.jsonl').map((line) => JSON.parse(line) as BenignItem);
    const falsePositives = items.filter((item) => benignFindings(item).some(flagged));
    report.push(
      `benign    ${items.length} items: ${falsePositives.length} flagged (${pct(falsePositives.length, items.length)} false positives)${falsePositives.length ? `: ${JSON.stringify(falsePositives)}` : ''}`,
    );
    expect(items.length).toBeGreaterThanOrEqual(300);
    expect(falsePositives.length / items.length).toBeLessThan(0.01);
  });

  it('holdout set (written after tuning): at least 95% detected, under 1% false positives', () => {
    const payloads = lines('holdout-malicious.txt').map((line) => line.split('\t') as [InjectionClass, string]);
    const missed = payloads.filter(([, p]) => !flagged(inQuery(p)) || !flagged(inJson(p)));
    const items = lines('holdout-benign.jsonl').map((line) => JSON.parse(line) as BenignItem);
    const falsePositives = items.filter((item) => benignFindings(item).some(flagged));
    report.push(
      `holdout   ${payloads.length} payloads: ${pct(payloads.length - missed.length, payloads.length)} detected${missed.length ? ` (missed: ${JSON.stringify(missed.map(([, p]) => p))})` : ''}; ${items.length} benign: ${falsePositives.length} flagged (${pct(falsePositives.length, items.length)})`,
    );
    expect(missed.length / payloads.length).toBeLessThanOrEqual(0.05);
    expect(falsePositives.length / items.length).toBeLessThan(0.01);
  });
});
