# CPU image of the service on the embedded default model. For a GPU, start from an image with
# CUDA 12 and cuDNN 9 and run with --device cuda.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streaming streaming
COPY clients clients
RUN pip install --no-cache-dir . && useradd --create-home streaming
USER streaming
EXPOSE 8000
ENV STREAMING_HOST=0.0.0.0
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthcheck')"
CMD ["python", "-m", "streaming", "serve"]
