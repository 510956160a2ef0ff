from setuptools import setup

# make docs: the Sphinx site in docs/; myst-parser reads the one page a tool
# writes in Markdown (docs/benchmark.md, by make bench).  The tests build the
# site too (tests/test_docs.py), so the test extra has them.
DOCS = ["sphinx>=7.2", "myst-parser>=2.0"]

setup(
    name="brigade-crgw",
    version="0.1.0",
    description="Brigade container registry gateway: registry webhooks become Brigade builds",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=[
        "brigade_crgw",
        "brigade_crgw.cli",
        "brigade_crgw.delivery",
        "brigade_crgw.http",
        "brigade_crgw.kubernetes",
        "brigade_crgw.lookups",
        "brigade_crgw.registries",
        "twisted.plugins",
    ],
    package_data={
        "twisted": ["plugins/brigade_crgw_plugin.py"],
        # The sample push of each registry, which brigade-crgw send posts.
        "brigade_crgw.registries": ["samples/*.json"],
    },
    # The operator's command, beside the twistd plugin of the same name.
    entry_points={"console_scripts": ["brigade-crgw = brigade_crgw.cli:main"]},
    install_requires=[
        "twisted[tls]>=24.7",  # [tls]: pyOpenSSL and service_identity, for listen = ssl:…
        "klein>=24.8",
        "treq>=24.9",
        "attrs>=23.1",
        "kubernetes>=30.1",
        "prometheus_client>=0.20",
        # crGatewayFilter's CEL (docs/filters.rst says why this one); within
        # one minor version: its compile errors' wording is read.
        "common-expression-language>=0.10,<0.11",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "hypothesis>=6.100",
            "ruff==0.17.6",  # linters pinned: a new rule must not fail CI by itself
            "mypy==2.4.1",
            "mypy-zope==1.0.17",
            "docutils>=0.20",
            # The registry fixtures: htpasswd hashes, and the token server's key and JWTs.
            "bcrypt>=4",
            "cryptography>=42",
            *DOCS,
        ],
        # make bench: the plot and the profiler (wrk itself comes from Debian).
        "bench": ["matplotlib>=3.7", "py-spy>=0.3.14"],
        "docs": DOCS,
    },
)
