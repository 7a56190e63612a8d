# syntax=docker/dockerfile:1
# One build, one slim image per service. Build a service's image by its target:
#   docker build --target market    -t trading-market .
#   docker build --target backtest  -t trading-backtest .
#   docker build --target portfolio -t trading-portfolio .
#   docker build --target predictor -t trading-predictor .   (the only one with the ML stack)
#   docker build --target gateway   -t trading-gateway .
# The project is installed from its wheel (no editable install): the OpenAPI specs travel
# inside it as package data (gateway_mcp/specs), each Alembic chain beside its tables
# (shared/migrations, services/<name>/migrations).
ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: the project's wheel ------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN pip install --no-cache-dir "setuptools>=69" wheel
COPY pyproject.toml constraints.txt README.md ./
COPY shared ./shared
COPY services ./services
COPY gateway_mcp ./gateway_mcp
COPY trading ./trading
COPY openapi ./openapi
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels .

# ---- runtime: the web/numerics stack every service shares, as a non-root user ----------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATA_DIR=/data \
    NUMBA_CACHE_DIR=/data/numba-cache
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin trading \
    && mkdir -p /data \
    && chown trading:trading /data
COPY constraints.txt /tmp/constraints.txt
COPY --from=build /wheels /wheels
RUN pip install -c /tmp/constraints.txt /wheels/trading_platform-*.whl
WORKDIR /home/trading
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --retries=5 \
    CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health', timeout=4)"

# ---- one target per service ----------------------------------------------------------
# shared.server:HttpProtocol cuts slow request heads and bodies (HTTP_*_TIMEOUT_S).
FROM runtime AS market
USER trading
CMD ["uvicorn", "--factory", "services.market.app:create_app", "--host", "0.0.0.0", "--port", "8000", \
     "--http", "shared.server:HttpProtocol", "--timeout-keep-alive", "5"]

FROM runtime AS backtest
USER trading
CMD ["uvicorn", "--factory", "services.backtest.app:create_app", "--host", "0.0.0.0", "--port", "8000", \
     "--http", "shared.server:HttpProtocol", "--timeout-keep-alive", "5"]

FROM runtime AS portfolio
USER trading
CMD ["uvicorn", "--factory", "services.portfolio.app:create_app", "--host", "0.0.0.0", "--port", "8000", \
     "--http", "shared.server:HttpProtocol", "--timeout-keep-alive", "5"]

FROM runtime AS predictor
# TensorFlow and XGBoost only here (the `ml` extra): the other images never carry them.
RUN pip install -c /tmp/constraints.txt "$(ls /wheels/trading_platform-*.whl)[ml]"
USER trading
CMD ["uvicorn", "--factory", "services.predictor.app:create_app", "--host", "0.0.0.0", "--port", "8000", \
     "--http", "shared.server:HttpProtocol", "--timeout-keep-alive", "5"]

FROM runtime AS gateway
USER trading
EXPOSE 8765
HEALTHCHECK --interval=10s --timeout=5s --retries=5 \
    CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8765/health', timeout=4)"
CMD ["trading", "mcp", "--http", "--host", "0.0.0.0", "--port", "8765", "--remote"]
