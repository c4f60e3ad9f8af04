/** The upstream's fixed response: 100 bytes. Targets are checked to return exactly this before load. */
export const ECHO_BODY = `${'meshgate bench upstream body '.padEnd(99, '.')}\n`;
