# The one image of the platform: every Deployment runs it with its own `--target`.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 ROOMEE_HOST=0.0.0.0 ROOMEE_DATA_DIR=/var/lib/roomee
WORKDIR /app
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install --no-cache-dir . && useradd --system --uid 10001 roomee && mkdir -p /var/lib/roomee \
    && chown roomee /var/lib/roomee
USER 10001
EXPOSE 8080
ENTRYPOINT ["roomee"]
CMD ["run", "--target", "all"]
