# gotunnel in a container: the CLI, the daemon and the builtin engine, running as a non-root user.
#
#   make image                      # wheels into dist/wheels, then `docker build -t gotunnel .`
#   docker run --network host -v gotunnel-data:/data gotunnel start --foreground -d app -p 3000
#
# The wheels are built on the host (`make wheels`), so the build itself needs no network. On a
# normal machine the base is the official Python image; where nothing can be pulled, pass any
# local image with Python 3.11 and pip (`--build-arg PYTHON_IMAGE=...`; the tests build one
# from this machine's own Python, see tests/docker_helpers.py).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

COPY dist/wheels/ /tmp/wheels/
# Exec form throughout: the base needs no shell.
RUN ["python3", "-m", "pip", "install", "--no-cache-dir", "--no-index", "--find-links", "/tmp/wheels", \
     "gotunnel-core[docker]", "gotunnel-builtin-proxy"]
RUN ["python3", "-c", "import os, shutil; shutil.rmtree('/tmp/wheels'); [os.makedirs(p, exist_ok=True) or os.chown(p, 10001, 10001) for p in ('/data', '/etc/gotunnel')]"]

# Non-root: gotunnel needs no privileges (ports above 1024; map 80/443 with -p or a Service).
USER 10001:10001
WORKDIR /etc/gotunnel
# State (CA, certificates, tunnels) lives in the /data volume; a gotunnel.toml mounted into
# /etc/gotunnel is found as ./gotunnel.toml. mDNS is off: container networks do not carry
# multicast to the LAN.
ENV HOME=/data \
    GOTUNNEL_STATE_DIR=/data/state \
    GOTUNNEL_BIND=0.0.0.0 \
    GOTUNNEL_HTTP_PORT=8080 \
    GOTUNNEL_HTTPS_PORT=8443 \
    GOTUNNEL_MDNS=0 \
    GOTUNNEL_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8080 8443
ENTRYPOINT ["gotunnel"]
CMD ["start", "--foreground"]
