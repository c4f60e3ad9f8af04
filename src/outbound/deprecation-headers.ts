/*
 * Header values that tell a calling app it reached a deprecated version,
 * computed once per registry update (src/outbound/versions.ts), never per call.
 */

/** What a Route document says about a deprecated version (src/policy/kinds/route.ts). */
export interface DeprecationConfig {
  /** ISO 8601 date or date-time; a bare date is midnight UTC. */
  readonly sunset: string;
  /** When the version became (or becomes) deprecated; same format. */
  readonly since?: string | undefined;
  readonly message: string;
}

/** Response headers for one deprecated version, ready to copy onto a response. */
export interface DeprecationHeaders {
  /** RFC 8594 `Sunset`: an IMF-fixdate. */
  readonly sunset: string;
  /** RFC 9745 `Deprecation`: a structured-field date, `@<unix seconds>`. */
  readonly deprecation: string;
  /** `x-meshgate-deprecation`: the document's message on one line of visible ASCII. */
  readonly message: string;
}

/** Longest `x-meshgate-deprecation` value; a message is 1024 characters at most, but escapes grow it. */
export const MESSAGE_HEADER_LIMIT = 1024;

/** Milliseconds since the epoch of a date the Route schema accepted (`2026-06-30` is midnight UTC). */
export function parsePolicyDate(text: string): number {
  return Date.parse(text.length === 10 ? `${text}T00:00:00Z` : text);
}

/**
 * Without `since`, meshgate knows the version is deprecated now but not since
 * when. RFC 9745 reads a future date as "will be deprecated then", so sending
 * the sunset date would tell clients the version is not deprecated yet; the
 * epoch (`@0`) is a date in the past, which every client reads as
 * "deprecated", and is plainly a placeholder to a human.
 */
export function deprecationHeaders(config: DeprecationConfig): DeprecationHeaders {
  const sunsetMs = parsePolicyDate(config.sunset);
  const sinceMs = config.since === undefined ? 0 : parsePolicyDate(config.since);
  return {
    sunset: new Date(sunsetMs).toUTCString(), // toUTCString is the IMF-fixdate form: "Tue, 30 Jun 2026 00:00:00 GMT"
    deprecation: `@${Math.floor(sinceMs / 1000)}`,
    message: headerSafeMessage(config.message),
  };
}

/**
 * One line a header can carry on HTTP/1.1 and HTTP/2: control characters
 * (CR/LF would split the header, Node refuses them) become spaces, runs of
 * spaces collapse, and anything outside printable ASCII is percent-encoded as
 * UTF-8 (Node writes header strings as latin1, which would mangle it).
 */
export function headerSafeMessage(message: string): string {
  const oneLine = message
    .replace(/[\u0000-\u001f\u007f\u2028\u2029]+/g, ' ')
    .replace(/ {2,}/g, ' ')
    .trim();
  let out = '';
  for (const char of oneLine) {
    const code = char.codePointAt(0)!;
    const piece = code >= 0x20 && code < 0x7f ? (char === '%' ? '%25' : char) : percentEncode(char);
    if (out.length + piece.length > MESSAGE_HEADER_LIMIT) break; // never cut an escape in half
    out += piece;
  }
  return out;
}

/** UTF-8 percent-encoding; unlike encodeURIComponent it cannot throw (a lone surrogate becomes U+FFFD). */
function percentEncode(char: string): string {
  let out = '';
  for (const byte of Buffer.from(char, 'utf8')) out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  return out;
}
