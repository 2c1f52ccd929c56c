"""The one compiled part of Track, which pyproject.toml cannot name but as an experiment: the
lines in the plain shape read in one pass each (transforms/_plain.c: C11 and the Python
headers, nothing else). Everything else about the build is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "track.transforms._plain",
            sources=["transforms/_plain.c"],
            extra_compile_args=["-O2", "-std=c11"],
        )
    ]
)
