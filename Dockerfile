# sinchbot gateway image. Build: docker build -t sinchbot .
# Run:   docker run -p 8080:8080 -e SINCHBOT_REDIS_URL=redis://redis:6379/0 \
#          -e SINCHBOT_API_KEY=... -e SINCHBOT_API_SECRET=... sinchbot
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY plugins ./plugins
# with the speed extra (uvloop, orjson): sinchbot serve uses them
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[speed]"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    SINCHBOT_LOG_FORMAT=json SINCHBOT_DATA_DIR=/data
RUN useradd --create-home --uid 10001 sinchbot \
    && mkdir -p /data && chown sinchbot /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER sinchbot
WORKDIR /home/sinchbot
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"
CMD ["sinchbot", "serve", "--host", "0.0.0.0", "--port", "8080"]
