/** 127.0.0.0/8, ::1, and 127.x in its IPv4-mapped form (::ffff:127.0.0.1), as node reports a peer's address. */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (address === undefined) return false;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return v4.startsWith('127.') || address === '::1';
}
