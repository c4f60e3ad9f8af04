/*
 * SQL injection, found on tokens rather than with regexes: a value is split
 * once into words, numbers, quotes, operators and comments (linear, one
 * string per token of at most 32 characters), then each token that can start
 * an attack (a quote, a number, `union`, `or`, `;`...) looks at the few
 * tokens after it. Every look-ahead is bounded, so a value costs O(length)
 * whatever it holds. What matters is the shape an injection must have to
 * work: it breaks out of a string or number literal (a quote or a number,
 * then an operator or a keyword), or names what only SQL names (UNION SELECT,
 * information_schema, @@version, xp_cmdshell). Prose with SQL words in it
 * ("select the best option from the menu") has neither.
 */

import type { SqlTokens } from './injection-sql-tokens.ts';
import { COMMENT, NUM, OP, QUOTE, WORD } from './injection-sql-tokens.ts';

const QUOTE_KEYWORDS = new Set(['union', 'select', 'insert', 'update', 'delete', 'drop', 'exec', 'execute', 'having', 'procedure', 'waitfor']);
const AFTER_SEMICOLON = new Set(['select', 'insert', 'update', 'delete', 'drop', 'exec', 'execute', 'declare', 'shutdown', 'truncate', 'waitfor', 'create', 'alter', 'grant']);
const SQL_CONDITION_FUNCTIONS = new Set([
  'ascii',
  'substring',
  'substr',
  'mid',
  'length',
  'len',
  'char',
  'ord',
  'if',
  'iif',
  'exists',
  'count',
  'updatexml',
  'extractvalue',
  'hex',
  'unicode',
  'instr',
  'locate',
  'coalesce',
  'ifnull',
  'nvl',
  'cast',
  'convert',
  'elt',
  'make_set',
]);
/** Words that continue a WHERE clause after a condition: `1=1 limit 1`, `1=1 union ...`. */
const CLAUSE_WORDS = new Set(['limit', 'order', 'group', 'union', 'having', 'procedure', 'into', 'offset', 'fetch']);
const DELAY_FUNCTIONS = new Set(['sleep', 'pg_sleep', 'benchmark']);
const BEFORE_SLEEP = new Set(['or', 'and', 'xor', 'if', 'select', 'then', 'else', 'when', ';', '||', '&&', '(', ',', '=']);
const CATALOG = new Set([
  'information_schema',
  'sysobjects',
  'syscolumns',
  'sysdatabases',
  'sysusers',
  'sqlite_master',
  'sqlite_schema',
  'sqlite_temp_master',
  'pg_catalog',
  'pg_shadow',
  'pg_user',
  'pg_tables',
  'pg_database',
  'pg_authid',
  'all_tables',
  'all_tab_columns',
  'all_users',
  'user_tables',
  'dba_users',
  'dba_tables',
  'msysobjects',
  'msysaccessobjects',
  'v$version',
  'v$instance',
  'mysql.user',
  'mysql.db',
  'sys.objects',
  'sys.tables',
  'sys.columns',
  'sys.databases',
  'sys.sql_logins',
  'sys.server_principals',
]);
const DANGEROUS = new Set([
  'xp_cmdshell',
  'xp_regread',
  'xp_dirtree',
  'xp_fileexist',
  'xp_servicecontrol',
  'sp_executesql',
  'sp_oacreate',
  'sp_oamethod',
  'sp_makewebtask',
  'sp_configure',
  'sp_addlogin',
  'sp_password',
  'utl_http',
  'utl_inaddr',
  'utl_file',
  'dbms_xmlquery',
  'dbms_java',
  'ctxsys',
]);
const DANGEROUS_CALLS = new Set(['load_file', 'extractvalue', 'updatexml', 'name_const', 'lo_import', 'lo_export', 'pg_read_file', 'pg_ls_dir', 'openrowset', 'opendatasource', 'xmltype']);
const INFO_FUNCTIONS = new Set(['version', 'database', 'current_user', 'system_user', 'session_user', 'user', 'schema', 'user_name', 'db_name', 'host_name', 'suser_name', 'current_database']);
const STRING_FUNCTIONS = new Set(['group_concat', 'concat_ws', 'concat', 'char', 'chr', 'ascii', 'substring', 'substr', 'mid', 'hex', 'unhex', 'ord', 'cast', 'convert']);
const STRING_FUNCTION_ARGS = new Set(['select', 'char', 'chr', 'table_name', 'column_name', 'schema_name', 'user', 'version', 'database', 'password', 'passwd', 'null', 'current_user']);
const IF_ARGS = new Set(['select', 'ascii', 'substring', 'substr', 'length', 'user', 'version', 'mid', 'database']);
const STACKED_SELECT_ARGS = new Set(['*', 'null', 'pg_sleep', 'sleep', 'benchmark', 'version', 'user', 'load_file', 'char', 'current_user', 'database', '@@version']);

/** After a boolean operator at `b`: a comparison or a constant that makes the condition always true or false. */
function tautologyAfter(t: SqlTokens, b: number, quoted: boolean): string | undefined {
  const open = t.next(b);
  let k = t.skipOps(open, '(', 3);
  const word = t.at(k);
  if (t.kind[k] === WORD && DELAY_FUNCTIONS.has(word) && t.isOp(t.next(k), '(')) return 'sleep_after_operator';
  // and (select ...): a subquery; "and select the drink" is English.
  if (t.kind[k] === WORD && word === 'select' && k !== open) return 'subquery_condition';
  if (quoted && t.kind[k] === WORD && (word === 'true' || word === 'false')) return 'quote_tautology';
  // ' and ascii(substring(...))>64   ' or exists(select ...)   ' or case when ...
  if (quoted && t.kind[k] === WORD && ((SQL_CONDITION_FUNCTIONS.has(word) && t.isOp(t.next(k), '(')) || (word === 'case' && t.at(t.next(k)) === 'when'))) return 'quote_tautology';
  // An operand: 'x', x, 1, '' (the empty string), then a comparison.
  const openQuote = t.kind[k] === QUOTE;
  if (openQuote) k = t.next(k);
  const operand = t.kind[k];
  if (operand === WORD || operand === NUM) k = t.next(k);
  else if (!openQuote) return undefined;
  if (t.kind[k] === QUOTE) k = t.next(k);
  k = t.skipOps(k, ')', 3);
  const rhs = t.skipOps(t.next(k), '(', 2);
  // A condition compares literals ('a'='a, 1=1, 2>1, x=x); "'Alice' or 'Bob' = winner" and "x like y" are English.
  const literal =
    t.kind[rhs] === QUOTE || t.kind[rhs] === NUM || (t.kind[rhs] === WORD && (t.isOp(t.next(rhs), '(') || t.at(rhs) === 'select' || (operand === WORD && t.at(rhs) === t.at(k - (openQuote ? 2 : 1)))));
  if (t.isCompare(k) && literal) {
    if (openQuote) return quoted ? 'quote_tautology' : 'string_tautology';
    if (quoted) return 'quote_tautology';
    if (operand !== NUM || t.kind[rhs] !== NUM) return undefined;
    // Unquoted numbers read like arithmetic in prose ("1 and 2 = 3 items", "5 < 10 and 10 > 5"): count them only
    // where a probe ends: `=` not followed by more words, an order comparison followed by a comment or the end of a clause.
    const after = t.next(rhs);
    const equality = t.at(k) === '=' || t.at(k) === '!=' || t.at(k) === '<>';
    const clauseEnds = t.isComment(after) || t.isBool(after) || t.isOp(after, ')') || t.isOp(after, ';') || CLAUSE_WORDS.has(t.at(after));
    if (equality ? t.kind[after] !== WORD || clauseEnds : clauseEnds) return 'number_tautology';
    return undefined;
  }
  if (!quoted) return undefined;
  // ' or 1--   ' or 1#   ' or 1;   ' or 1)
  if (operand === NUM && !openQuote && (k >= t.n || t.isComment(k) || t.isOp(k, ';') || t.isOp(k, ')'))) return 'quote_tautology';
  // ' or x is null   ' or x is not null
  if (t.at(k) === 'is' && (t.at(t.next(k)) === 'null' || (t.at(t.next(k)) === 'not' && t.at(t.next(t.next(k))) === 'null'))) return 'quote_tautology';
  return undefined;
}
/** After `;` at `i`: a statement an attacker stacks (`; drop table`, `; exec xp_...`, `; select @@version`). */
function stackedAfter(t: SqlTokens, i: number): boolean {
  const k = t.next(i);
  const w = t.at(k);
  const w2 = t.at(t.next(k));
  const w3 = t.at(t.next(t.next(k)));
  switch (w) {
    case 'drop':
      return w2 === 'table' || w2 === 'database' || w2 === 'schema' || w2 === 'user' || w2 === 'view';
    case 'shutdown':
      return true;
    case 'exec':
    case 'execute': {
      const target = w2 === '(' ? w3 : w2;
      return target.startsWith('master.') || target.startsWith('xp_') || target.startsWith('sp_') || target.startsWith('@');
    }
    case 'declare':
      return w2.startsWith('@');
    case 'waitfor':
      return w2 === 'delay' || w2 === 'time';
    case 'truncate':
      return w2 === 'table';
    case 'insert': {
      // insert into t (   insert into t values   insert into t select
      const after = t.at(t.next(t.next(t.next(k))));
      return w2 === 'into' && (after === '(' || after === 'values' || after === 'select');
    }
    case 'delete': {
      const after = t.next(t.next(t.next(k)));
      return w2 === 'from' && (after >= t.n || t.at(after) === 'where' || t.isOp(after, ';') || t.isComment(after));
    }
    case 'update':
      return t.kind[t.next(k)] === WORD && w3 === 'set' && t.isOp(t.next(t.next(t.next(t.next(k)))), '=');
    case 'create':
      return (
        w2 === 'user' ||
        w2 === 'login' ||
        w2 === 'procedure' ||
        w2 === 'function' ||
        w2 === 'trigger' ||
        ((w2 === 'table' || w2 === 'database') &&
          t.kind[t.next(t.next(k))] === WORD &&
          (t.next(t.next(t.next(k))) >= t.n || t.isOp(t.next(t.next(t.next(k))), '(') || t.isOp(t.next(t.next(t.next(k))), ';')))
      );
    case 'alter':
      return (w2 === 'table' || w2 === 'user' || w2 === 'login' || w2 === 'database') && t.kind[t.next(t.next(k))] === WORD;
    case 'grant':
      return w2 === 'all' || w2 === 'select' || w2 === 'insert' || w2 === 'update' || w2 === 'delete' || w2 === 'execute' || w2 === 'dba';
    case 'select':
      return STACKED_SELECT_ARGS.has(w2) || t.kind[t.next(k)] === NUM || w2.startsWith('@@');
    default:
      return false;
  }
}

/** Calls `hit` with each SQL signature id (without the `sql.` prefix) the tokens match. */
export function sqlSignals(t: SqlTokens, hit: (id: string) => void): void {
  const n = t.n;
  if (t.versioned) hit('versioned_comment');
  if (t.gluedComment) hit('inline_comment');
  for (let i = 0; i < n; i++) {
    const k = t.kind[i];
    const w = t.at(i);
    if (k === QUOTE || k === NUM) {
      const quoted = k === QUOTE;
      const j = t.skipOps(t.next(i), ')', 3);
      if (quoted) {
        // admin'--   admin'#   admin'/*   '; --   (read token by token: t.next() steps over block comments)
        let c = i + 1;
        for (let m = 0; m < 4 && (t.isOp(c, ')') || t.isOp(c, ';')); m++) c++;
        if (t.isComment(c)) hit(t.onlyDashesAfter(c) || (t.kind[c] === COMMENT && c === t.n - 1 && !t.source.endsWith('*/')) ? 'quote_comment_end' : 'quote_comment');
        if (t.isCompare(j) && t.kind[t.next(j)] === QUOTE) hit('quote_string_compare');
      }
      if (t.isBool(j)) {
        const found = tautologyAfter(t, j, quoted);
        if (found) hit(found);
      }
      // A backtick also quotes code in markdown ("`ORDER BY name`"): only ' and " break out of a string here.
      const stringQuote = quoted && w !== '`';
      if (t.isOp(j, ';') && AFTER_SEMICOLON.has(t.at(t.next(j))) && (stringQuote || stackedAfter(t, j))) hit('quote_semicolon_keyword');
      const kw = t.at(j);
      if (t.kind[j] === WORD) {
        if (QUOTE_KEYWORDS.has(kw) && (stringQuote || kw === 'union')) hit('quote_keyword');
        if ((kw === 'order' || kw === 'group') && t.at(t.next(j)) === 'by') {
          if (stringQuote) hit('quote_keyword');
          if (t.kind[t.next(t.next(j))] === NUM) hit('order_by_probe');
        }
      }
      if (!quoted && w.startsWith('0x') && w.length >= 10) hit('hex_literal');
      continue;
    }
    if (k === OP) {
      if (w === ';' && stackedAfter(t, i)) hit('stacked_query');
      else if (w === '(' && t.at(t.next(i)) === 'select') hit('subquery_literal');
      else if (w === '||' || w === '&&') {
        const found = tautologyAfter(t, i, false);
        if (found && found !== 'string_tautology') hit(found);
      }
      continue;
    }
    if (k !== WORD) continue;
    const j = t.next(i);
    switch (w) {
      case 'union': {
        let m = t.skipOps(j, '(', 3);
        if (t.at(m) === 'all' || t.at(m) === 'distinct') m = t.skipOps(t.next(m), '(', 3);
        if (t.at(m) === 'select') hit('union_select');
        break;
      }
      case 'or':
      case 'and':
      case 'xor': {
        const found = tautologyAfter(t, i, false);
        if (found) hit(found);
        break;
      }
      case 'select': {
        const a = t.at(j);
        // `select * from` is every SQL snippet's first line: only what probes are made of counts.
        if (a.startsWith('@@') || (a === 'null' && t.isOp(t.next(j), ','))) hit('select_list');
        else if (t.kind[j] === NUM && t.isOp(t.next(j), ',') && t.kind[t.next(t.next(j))] === NUM) hit('select_list');
        else if (INFO_FUNCTIONS.has(a) && t.isOp(t.next(j), '(') && t.isOp(t.next(t.next(j)), ')')) hit('select_list');
        for (let m = j, steps = 0; m < t.n && steps < 12; m = t.next(m), steps++) {
          if (t.at(m) === 'from' && t.kind[m] === WORD) {
            hit('select_from');
            break;
          }
        }
        break;
      }
      case 'sleep':
        if (t.isOp(j, '(') && t.kind[t.next(j)] === NUM) {
          hit('sleep_call');
          if (i > 0 && BEFORE_SLEEP.has(t.at(i - 1))) hit('sleep_after_operator');
        }
        break;
      case 'pg_sleep':
        if (t.isOp(j, '(')) hit('time_delay');
        break;
      case 'benchmark':
        if (t.isOp(j, '(') && t.kind[t.next(j)] === NUM && t.isOp(t.next(t.next(j)), ',')) hit('time_delay');
        break;
      case 'randomblob':
        if (t.isOp(j, '(') && t.kind[t.next(j)] === NUM && t.at(t.next(j)).length >= 6) hit('time_delay');
        break;
      case 'waitfor':
        if ((t.at(j) === 'delay' || t.at(j) === 'time') && t.kind[t.next(j)] === QUOTE) hit('time_delay');
        break;
      case 'dbms_pipe.receive_message':
      case 'dbms_lock.sleep':
        hit('time_delay');
        break;
      case 'into':
        if (t.at(j) === 'outfile' || t.at(j) === 'dumpfile') hit('dangerous_function');
        break;
      case 'exp':
        if (t.isOp(j, '(') && t.isOp(t.next(j), '~')) hit('dangerous_function');
        break;
      case 'exec':
      case 'execute': {
        const target = t.at(j);
        if (target.startsWith('master.') || target.startsWith('xp_') || target.startsWith('sp_')) hit('exec_procedure');
        break;
      }
      case 'having': {
        const m = t.skipOps(j, '(', 2);
        if (t.kind[m] === NUM && t.isCompare(t.next(m))) hit('having_tautology');
        break;
      }
      case 'case':
        if (t.at(j) === 'when') {
          for (let m = j, steps = 0; m < t.n && steps < 20; m = t.next(m), steps++) {
            if (t.at(m) === 'then' && t.kind[m] === WORD) {
              hit('case_when');
              break;
            }
          }
        }
        break;
      case 'if':
        if (t.isOp(j, '(')) {
          const m = t.skipOps(t.next(j), '(', 2);
          if ((t.kind[m] === NUM && t.isCompare(t.next(m))) || IF_ARGS.has(t.at(m))) hit('if_condition');
        }
        break;
      case 'drop':
        if ((t.at(j) === 'table' || t.at(j) === 'database') && t.kind[t.next(j)] === WORD) hit('drop_table');
        break;
      default:
        break;
    }
    if (w.startsWith('@@') && w.length > 3) hit('system_variable');
    const dot = w.indexOf('.');
    if (CATALOG.has(w) || (dot > 0 && (CATALOG.has(w.slice(0, dot)) || CATALOG.has(w.slice(w.lastIndexOf('.') + 1))))) hit('catalog');
    const head = dot > 0 ? w.slice(0, dot) : w;
    if (DANGEROUS.has(head) || (dot > 0 && DANGEROUS.has(w.slice(w.lastIndexOf('.') + 1)))) hit('dangerous_function');
    if (DANGEROUS_CALLS.has(w) && t.isOp(j, '(')) hit('dangerous_function');
    if (t.isOp(j, '(')) {
      const arg = t.next(j);
      if (INFO_FUNCTIONS.has(w) && t.isOp(arg, ')')) hit('info_function');
      if (STRING_FUNCTIONS.has(w) && (t.kind[arg] === NUM || STRING_FUNCTION_ARGS.has(t.at(arg)) || t.at(arg).startsWith('@@'))) hit('string_function');
      if ((w === 'char' || w === 'chr') && t.kind[arg] === NUM && t.isOp(t.next(arg), ')')) {
        const op = t.next(t.next(arg));
        const other = t.at(t.next(op));
        if ((t.isOp(op, '+') || t.isOp(op, '||') || t.isOp(op, ',')) && (other === 'char' || other === 'chr')) hit('char_concat');
      }
    }
  }
}
