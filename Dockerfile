# syntax=docker/dockerfile:1
#
# The image runs the bundle `npm run build` makes (dist/meshgate/: one minified module graph,
# less memory and a faster start than the TypeScript sources, which a checkout runs with Node's
# type stripping). The Node major must match the `node` devDependency (package.json).
# `--omit=dev` drops that npm package, which is fine: this image's own node is 24.
#
#   docker build -t meshgate .
#   docker run --rm -v "$PWD/sidecar.yaml:/etc/meshgate/sidecar.yaml:ro" meshgate

ARG NODE_IMAGE=node:24-bookworm-slim

# Stage 1: type-check and bundle with the dev dependencies, so a tree that does not type-check
# never becomes an image. Only the bundle reaches the final image.
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: the `node` devDependency would download a second Node 24; the image has one.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY bin/ bin/
COPY src/ src/
COPY scripts/build.ts scripts/
# Called directly, not through npx: npx would put node_modules/.bin (whose `node` shim is not
# installed with --ignore-scripts) first on PATH.
RUN node_modules/.bin/tsc -p . && node scripts/build.ts

# Stage 2: the runtime image, production dependencies only. One image for every role and for
# the init container that `meshgate inject` adds to pods, which runs `meshgate iptables`: hence
# iptables (its nft and legacy back ends). It runs as root there, with NET_ADMIN and NET_RAW only.
FROM ${NODE_IMAGE}
ENV NODE_ENV=production
# A smaller young generation (V8's default grows each semi-space to 16 MB): a sidecar under load
# held ~170 MB RSS with the default and ~127 MB with 4 MB, at no CPU per request we could measure
# (bench/README.md, "Cost per pod"). Paid once per pod, so it is the image's default.
ENV NODE_OPTIONS=--max-semi-space-size=4
# glibc gives each thread that calls malloc under contention an arena of its own (up to 8 per core);
# under load a sidecar's V8 helper threads (GC, compiler) filled two more besides the main one. With
# at most two, bench:mesh's sidecars peaked at a median VmHWM of 124.5 MiB against 130.5 (14 and 20
# samples after 16 s of wrk -c50) at no CPU per request we could measure (one hop, ABBA 0.975); one
# arena took 11 MiB off but looked ~7% dearer in CPU on one hop (median of 6 ABBA rounds, 5 above 1;
# bench/README.md, "Cost per pod").
ENV MALLOC_ARENA_MAX=2
# The third memory setting, a V8 flag (--no-maglev-destroy-on-background: 6-9 MiB off a sidecar's peak),
# is set by the sidecar itself once it has started (src/core/compiler-memory.ts says why not here).
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY bin/ bin/
# No src/ in the image: bin/meshgate.js runs the bundle when there are no sources beside it.
# The bundle loads a few packages from node_modules, each only when the config needs it: koffi
# (interception's FFI), QuickJS (Filter documents), ajv and ajv-formats (a ValidationPolicy jsonSchema rule).
COPY --from=build /src/dist/ dist/
# The glob lets the build work while proto/ is still empty (git keeps no empty folders).
COPY prot[o]/ proto/

# Code stays owned by root and read-only to the process; a numeric user lets Kubernetes
# verify runAsNonRoot. uid 1337 is the sidecar's: the redirect rules let its own traffic out
# uncaptured (meshgate iptables --proxy-uid 1337), so an app must never run as it.
RUN groupadd --system --gid 1337 meshgate \
 && useradd --system --uid 1337 --gid meshgate --no-create-home --shell /usr/sbin/nologin meshgate
USER 1337:1337

# sidecar admin, outbound, inbound; policy-server gRPC and admin; CA gRPC and admin; injector
EXPOSE 15000 15001 15006 15010 15014 15012 15013 15017

# Assumes the admin listener on its default port 15000 (Kubernetes ignores HEALTHCHECK; use
# livenessProbe /live and readinessProbe /ready there).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:15000/live').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# V8's defaults for its compilers: `node --no-concurrent-recompilation bin/meshgate.js` takes 11-14 MiB
# off a sidecar's peak RSS but blocks the event loop for each compile while it warms up (a longer
# latency tail for its first seconds of load); bench/README.md, "Cost per pod", has the figures.
ENTRYPOINT ["node", "bin/meshgate.js"]
CMD ["sidecar", "--config", "/etc/meshgate/sidecar.yaml"]
