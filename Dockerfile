# syntax=docker/dockerfile:1
# Warden: one container, no --privileged. See README "Deployment" for the docker run line.
#
# Two images (README "Image variants"):
#   docker build -t warden .                     full: all 13 languages LibreChat offers (the default)
#   docker build -t warden:slim --target slim .  slim: Python (with its data stack) and Bash only

# nsjail is packaged by neither Debian nor Ubuntu: build the pinned upstream release.
FROM debian:bookworm-slim AS nsjail
ARG NSJAIL_VERSION=3.6
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates git make g++ pkg-config bison flex protobuf-compiler libprotobuf-dev libnl-route-3-dev \
 && rm -rf /var/lib/apt/lists/*
RUN git clone --depth 1 --branch "${NSJAIL_VERSION}" --recurse-submodules --shallow-submodules \
      https://github.com/google/nsjail.git /src/nsjail \
 && make -C /src/nsjail -j"$(nproc)" \
 && install -m 0755 /src/nsjail/nsjail /usr/local/bin/nsjail

# The server's npm dependencies, without the dev tools.
FROM node:20-bookworm-slim AS modules
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

# The files of Warden itself, gathered once and copied last into each image below, so that a change
# to the server rebuilds one small layer, not the runtimes under it.
FROM scratch AS app
COPY --from=modules /app/node_modules /app/node_modules
COPY package.json package-lock.json nsjail.cfg tsconfig.json /app/
COPY bin /app/bin
COPY src /app/src
COPY sandbox /app/sandbox
COPY deploy/entrypoint.sh deploy/private-cgroups.py /app/deploy/

FROM node:20-bookworm-slim AS runtimes-slim
# nsjail's runtime libraries, bubblewrap (fallback driver), setpriv (util-linux), tini as PID 1 (it
# reaps whatever a killed jail leaves to it), and the Python data stack the workers preload and offer.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      tini bubblewrap util-linux bash coreutils jq libprotobuf32 libnl-route-3-200 \
      python3 python3-numpy python3-pandas python3-matplotlib python3-scipy python3-sklearn python3-seaborn \
      python3-sympy python3-openpyxl python3-xlsxwriter python3-docx python3-pypdf python3-pil python3-tabulate \
 && rm -rf /var/lib/apt/lists/*
COPY --from=nsjail /usr/local/bin/nsjail /usr/local/bin/nsjail
# matplotlib's font cache, built once here instead of at every zygote start (sandbox/preload.py)
RUN mkdir -p /usr/local/share/warden/matplotlib \
 && MPLCONFIGDIR=/usr/local/share/warden/matplotlib python3 -c "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot" \
 && chmod -R a+rX /usr/local/share/warden
WORKDIR /app
ENV HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/data \
    RUN_DIR=/run/warden \
    JAIL=nsjail
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:' + (process.env.PORT || 8000) + '/health/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"
ENTRYPOINT ["/usr/bin/tini", "--", "/app/deploy/entrypoint.sh"]
CMD ["/app/bin/warden", "start"]

# Every other language LibreChat's execute_code offers (src/exec/languages/). JavaScript runs on this
# image's own Node 20 (/usr/local/bin/node): Debian's nodejs would add an older second Node. TypeScript is
# the npm package, under /usr/local where jails see it. openjdk's postinst needs the man directory that
# the slim base leaves out.
FROM runtimes-slim AS runtimes-full
ARG TYPESCRIPT_VERSION=5.9
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc g++ default-jdk-headless php-cli r-base-core golang-go rustc gdc gfortran \
 && rm -rf /var/lib/apt/lists/* \
 && npm install -g --no-audit --no-fund "typescript@${TYPESCRIPT_VERSION}" \
 && npm cache clean --force

FROM runtimes-slim AS slim
COPY --from=app /app /app

# the default target: the last stage
FROM runtimes-full AS full
COPY --from=app /app /app
