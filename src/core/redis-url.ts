/** The URL without credentials, for logs and /config_dump. Apart from redis-client.ts so that naming a URL does not load the Redis client. */
export function redactRedisUrl(url: string): string {
  return url.replace(/^(rediss?:\/\/)[^@/]*@/, '$1');
}
