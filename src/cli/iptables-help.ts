// Help of `meshgate iptables`, apart from the command so the others (a sidecar above all) do not load it.
export const IPTABLES_HELP = `Usage: meshgate iptables [options] [--dry-run | --cleanup]

Installs the redirect rules of a pod (as root or with NET_ADMIN, in the pod's
network namespace): inbound TCP to the pod goes to the sidecar's inbound
listener, outbound TCP from every uid but the sidecar's goes to its outbound
listener. Own chains in the nat table (MESHGATE_INBOUND, MESHGATE_IN_REDIRECT,
MESHGATE_OUTPUT, MESHGATE_REDIRECT): running it again replaces their rules,
--cleanup removes them. IPv4 only.

Never captured: the sidecar's ports (inbound, outbound, 15000 admin, 15443
edge), connections of --proxy-uid, loopback, and what is excluded below.

Options:
  --inbound-port N              inbound listener (default 15006)
  --outbound-port N             outbound listener (default 15001)
  --proxy-uid N                 uid the sidecar runs as (default 1337)
  --app-ports N,..              ports the app serves (checked: never excluded)
  --exclude-inbound-ports N,..  inbound ports left alone (e.g. kubelet probe ports)
  --exclude-outbound-ports N,.. outbound destination ports left alone
  --exclude-outbound-cidrs C,.. outbound destinations left alone (a.b.c.d/n; IPv6 ones are
                                accepted and ignored, as IPv6 is not captured)
  --dry-run                     print the iptables-restore input, change nothing
  --cleanup                     remove the rules and chains`;
