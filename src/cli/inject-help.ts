// Help of `meshgate inject` and `meshgate injector`, apart from the commands so the others (a sidecar above all) do not load them.
export const INJECT_HELP: Record<string, string> = {
  inject: `Usage: meshgate inject -f FILE [-f FILE]... [--config FILE] [--namespace NS]

Prints FILE (multi-document YAML; "-" reads stdin) with the meshgate sidecar
added to every Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and
CronJob pod template, like 'istioctl kube-inject':
  meshgate inject -f app.yaml | kubectl apply -f -
Adds an init container running 'meshgate iptables' (NET_ADMIN and NET_RAW
only) and the sidecar as a native sidecar (uid 1337, read-only root file
system) whose startup probe holds the app back until it is ready. Pods that
are already injected, opted out (meshgate.dev/inject: "false") or on the host
network are left as they are (noted on stderr); other documents pass through.
A pod that cannot be injected safely (a probe on the captured app port, a bad
annotation) is reported on stderr and nothing is printed: exit 1.

Options:
  -f, --filename FILE   input file, repeatable; "-" for stdin
  --config FILE         injector config (the webhook's); default: built-in
                        defaults matching deploy/k8s, trust bundle from
                        ./certs/trust-bundle.pem ('meshgate certs init')
  -n, --namespace NS    namespace of objects that name none (default "default")`,
  injector: `Usage: meshgate injector --config FILE

Runs the mutating admission webhook (HTTPS, default port 15017): POST
/inject takes an AdmissionReview v1 for a pod creation and answers with a
JSON Patch that adds the sidecar, exactly as 'meshgate inject' would; also
GET /live, /ready and /metrics. FILE is YAML (the injector config; tls.certFile
and tls.keyFile are required here). The MutatingWebhookConfiguration in
deploy/k8s sends it the pods of namespaces labelled meshgate.dev/inject=enabled.
A renewed certificate is served as soon as its files change (a Secret update).
SIGTERM or SIGINT stops it (exit 0).`,
};
