/*
 * A small, strict parser of the Prometheus text exposition format (0.0.4):
 * every line is a HELP, a TYPE, a blank line or a sample; every sample belongs
 * to a family declared by TYPE before it; names and label names are valid;
 * label values are properly escaped; values are numbers; histograms have
 * increasing `le` buckets ending in +Inf that equals _count. Throws on the
 * first violation, with the line.
 */

interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface MetricFamily {
  readonly name: string;
  readonly type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  readonly help: string;
  readonly samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

export function parsePrometheusText(text: string): Map<string, MetricFamily> {
  const families = new Map<string, MetricFamily>();
  const helps = new Map<string, string>();
  const lines = text.split('\n');
  if (lines.at(-1) !== '') throw new Error('exposition must end with a newline');
  lines.forEach((line, i) => {
    const where = `line ${i + 1}: ${JSON.stringify(line.slice(0, 120))}`;
    if (line === '') return;
    if (line.startsWith('#')) {
      const match = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!match) {
        if (/^# (HELP|TYPE)\b/.test(line)) throw new Error(`malformed comment, ${where}`);
        return;
      }
      const [, kind, name, rest] = match as unknown as [string, string, string, string];
      if (!NAME.test(name)) throw new Error(`bad metric name, ${where}`);
      if (kind === 'HELP') {
        helps.set(name, rest);
        return;
      }
      if (!TYPES.has(rest)) throw new Error(`unknown type, ${where}`);
      if (families.has(name)) throw new Error(`TYPE declared twice, ${where}`);
      families.set(name, { name, type: rest as MetricFamily['type'], help: helps.get(name) ?? '', samples: [] });
      return;
    }
    const sample = parseSample(line, where);
    const family = familyOf(families, sample.name);
    if (!family) throw new Error(`sample of an undeclared family, ${where}`);
    family.samples.push(sample);
  });
  for (const family of families.values()) if (family.type === 'histogram') checkHistogram(family);
  return families;
}

/** Sum of the values of `name` samples whose labels include `labels`. */
export function sumOf(families: Map<string, MetricFamily>, name: string, labels: Record<string, string> = {}): number {
  const family = familyOf(families, name);
  if (!family) return 0;
  return family.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((sum, s) => sum + s.value, 0);
}

function familyOf(families: Map<string, MetricFamily>, sampleName: string): MetricFamily | undefined {
  const direct = families.get(sampleName);
  if (direct) return direct;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!sampleName.endsWith(suffix)) continue;
    const family = families.get(sampleName.slice(0, -suffix.length));
    if (family && (family.type === 'histogram' || family.type === 'summary')) return family;
  }
  return undefined;
}

function parseSample(line: string, where: string): Sample {
  const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
  if (!nameMatch) throw new Error(`bad sample name, ${where}`);
  const name = nameMatch[0];
  let rest = line.slice(name.length);
  const labels: Record<string, string> = {};
  if (rest.startsWith('{')) {
    let i = 1;
    while (rest[i] !== '}') {
      const labelMatch = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(rest.slice(i));
      if (!labelMatch || !LABEL.test(labelMatch[1]!)) throw new Error(`bad label, ${where}`);
      i += labelMatch[0].length;
      let value = '';
      for (;;) {
        const c = rest[i];
        if (c === undefined) throw new Error(`unterminated label value, ${where}`);
        if (c === '"') break;
        if (c === '\\') {
          const next = rest[i + 1];
          if (next === 'n') value += '\n';
          else if (next === '\\' || next === '"') value += next;
          else throw new Error(`bad escape in label value, ${where}`);
          i += 2;
          continue;
        }
        if (c === '\n') throw new Error(`raw newline in label value, ${where}`);
        value += c;
        i++;
      }
      if (labelMatch[1]! in labels) throw new Error(`label repeated, ${where}`);
      labels[labelMatch[1]!] = value;
      i++;
      if (rest[i] === ',') i++;
      else if (rest[i] !== '}') throw new Error(`expected , or } after a label, ${where}`);
    }
    rest = rest.slice(i + 1);
  }
  const valueMatch = /^ (\S+)( -?\d+)?$/.exec(rest);
  if (!valueMatch) throw new Error(`expected " value [timestamp]", ${where}`);
  const text = valueMatch[1]!;
  // prom-client writes NaN as "Nan" (e.g. nodejs_eventloop_lag_* before the first sample); Prometheus reads any case.
  const isNaNText = text.toLowerCase() === 'nan';
  const value = text === '+Inf' ? Infinity : text === '-Inf' ? -Infinity : isNaNText ? Number.NaN : Number(text);
  if (Number.isNaN(value) && !isNaNText) throw new Error(`value is not a number, ${where}`);
  return { name, labels, value };
}

function checkHistogram(family: MetricFamily): void {
  const series = new Map<string, { buckets: Array<[number, number]>; count?: number }>();
  for (const s of family.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const entry = series.get(key) ?? { buckets: [] };
    series.set(key, entry);
    if (s.name === `${family.name}_bucket`) {
      if (le === undefined) throw new Error(`${family.name}: bucket without le`);
      entry.buckets.push([le === '+Inf' ? Infinity : Number(le), s.value]);
    } else if (s.name === `${family.name}_count`) entry.count = s.value;
  }
  for (const [key, { buckets, count }] of series) {
    for (let i = 1; i < buckets.length; i++) {
      if (!(buckets[i]![0] > buckets[i - 1]![0])) throw new Error(`${family.name}${key}: le not increasing`);
      if (buckets[i]![1] < buckets[i - 1]![1]) throw new Error(`${family.name}${key}: bucket counts decrease`);
    }
    const last = buckets.at(-1);
    if (!last || last[0] !== Infinity) throw new Error(`${family.name}${key}: no +Inf bucket`);
    if (count !== last[1]) throw new Error(`${family.name}${key}: +Inf bucket ${last[1]} != _count ${count}`);
  }
}
