/*
 * HTTP/2 error codes (RFC 9113 §7), named as node:http2's constants name
 * them, for the modules that close streams and sessions. Here rather than
 * read from node:http2: a module on every sidecar's path that imported it for
 * three numbers would load it at start, and node:http2 (with node:http, which
 * it loads) costs a plaintext sidecar ~15 ms of start-up that one never called
 * over HTTP/2 does not need (./listener.ts creates its HTTP/2 server on demand).
 */

export const NGHTTP2_NO_ERROR = 0x0;
export const NGHTTP2_INTERNAL_ERROR = 0x2;
export const NGHTTP2_ENHANCE_YOUR_CALM = 0xb;
