# One image for every service; the command picks which one runs.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DATA_DIR=/data
COPY pyproject.toml constraints.txt README.md ./
COPY shared ./shared
COPY services ./services
COPY gateway_mcp ./gateway_mcp
COPY openapi ./openapi
# editable, so the app finds /app/openapi (the gateway's specs) next to its code
RUN pip install --no-cache-dir -c constraints.txt -e . && mkdir -p /data
EXPOSE 8000
CMD ["uvicorn", "--factory", "services.market.app:create_app", "--host", "0.0.0.0", "--port", "8000"]
