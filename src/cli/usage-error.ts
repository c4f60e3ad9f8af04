/** A usage problem (bad flag, missing file argument): printed as one line, exit code 2. */
export class UsageError extends Error {}
