import { commandSignals, SHELL_REGEXES, traversalSignals } from './injection-shell.ts';
import { sqlSignals } from './injection-sql.ts';
import { SqlTokens } from './injection-sql-tokens.ts';
import { AMP, AT, charMask, DIGIT, DOLLAR, EQ, GT, HASH, LT, PAREN, PIPE, QUOTE, SEMI, SLASH, STAR, UNDERSCORE } from './injection-text.ts';
import { XSS_REGEXES, xssSignals } from './injection-xss.ts';

/*
 * Injection signatures, scored as the OWASP Core Rule Set scores its rules:
 * each signature that matches a call adds its weight to the call's anomaly
 * score (CRS severities: critical 5, error 4, warning 3, notice 2), and a rule
 * refuses at its threshold (default 5, CRS's inbound default). One
 * unmistakable pattern (UNION SELECT, <script, ../../) refuses alone; weaker
 * hints (a quote then `--`, a single `../`, `alert(`) only together.
 *
 * They read a value after injection-decode.ts (decoded, lower case, white
 * space folded, `\n` kept as the one line break). Matching is linear by
 * construction: SQL on tokens (injection-sql.ts), the rest with indexOf
 * scans whose look-around is bounded per hit, and a few small regexes, each
 * accepted by the repository's ReDoS check (src/config/regex-safety.ts; a
 * test checks every one in SIGNATURE_REGEXES).
 */

export type InjectionClass = 'sql' | 'xss' | 'traversal' | 'command';

export const INJECTION_CLASSES: readonly InjectionClass[] = ['sql', 'xss', 'traversal', 'command'];

/** Every signature: `class.name` -> weight. Ids go to logs and `policy explain`, never to the caller. */
export const SIGNATURE_WEIGHTS: Readonly<Record<string, number>> = Object.freeze({
  'sql.union_select': 5,
  'sql.quote_tautology': 5,
  'sql.number_tautology': 5,
  'sql.string_tautology': 5,
  'sql.quote_comment_end': 5,
  'sql.quote_comment': 3,
  'sql.stacked_query': 5,
  'sql.quote_semicolon_keyword': 5,
  'sql.quote_keyword': 3,
  'sql.quote_string_compare': 3,
  'sql.order_by_probe': 5,
  'sql.time_delay': 5,
  'sql.sleep_after_operator': 5,
  'sql.sleep_call': 3,
  'sql.subquery_condition': 5,
  'sql.subquery_literal': 2,
  'sql.catalog': 5,
  'sql.system_variable': 5,
  'sql.dangerous_function': 5,
  'sql.exec_procedure': 5,
  'sql.having_tautology': 5,
  'sql.char_concat': 5,
  'sql.select_list': 3,
  'sql.select_from': 1,
  'sql.info_function': 3,
  'sql.string_function': 3,
  'sql.hex_literal': 2,
  'sql.case_when': 3,
  'sql.if_condition': 3,
  'sql.drop_table': 4,
  'sql.versioned_comment': 5,
  'sql.inline_comment': 3,

  'xss.script_tag': 5,
  'xss.handler_in_tag': 5,
  'xss.handler_attribute': 4,
  'xss.handler_word': 2,
  'xss.script_url': 5,
  'xss.script_url_spaced': 3,
  'xss.data_url': 5,
  'xss.dangerous_tag': 5,
  'xss.markup_tag': 2,
  'xss.breakout_sink': 5,
  'xss.sink_call': 3,
  'xss.dom_access': 3,
  'xss.css_expression': 4,
  'xss.attribute_sink': 4,
  'xss.template_escape': 5,
  'xss.tag_breakout': 3,

  'traversal.dot_dot_slash': 5,
  'traversal.leading_dot_dot': 4,
  'traversal.one_dot_dot': 2,
  'traversal.unix_secret_file': 5,
  'traversal.unix_system_file': 4,
  'traversal.windows_file': 5,
  'traversal.windows_root': 4,
  'traversal.secret_file': 4,
  'traversal.nul_byte': 5,
  'traversal.file_scheme': 5,

  'command.substitution': 5,
  'command.inline_code': 3,
  'command.separator_command': 5,
  'command.leading_command': 3,
  'command.brace_expansion': 5,
  'command.shell_variable': 5,
  'command.shellshock': 5,
  'command.dev_tcp': 5,
  'command.reverse_shell': 5,
  'command.shell_path': 4,
  'command.redirect_file': 4,
  'command.quote_separator': 3,
});

/** The regexes the signatures run: each must pass the ReDoS check (tested). */
export const SIGNATURE_REGEXES: readonly RegExp[] = [...XSS_REGEXES, ...SHELL_REGEXES];

const SQL_CHARS = QUOTE | SEMI | PIPE | AMP | LT | GT | PAREN | EQ | HASH | AT | STAR | SLASH | UNDERSCORE | DOLLAR;
/** What SQL signatures can match in a value of letters, digits and spaces only. */
const SQL_WORDS = ['union', 'sys', 'schema', 'mysql', 'master', 'drop', 'case', 'order by', 'group by', 'having'];
const SQL_NUMBER_WORDS = ['like', 'between', 'regexp', 'rlike', 'sounds'];

/** Reusable scratch for matching many values (the SQL tokens' arrays). */
export function createMatchScratch(): SqlTokens {
  return new SqlTokens();
}

/** Calls `hit` with the id of every signature of `classes` that `text` (a normalized value) matches. */
export function matchSignatures(text: string, classes: ReadonlySet<InjectionClass>, scratch: SqlTokens, hit: (id: string) => void): void {
  const mask = charMask(text);
  if (classes.has('sql') && (mask & SQL_CHARS || SQL_WORDS.some((w) => text.includes(w)) || (mask & DIGIT && SQL_NUMBER_WORDS.some((w) => text.includes(w))))) {
    scratch.read(text);
    sqlSignals(scratch, (id) => hit(`sql.${id}`));
  }
  if (classes.has('xss')) xssSignals(text, mask, (id) => hit(`xss.${id}`));
  if (classes.has('traversal')) traversalSignals(text, mask, (id) => hit(`traversal.${id}`));
  if (classes.has('command')) commandSignals(text, mask, (id) => hit(`command.${id}`));
}
