import { AMP, BACKTICK, BRACE, BSLASH, COLON, DOLLAR, DOT, hasAny, isIdentChar, isLetter, NL, NUL, needles, PAREN, PIPE, QUOTE, SEMI, SLASH } from './injection-text.ts';

/*
 * Path traversal and command injection signatures (weights:
 * injection-signatures.ts): `../` hops and the files they aim at, file-reading
 * URL schemes, NUL; a shell separator or substitution followed by a command,
 * and the shapes of reverse shells and downloads piped to a shell. Linear:
 * indexOf walks and bounded look-around.
 */

const LEADING_HOP = /^\.{2,4}[/\\]/;
const QUOTE_SEPARATOR = /["'`][;|&\n] ?[a-z]{2,12}\b/;
const WINDOWS_ROOT = /[a-z]:\/{1,2}(?:windows|winnt|inetpub)/;
const REPEATED_SLASH = /\/{2,}/g;
const NET_COMMAND = /^ (?:user|localgroup|view|use|group)\b/;

/** The regexes of this file: each must pass the ReDoS check (tested). */
export const SHELL_REGEXES: readonly RegExp[] = [LEADING_HOP, QUOTE_SEPARATOR, WINDOWS_ROOT, REPEATED_SLASH, NET_COMMAND];

// --- Path traversal

/** `../` (or `..\`) hops in a value, with the filler attackers add (`....//`, `..;/`): counted up to 3. */
function traversalHops(text: string): number {
  let hops = 0;
  for (let i = text.indexOf('..'); i >= 0 && hops < 3; i = text.indexOf('..', i)) {
    let j = i + 2;
    while (j < text.length && j - i < 8 && (text.charCodeAt(j) === 46 || text.charCodeAt(j) === 59)) j++;
    const c = text.charCodeAt(j);
    if (c === 47 || c === 92) hops++;
    i = j;
  }
  return hops;
}

const UNIX_SECRET_FILES = needles(
  ['/etc/', '/proc/self/'],
  ['/etc/passwd', '/etc/shadow', '/etc/master.passwd', '/etc/sudoers', '/etc/gshadow', '/proc/self/environ', '/proc/self/cmdline', '/proc/self/fd/'],
);
const UNIX_SYSTEM_FILES = needles(
  ['/etc/', '/proc/', '/var/', '/root/', '/usr/local/'],
  [
    '/etc/group',
    '/etc/hosts',
    '/etc/issue',
    '/etc/motd',
    '/etc/crontab',
    '/etc/fstab',
    '/etc/hostname',
    '/etc/resolv.conf',
    '/etc/profile',
    '/etc/bashrc',
    '/etc/ssh/',
    '/etc/httpd/',
    '/etc/apache2/',
    '/etc/nginx/',
    '/etc/mysql/',
    '/etc/php',
    '/proc/self/',
    '/proc/version',
    '/proc/cpuinfo',
    '/var/log/',
    '/var/mail/',
    '/var/spool/',
    '/root/.',
    '/usr/local/etc/',
  ],
);
const WINDOWS_FILES = needles(
  ['.ini', 'system32', '/windows/'],
  ['/boot.ini', '/win.ini', '/system.ini', '/windows/system32', '/winnt/system32', '/windows/repair', '/windows/debug', 'system32/config/'],
);
const SECRET_FILES = needles(
  ['/.', 'config', '/id_', '/authorized_keys'],
  [
    '/.htaccess',
    '/.htpasswd',
    '/.env',
    '/.git/config',
    '/.git/head',
    '/.ssh/',
    '/.aws/credentials',
    '/.docker/config.json',
    '/web.config',
    '/wp-config.php',
    '/.bash_history',
    '/.npmrc',
    '/.pgpass',
    '/.netrc',
    '/id_rsa',
    '/id_dsa',
    '/id_ecdsa',
    '/id_ed25519',
    '/authorized_keys',
  ],
);
const FILE_SCHEMES = new Set(['file', 'php', 'phar', 'expect', 'zip', 'glob', 'jar', 'netdoc', 'gopher', 'dict', 'zlib', 'ogg', 'rar', 'ssh2']);

export function traversalSignals(text: string, mask: number, hit: (id: string) => void): void {
  if (mask & NUL) hit('nul_byte');
  if (!(mask & (SLASH | BSLASH))) return;
  const hops = mask & DOT ? traversalHops(text) : 0;
  if (hops >= 2) hit('dot_dot_slash');
  else if (hops === 1) hit(LEADING_HOP.test(text) ? 'leading_dot_dot' : 'one_dot_dot');
  {
    // One spelling of separators, and a leading one so "etc/passwd" reads like "/etc/passwd".
    let path = `/${text.includes('\\') ? text.replaceAll('\\', '/') : text}`;
    if (path.includes('//')) path = path.replace(REPEATED_SLASH, '/');
    if (path.includes('/./')) path = path.replaceAll('/./', '/').replaceAll('/./', '/');
    if (hasAny(path, UNIX_SECRET_FILES)) hit('unix_secret_file');
    if (hasAny(path, UNIX_SYSTEM_FILES)) hit('unix_system_file');
    if (hasAny(path, WINDOWS_FILES)) hit('windows_file');
    if (WINDOWS_ROOT.test(path)) hit('windows_root');
    if (hasAny(path, SECRET_FILES)) hit('secret_file');
  }
  for (let p = mask & COLON ? text.indexOf('://') : -1; p >= 0; p = text.indexOf('://', p + 3)) {
    let b = p;
    while (b > 0 && p - b < 16 && (isLetter(text.charCodeAt(b - 1)) || (text.charCodeAt(b - 1) >= 48 && text.charCodeAt(b - 1) <= 57))) b--;
    const scheme = text.slice(b, p);
    if (FILE_SCHEMES.has(scheme) || scheme.endsWith('zlib')) hit('file_scheme');
  }
}

// --- Command injection

/** Commands whose names are not English words: one after a shell separator is enough. */
const STRONG_COMMANDS = new Set([
  'whoami',
  'uname',
  'ifconfig',
  'ipconfig',
  'netstat',
  'nslookup',
  'wget',
  'curl',
  'ncat',
  'netcat',
  'bash',
  'zsh',
  'ksh',
  'busybox',
  'powershell',
  'pwsh',
  'systeminfo',
  'tasklist',
  'certutil',
  'bitsadmin',
  'wmic',
  'telnet',
  'socat',
  'xxd',
  'crontab',
  'useradd',
  'usermod',
  'printenv',
  'getent',
  'nmap',
  'mkfifo',
  'nohup',
  'cmd.exe',
  'powershell.exe',
  'net.exe',
  'uptime',
  'hostname',
]);
/** Commands that are also words ("id", "cat", "env"): they count when shell syntax follows them. */
const WORD_COMMANDS = new Set([
  'id',
  'ls',
  'ps',
  'pwd',
  'rm',
  'env',
  'su',
  'sudo',
  'sh',
  'dash',
  'csh',
  'tcsh',
  'python',
  'python2',
  'python3',
  'perl',
  'ruby',
  'php',
  'lua',
  'node',
  'base64',
  'chmod',
  'chown',
  'passwd',
  'nc',
  'cat',
  'dir',
  'echo',
  'ping',
  'sleep',
  'kill',
  'find',
  'head',
  'tail',
  'type',
  'touch',
  'net',
  'reg',
  'cmd',
  'more',
  'less',
  'awk',
  'sed',
  'grep',
  'cp',
  'mv',
  'timeout',
  'ver',
  'set',
  'systemctl',
  'nc.exe',
]);

/** Whether what follows a word command at `j` is shell: the end, an operator, a flag, a path, a variable. */
function shellFollows(text: string, j: number, word: string): boolean {
  if (j >= text.length) return true;
  const c = text.charCodeAt(j);
  if (c === 10 || c === 59 || c === 124 || c === 38 || c === 60 || c === 62 || c === 96 || c === 41 || c === 36) return true;
  if (c !== 32) return false;
  const d = text.charCodeAt(j + 1);
  if (j + 1 >= text.length) return true;
  // A flag, a path, a variable, a redirection, or a host and count for ping, seconds for sleep.
  if (d === 45 || d === 47 || d === 126 || d === 36 || d === 46 || d === 60 || d === 62 || d === 92) return true;
  if (word === 'sleep' || word === 'ping' || word === 'timeout' || word === 'kill' || word === 'chmod') return d >= 48 && d <= 57;
  // A drive: dir c:\   type c:\windows\win.ini
  if ((word === 'dir' || word === 'type') && isLetter(d) && text.charCodeAt(j + 2) === 58) return true;
  // echo WORD, and nothing else: a probe ("; echo vulnerable"), not a sentence.
  if (word === 'echo') {
    let e = j + 1;
    while (e < text.length && e - j < 40 && isIdentChar(text.charCodeAt(e))) e++;
    return e > j + 1 && (e >= text.length || ';|&`\n'.includes(text[e]!));
  }
  if (word === 'net') return NET_COMMAND.test(text.slice(j, j + 12));
  if (word === 'reg') return text.startsWith(' query', j);
  return false;
}

/** The command word at `p` (a path such as /usr/bin/id read as id), and where it ends. */
function commandAt(text: string, p: number): [string, number] {
  let j = p;
  while (j < text.length && j - p < 40) {
    const c = text.charCodeAt(j);
    if (!(isIdentChar(c) || c === 46 || c === 47 || c === 45 || c === 92)) break;
    j++;
  }
  const word = text.slice(p, j);
  // An absolute path runs its last part (/usr/bin/id is id); a relative one (../etc/passwd) is a file, not a command.
  const slash = Math.max(word.lastIndexOf('/'), word.lastIndexOf('\\'));
  if (slash < 0) return [word, j];
  return [word.charCodeAt(0) === 47 || word.charCodeAt(0) === 92 ? word.slice(slash + 1) : '', j];
}

function isCommand(text: string, p: number): boolean {
  const [word, end] = commandAt(text, p);
  if (STRONG_COMMANDS.has(word)) return end >= text.length || !isIdentChar(text.charCodeAt(end));
  return WORD_COMMANDS.has(word) && shellFollows(text, end, word);
}

const REVERSE_SHELLS = needles(
  [' -', 'mkfifo', '<&', '<>', 'socket', 'pty', 'fsockopen'],
  [' -e /bin/', ' -e sh', ' -e bash', ' -e cmd', 'sh -i', 'bash -i', 'bash -c', 'sh -c ', 'mkfifo /', '0<&196', 'exec 5<>', '/bin/sh -i', 'socket.socket(', 'pty.spawn(', 'fsockopen('],
);
const SHELL_PATHS = needles(
  ['/bin/', 'cmd', 'powershell'],
  ['/bin/sh', '/bin/bash', '/bin/zsh', '/bin/dash', '/bin/busybox', 'cmd.exe', 'cmd /c', 'cmd /k', 'powershell -e', 'powershell -nop', 'powershell -c', 'powershell.exe', 'powershell -w'],
);
const REDIRECTS = needles(['>'], ['> /tmp/', '>/tmp/', '> /var/www', '>/var/www', '> /dev/shm', '>/dev/shm', '>> /etc/', '>>/etc/', '> /etc/', '>/etc/']);

export function commandSignals(text: string, mask: number, hit: (id: string) => void): void {
  if (isCommand(text, 0)) hit('leading_command');
  for (let i = mask & (SEMI | PIPE | AMP | NL | BACKTICK | DOLLAR) ? 0 : text.length; i < text.length; i++) {
    const c = text.charCodeAt(i);
    let p: number;
    let id: string;
    if (c === 59 || c === 124 || c === 38 || c === 10) {
      p = i + 1;
      if ((c === 124 || c === 38) && text.charCodeAt(p) === c) p++; // || &&
      id = 'separator_command';
    } else if (c === 36 && text.charCodeAt(i + 1) === 40) {
      p = i + 2;
      id = 'substitution';
    } else if (c === 96) {
      p = i + 1;
      // Markdown quotes code in backticks too ("run `ls -la`"): a backtick counts as a shell's when it opens the value or follows an operator.
      let b = i - 1;
      if (b >= 0 && text.charCodeAt(b) === 32) b--;
      id = b < 0 || '=;|&("\''.includes(text[b]!) ? 'substitution' : 'inline_code';
    } else {
      continue;
    }
    if (text.charCodeAt(p) === 32) p++;
    // A markdown table row ("| id | name |") is not a pipe into `id`.
    if (c === 124 && id === 'separator_command') {
      const [, end] = commandAt(text, p);
      if (text.startsWith(' |', end)) continue;
    }
    if (isCommand(text, p)) hit(id);
  }
  // {cat,/etc/passwd}: bash brace expansion runs a command without a space.
  for (let p = mask & BRACE ? text.indexOf('{') : -1; p >= 0; p = text.indexOf('{', p + 1)) {
    const [word, end] = commandAt(text, p + 1);
    if (text.charCodeAt(end) === 44 /* , */ && (STRONG_COMMANDS.has(word) || WORD_COMMANDS.has(word))) hit('brace_expansion');
  }
  if (mask & DOLLAR && (text.includes('$ifs') || text.includes('{ifs}'))) hit('shell_variable');
  for (let p = mask & PAREN ? text.indexOf('()') : -1; p >= 0; p = text.indexOf('()', p + 2)) {
    // () { :; };   the Shellshock function definition
    const rest = text.slice(p + 2, p + 16).replaceAll(' ', '');
    if (rest.startsWith('{:;};') || rest.startsWith('{;};')) hit('shellshock');
  }
  if (mask & SLASH && (text.includes('/dev/tcp/') || text.includes('/dev/udp/'))) hit('dev_tcp');
  if (hasAny(text, REVERSE_SHELLS)) hit('reverse_shell');
  if (hasAny(text, SHELL_PATHS)) hit('shell_path');
  if (hasAny(text, REDIRECTS)) hit('redirect_file');
  if (mask & QUOTE && mask & (SEMI | PIPE | AMP | NL) && QUOTE_SEPARATOR.test(text)) hit('quote_separator');
}
