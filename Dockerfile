# The gateway's image for people with Docker:
#   docker build -t <your registry>/brigade-crgw:0.1.0 . && docker push ...
# `make image` builds the same layout without Docker and without pulling a
# base image (devtools/image.py); tests/test_image.py checks that the two
# agree: the venv at /opt/brigade-crgw, the ini at /etc/brigade-crgw, user
# 10001 owning /var/lib/brigade-crgw (the spool), the same entrypoint and
# environment.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY setup.py README.rst /src/
COPY brigade_crgw /src/brigade_crgw
COPY twisted /src/twisted
# The kubernetes client's unused asyncio copy (about 70 MB) is removed.
# Twisted's plugin cache is written now, while the filesystem is writable,
# and the plugin files are made older than it: layers keep whole-second
# mtimes and Twisted takes an equal mtime as stale.
RUN python3 -m venv /opt/brigade-crgw \
 && /opt/brigade-crgw/bin/pip install --no-cache-dir --disable-pip-version-check /src \
 && /opt/brigade-crgw/bin/pip uninstall --yes pip setuptools \
 && rm -rf /src /opt/brigade-crgw/lib/python3*/site-packages/kubernetes/aio \
 && /opt/brigade-crgw/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
 && plugins=$(echo /opt/brigade-crgw/lib/python3*/site-packages/twisted/plugins) \
 && now=$(date +%s) \
 && touch -d "@$now" "$plugins/dropin.cache" \
 && touch -d "@$((now - 60))" "$plugins"/*.py \
 && echo "brigade-crgw:x:10001:10001:brigade-crgw:/nonexistent:/usr/sbin/nologin" >> /etc/passwd \
 && echo "brigade-crgw:x:10001:" >> /etc/group \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/brigade-crgw
COPY etc/brigade-crgw.ini /etc/brigade-crgw/brigade-crgw.ini
ENV PATH=/opt/brigade-crgw/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /
EXPOSE 7744/tcp
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/brigade-crgw/bin/twistd", "--nodaemon", "--pidfile=", "--logfile=-", "brigade-crgw"]
CMD ["--config", "/etc/brigade-crgw/brigade-crgw.ini"]
