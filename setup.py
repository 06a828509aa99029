"""Packaging for medtfx: Beam workers (--setup_file) and the Kubeflow image install it."""

from setuptools import find_packages, setup

setup(
    name="medtfx",
    version="0.1.0",
    description="A production TFX pipeline for medical image classification.",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipeline", "pipeline.*", "components", "components.*",
                                    "modules", "modules.*"]),
    package_data={"pipeline": ["configs/*.yaml"]},
    install_requires=[
        "tfx[kfp]==1.21.0",
        "tensorflow==2.21.0",
        "tf-keras==2.21.0",
        "tensorflow-hub==0.16.1",
        "setuptools<81",  # tensorflow-hub 0.16.1 imports pkg_resources, gone in setuptools 81
        "scipy",  # rank statistics for the ensemble's out-of-fold AUC
        "tensorboard",
        "dill",
        "pillow",
        # DICOM import: pydicom reads the files; pylibjpeg and its plugins decode the
        # compressed transfer syntaxes (JPEG, JPEG-LS, JPEG 2000; pydicom decodes RLE itself);
        # GDCM decodes the 12-bit JPEG Extended streams libjpeg refuses (pipeline/data/dicom.py).
        "pydicom",
        "pylibjpeg",
        "pylibjpeg-libjpeg",
        "pylibjpeg-openjpeg",
        "python-gdcm",
        "pyyaml",
    ],
    # dask: Beam's DaskRunner (beam.runner=dask) and the dask.distributed cluster it submits to.
    extras_require={"test": ["pytest", "pytest-timeout", "pytest-xdist", "selenium"],
                    "dask": ["apache-beam[dask]"]},
    entry_points={"console_scripts": ["medtfx=pipeline.cli.main:entry"]},
)
