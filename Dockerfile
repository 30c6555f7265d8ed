# SplitLab in a container: the dashboard on port 8501.
# CPU build of torch (pinned); mount a data folder at /data and a volume for the database.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SPLITLAB_DATA=/data SPLITLAB_DB=sqlite:////state/splitlab.db \
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824
WORKDIR /app
COPY requirements.txt .
# Set TORCH_INDEX to PyTorch's CPU wheel index for a small image; left empty, pip takes the
# default build of torch 2.13.0 (with CUDA libraries, several GB). torch goes in first so that
# torchvision's pin finds it satisfied.
ARG TORCH_INDEX=""
RUN pip install --no-cache-dir torch==2.13.0 ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} \
 && pip install --no-cache-dir -r requirements.txt
COPY . .
VOLUME ["/data", "/state"]
EXPOSE 8501
# `python app.py` starts the worker with the server (as `make run` does), then serves the dashboard
CMD ["python", "app.py", "--server.port=8501", "--server.address=0.0.0.0", "--server.headless=true"]
