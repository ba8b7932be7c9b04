# The one image of the platform: every Deployment runs it with its own `--target` (the services,
# the operator, and `roomee migrate` for the migrations Job). It runs as the non-root user 10001
# and needs nothing writable but /tmp and its data dir (the chart mounts emptyDirs there and keeps
# the root filesystem read-only).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python3 -m venv /opt/roomee
# The dependencies first, in a layer of their own that only a change of pyproject.toml rebuilds.
COPY pyproject.toml ./
RUN /opt/roomee/bin/python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && /opt/roomee/bin/pip install --no-cache-dir -r /tmp/requirements.txt
COPY setup.py README.md ./
COPY services ./services
COPY operator ./operator
# A wheel install (not editable): only what setuptools packages reaches the image, so a module the
# wheel misses fails here, and `roomee --version` imports the command's modules.
RUN /opt/roomee/bin/pip install --no-cache-dir --no-deps . \
    && /opt/roomee/bin/roomee --version

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/roomee/bin:$PATH \
    ROOMEE_HOST=0.0.0.0 ROOMEE_PORT=8080 ROOMEE_DATA_DIR=/var/lib/roomee
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /var/lib/roomee roomee \
    && mkdir -p /var/lib/roomee && chown 10001:10001 /var/lib/roomee
COPY --from=build /opt/roomee /opt/roomee
USER 10001:10001
WORKDIR /var/lib/roomee
EXPOSE 8080
ENTRYPOINT ["roomee"]
CMD ["run", "--target", "all"]
