# The gateway as a container, for etc/kubernetes/deployment.yaml.
#   docker build -t <your registry>/brigade-crgw:0.1.0 . && docker push ...
FROM python:3.11-slim
WORKDIR /src
COPY setup.py README.rst ./
COPY brigade_crgw brigade_crgw
COPY twisted twisted
RUN pip install --no-cache-dir . \
 && rm -rf /src \
 && twistd --help > /dev/null  # writes Twisted's plugin cache while the filesystem is writable
WORKDIR /
USER 10001:10001
EXPOSE 7744
ENTRYPOINT ["twistd", "--nodaemon", "--pidfile=", "--logfile=-", "brigade-crgw"]
CMD ["--config", "/etc/brigade-crgw/brigade-crgw.ini"]
