import type { InterceptionSpec } from '../../../src/config/interception-spec.ts';

/** A pod with two app ports, a probe port, a database port and two CIDRs: the spec the golden rules are of. */
export const GOLDEN_SPEC: InterceptionSpec = {
  inboundPort: 15006,
  outboundPort: 15001,
  proxyUid: 1337,
  appPorts: [8080, 9090],
  excludeInboundPorts: [8081],
  excludeOutboundPorts: [5432],
  excludeOutboundCidrs: ['10.96.0.1/32', '169.254.169.254/32'],
};

// The whole rule list, pinned: a change here changes what every injected pod runs.
export const GOLDEN_RULES = `*nat
:MESHGATE_INBOUND - [0:0]
:MESHGATE_IN_REDIRECT - [0:0]
:MESHGATE_OUTPUT - [0:0]
:MESHGATE_REDIRECT - [0:0]
-A MESHGATE_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A MESHGATE_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A MESHGATE_INBOUND -p tcp --dport 15006 -j RETURN
-A MESHGATE_INBOUND -p tcp --dport 15001 -j RETURN
-A MESHGATE_INBOUND -p tcp --dport 15000 -j RETURN
-A MESHGATE_INBOUND -p tcp --dport 15443 -j RETURN
-A MESHGATE_INBOUND -p tcp --dport 8081 -j RETURN
-A MESHGATE_INBOUND -p tcp -j MESHGATE_IN_REDIRECT
-A MESHGATE_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A MESHGATE_OUTPUT -o lo -j RETURN
-A MESHGATE_OUTPUT -p tcp --dport 5432 -j RETURN
-A MESHGATE_OUTPUT -d 10.96.0.1/32 -j RETURN
-A MESHGATE_OUTPUT -d 169.254.169.254/32 -j RETURN
-A MESHGATE_OUTPUT -j MESHGATE_REDIRECT
-A PREROUTING -p tcp -j MESHGATE_INBOUND
-A OUTPUT -p tcp -j MESHGATE_OUTPUT
COMMIT
`;
