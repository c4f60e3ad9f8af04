import type { RequestHead, RequestSink } from '../../src/proxy/h1-request-parser.ts';

/** What a RequestParser handed on: its heads, the body bytes as latin1, and how many requests it completed. */
export interface RecordedRequests {
  readonly heads: RequestHead[];
  body: string;
  completes: number;
}

/** A sink that records into `out`; a body that came in the read of its head (wholeBody) counts as body bytes too. */
export function recordingSink(out: RecordedRequests): RequestSink {
  return {
    onHead: (head) => {
      out.heads.push(head);
      if (head.wholeBody !== undefined) out.body += head.wholeBody.toString('latin1');
    },
    onBody: (chunk) => {
      out.body += chunk.toString('latin1');
    },
    onComplete: () => {
      out.completes++;
    },
  };
}
